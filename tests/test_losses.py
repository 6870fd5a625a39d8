"""Loss weights against naive per-position loops on hand-made cases (DESIGN.md §4)."""

import math

import pytest
import torch
from torch.testing import assert_close

from specauf.losses import AUF, DPACE, CrossEntropy, Predictions, TopKAlive, leading_hits, paper_gamma


def pred_from(hits, valid=None, ce=None, rank=None):
    hit = torch.tensor(hits, dtype=torch.bool)
    valid = torch.ones_like(hit) if valid is None else torch.tensor(valid, dtype=torch.bool)
    ce = torch.rand(hit.shape) + 0.1 if ce is None else ce
    return Predictions(ce=ce, valid=valid, hit=hit, rank=None if rank is None else torch.tensor(rank))


def naive_auf_weights(hit, valid):
    """The definition, position by position: alive until the first miss, which keeps its weight."""
    out = []
    for row_hit, row_valid in zip(hit.tolist(), valid.tolist(), strict=True):
        alive, row = True, []
        for h, v in zip(row_hit, row_valid, strict=True):
            row.append(float(alive and v))
            alive = alive and h and v
        out.append(row)
    return torch.tensor(out)


def test_auf_design_example():
    # DESIGN §4: hits [1, 1, 0, 1, 1] → weights [1, 1, 1, 0, 0]
    pred = pred_from([[1, 1, 0, 1, 1]])
    assert AUF().weights(pred).tolist() == [[1.0, 1.0, 1.0, 0.0, 0.0]]


def test_auf_first_miss_keeps_weight_and_rest_zero():
    pred = pred_from([[0, 1, 1, 1], [1, 1, 1, 1], [1, 0, 0, 1]])
    assert AUF().weights(pred).tolist() == [[1, 0, 0, 0], [1, 1, 1, 1], [1, 1, 0, 0]]


def test_auf_invalid_position_ends_the_chain():
    pred = pred_from([[1, 1, 1, 1]], valid=[[1, 0, 1, 1]])
    # position 1 is invalid: no weight itself, and the chain stops there
    assert AUF().weights(pred).tolist() == [[1, 0, 0, 0]]


@pytest.mark.parametrize("seed", range(5))
def test_auf_matches_naive_loop_random(seed):
    g = torch.Generator().manual_seed(seed)
    hit = torch.rand(64, 15, generator=g) < 0.7
    valid = torch.rand(64, 15, generator=g) < 0.9
    pred = Predictions(ce=torch.rand(64, 15, generator=g), valid=valid, hit=hit)
    assert_close(AUF().weights(pred), naive_auf_weights(hit, valid))


def test_decay_gamma_7():
    pred = pred_from([[0] * 15])
    w = CrossEntropy(gamma=7.0).weights(pred)
    assert_close(w[0], torch.tensor([math.exp(-j / 7.0) for j in range(15)]))
    assert paper_gamma(16) == 7.0 and paper_gamma(10) == 5.0 and paper_gamma(8) == 4.0
    with pytest.raises(ValueError, match="gamma"):
        paper_gamma(12)


def test_auf_decay_is_product():
    pred = pred_from([[1, 1, 0, 1]])
    w = AUF(gamma=7.0).weights(pred)
    assert_close(w[0], torch.tensor([1.0, math.exp(-1 / 7), math.exp(-2 / 7), 0.0]))


def test_full_ce_weighted_mean_equals_masked_mean():
    ce = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
    pred = pred_from([[1, 1, 1], [0, 0, 0]], valid=[[1, 1, 0], [1, 0, 0]], ce=ce)
    loss, _ = CrossEntropy()(pred)
    assert_close(loss, torch.tensor((1.0 + 2.0 + 4.0) / 3))


def test_no_gradient_through_the_mask():
    ce = torch.rand(4, 6, requires_grad=True)
    hit = torch.tensor([[1, 1, 0, 1, 1, 1]] * 4, dtype=torch.bool)
    pred = Predictions(ce=ce, valid=torch.ones_like(hit), hit=hit)
    loss, _ = AUF()(pred)
    loss.backward()
    # gradient is exactly w / Σw: the support is a constant to autograd
    w = naive_auf_weights(hit, pred.valid)
    assert_close(ce.grad, w / w.sum())
    assert (ce.grad[:, 3:] == 0).all()


def test_weights_are_detached_even_if_hit_requires_grad_path():
    ce = torch.rand(2, 5, requires_grad=True)
    pred = Predictions(
        ce=ce, valid=torch.ones(2, 5, dtype=torch.bool), hit=torch.ones(2, 5, dtype=torch.bool)
    )
    w = DPACE(alpha=0.5).weights(pred)
    assert not w.requires_grad


def test_dpace_matches_naive_formula():
    g = torch.Generator().manual_seed(0)
    ce = torch.rand(3, 6, generator=g) * 3
    pred = Predictions(
        ce=ce, valid=torch.ones(3, 6, dtype=torch.bool), hit=torch.zeros(3, 6, dtype=torch.bool)
    )
    alpha = 0.5
    expected = torch.zeros(3, 6)
    for n in range(3):
        for k in range(6):
            total = 0.0
            for j in range(k, 6):
                prod = 1.0
                for i in range(j + 1):
                    prod *= (1 - alpha) * math.exp(-ce[n, i].item()) + alpha
                total += prod
            expected[n, k] = total
    assert_close(DPACE(alpha=alpha).weights(pred), expected)


def test_topk_alive():
    pred = pred_from([[0, 0, 0, 0]], rank=[[0, 2, 3, 0]])
    assert TopKAlive(k=3).weights(pred).tolist() == [[1, 1, 1, 0]]
    assert TopKAlive(k=1).weights(pred).tolist() == [[1, 1, 0, 0]]
    with pytest.raises(ValueError, match="rank"):
        TopKAlive(k=3).weights(pred_from([[0, 0]]))


def test_support_metrics():
    pred = pred_from([[1, 1, 0, 1], [0, 1, 1, 1]], valid=[[1, 1, 1, 1], [1, 1, 1, 0]])
    _, m = AUF()(pred)
    ratio = {k: (num / den).item() for k, (num, den) in m.items()}
    assert ratio["token_acc"] == pytest.approx(5 / 7)
    assert ratio["active_ratio"] == pytest.approx(4 / 7)  # AUF support: 3 + 1 positions
    assert ratio["support_acc"] == pytest.approx(2 / 4)
    assert ratio["tf_tau"] == pytest.approx(((1 + 2) + (1 + 0)) / 2)
    assert leading_hits(pred.valid, pred.hit).tolist() == [2, 0]
    _, m_full = CrossEntropy()(pred)
    assert (m_full["active_ratio"][0] / m_full["active_ratio"][1]).item() == 1.0


def test_loss_with_no_valid_position_is_zero_not_nan():
    pred = pred_from([[1, 1]], valid=[[0, 0]])
    pred.ce.requires_grad_(True)
    loss, _ = AUF()(pred)
    assert loss.item() == 0.0
    loss.backward()
