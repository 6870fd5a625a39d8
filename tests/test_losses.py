"""Loss weights against naive per-position loops on hand-made cases (docs/method.md §4), the Domino
curriculum, and every shipped loss config training (or being refused) on both backbones."""

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch.testing import assert_close

from specauf.config import register_resolvers
from specauf.data.blocks import collate_blocks, sample_anchors
from specauf.errors import ConfigError
from specauf.losses import (
    AUF,
    DPACE,
    BaseAnchoredCurriculum,
    CrossEntropy,
    Predictions,
    TopKAlive,
    leading_hits,
    paper_gamma,
)
from specauf.module import DrafterModule
from specauf.target import tiny_random
from tests.conftest import CONF

register_resolvers()
LOSSES = sorted(p.stem for p in (CONF / "loss").glob("*.yaml"))
BACKBONES = sorted(p.stem for p in (CONF / "backbone").glob("*.yaml"))


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
    # docs/method.md §4: hits [1, 1, 0, 1, 1] → weights [1, 1, 1, 0, 0]
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


# --- the Domino curriculum (a training schedule, docs/method.md §5) -------------------------------------------


def two_branch_preds(base_ce: float, final_ce: float) -> dict[str, Predictions]:
    ones = torch.ones(2, 3, dtype=torch.bool)
    return {
        "base": Predictions(ce=torch.full((2, 3), base_ce), valid=ones, hit=ones),
        "final": Predictions(ce=torch.full((2, 3), final_ce), valid=ones, hit=ones),
    }


def test_curriculum_moves_from_base_to_final():
    curriculum = BaseAnchoredCurriculum(fraction=0.5)
    assert [curriculum.weight(p) for p in (0.0, 0.25, 0.5, 1.0)] == [1.0, 0.5, 0.0, 0.0]
    preds = two_branch_preds(1.0, 3.0)
    for progress, expected in ((0.0, 1.0), (0.25, 2.0), (0.5, 3.0), (0.9, 3.0)):
        loss, metrics = curriculum(CrossEntropy(), preds, progress)
        assert loss.item() == pytest.approx(expected)
        assert metrics["lambda"][0].item() == pytest.approx(curriculum.weight(progress))
        assert "base/token_acc" in metrics and "loss_base" in metrics


def test_curriculum_on_one_branch_trains_the_final_loss():
    preds = {"final": two_branch_preds(1.0, 3.0)["final"]}
    loss, metrics = BaseAnchoredCurriculum()(AUF(), preds, 0.0)  # λ = 1, but there is no base branch
    assert loss.item() == pytest.approx(3.0) and "lambda" not in metrics


@pytest.mark.parametrize("fraction", [0.0, -0.5, 1.5])
def test_curriculum_fraction_out_of_range_is_a_config_error(fraction):
    with pytest.raises(ConfigError, match=r"curriculum\.fraction"):
        BaseAnchoredCurriculum(fraction=fraction)


# --- every shipped loss on every backbone -------------------------------------------------------------------


@pytest.fixture(scope="module")
def target():
    return tiny_random(num_layers=2, hidden_size=32, intermediate_size=64, num_feature_layers=1, seed=0)


def composed(loss: str, backbone: str):
    overrides = [f"loss={loss}", f"backbone={backbone}", "target=tiny_random", "backbone.num_layers=1"]
    overrides.append("backbone.block_size=8")
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=overrides)


def tiny_batch(vocab: int, block_size: int, label_offset: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    items = []
    for length in (20, 28):
        ids = torch.randint(0, vocab, (length,), generator=g)
        mask = torch.rand(length, generator=g) < 0.8
        items.append({"input_ids": ids, "loss_mask": mask, "anchors": sample_anchors(mask, 3, g)})
    return collate_blocks(items, block_size, label_offset, pad_id=0)


@pytest.mark.parametrize("backbone", BACKBONES)
@pytest.mark.parametrize("loss_name", LOSSES)
def test_every_loss_config_trains_or_is_refused(loss_name, backbone, target):
    cfg = composed(loss_name, backbone)
    loss = instantiate(cfg.loss)
    assert loss.labels()["name"] == cfg.loss.display_name  # reports name it from its own config
    torch.manual_seed(0)
    drafter = instantiate(cfg.backbone, target=target)
    make = lambda: DrafterModule(drafter, target, loss, optimizer=torch.optim.SGD)  # noqa: E731
    if not set(loss.required_branches) <= set(drafter.branches):
        with pytest.raises(ConfigError, match="backbone=domino"):
            make()
        return
    module = make()
    batch = tiny_batch(target.vocab_size, drafter.block_size, drafter.label_offset)
    # Mid-run (λ = 0.5 for Domino): both branches train.
    value, metrics = module.curriculum(loss, module.predictions(batch), 0.5)
    assert torch.isfinite(value) and value.item() > 0
    value.backward()
    for name, p in drafter.named_parameters():
        assert p.grad is not None, name
        # Domino's correction head: w2 starts at zero, so nothing flows to the GRU and w1 behind it on the
        # first step; and an untrained drafter's AUF support often ends at the first slot, which is base-only.
        if not name.startswith(("gru.", "w1.", "w2.")):
            assert p.grad.abs().sum() > 0, f"{name} gets no gradient under {loss_name}"
    assert "tf_tau" in metrics and "token_acc" in metrics
    if "base" in drafter.branches:
        assert "base/token_acc" in metrics and metrics["lambda"][0].item() == 0.5
