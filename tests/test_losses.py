"""Loss weights against naive per-position loops on hand-made cases (docs/method.md §4), the field's
definitions (SpecForge's D-PACE and LK) against loops written from their math, the Domino curriculum, and
every shipped loss config training (or being refused) on both backbones."""

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
    BranchPlacement,
    CrossEntropy,
    Predictions,
    TopKAlive,
    data_parallel_weights,
    leading_hits,
    paper_gamma,
)
from specauf.losses_field import (
    ContinuationValue,
    CumulativeConfidence,
    DPACESpecForge,
    ExpectedAcceptance,
    LKAlpha,
    LKLambda,
    PerSequence,
    PerWeight,
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


# --- the field's definitions: SpecForge's D-PACE and LK (specauf.losses_field) ------------------------------


def random_pred(seed: int, n: int = 7, d: int = 6, sequences: int | None = 3) -> Predictions:
    """Random CE with invalid positions inside blocks (not only a tail) and one empty padding block."""
    g = torch.Generator().manual_seed(seed)
    ce = (torch.rand(n, d, generator=g) * 3).requires_grad_(True)
    valid = torch.rand(n, d, generator=g) < 0.7
    valid[:, 0] = True  # a real block's first label always exists (§3)
    valid[-1] = False  # a padding block
    hit = torch.rand(n, d, generator=g) < 0.5
    return Predictions(ce=ce, valid=valid, hit=hit, sequences=sequences)


def naive_dpace_specforge_reach(ce, valid, alpha):
    """R_j = Π_{i≤j} s_i with s_i = (1−α)·q_i + α at a valid position and 1 (skipped) at an invalid one."""
    out = []
    for ce_row, v_row in zip(ce.tolist(), valid.tolist(), strict=True):
        reach, row = 1.0, []
        for c, v in zip(ce_row, v_row, strict=True):
            if v:
                reach *= (1 - alpha) * math.exp(-c) + alpha
            row.append(reach)
        out.append(row)
    return out


def naive_dpace_specforge(ce, valid, alpha, weight_at):
    out = []
    for reach, v_row in zip(naive_dpace_specforge_reach(ce, valid, alpha), valid.tolist(), strict=True):
        out.append([weight_at(reach, v_row, k) if v_row[k] else 0.0 for k in range(len(reach))])
    return torch.tensor(out)


def naive_expected(reach, v_row, k):
    return sum(reach[j] for j in range(k, len(reach)) if v_row[j])


# (weighting, its weight at position k from the reach R and valid): Σ_{j≥k} valid_j R_j, R_k, their ratio
WEIGHTINGS = [
    (ExpectedAcceptance, naive_expected),
    (CumulativeConfidence, lambda reach, v_row, k: reach[k]),
    (ContinuationValue, lambda reach, v_row, k: naive_expected(reach, v_row, k) / reach[k]),
]
WEIGHTING_IDS = ["expected", "confidence", "continuation"]


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.parametrize(("weighting", "naive"), WEIGHTINGS, ids=WEIGHTING_IDS)
def test_dpace_specforge_weights_match_naive_loop(weighting, naive, alpha, seed):
    pred = random_pred(seed)
    loss = DPACESpecForge(alpha=alpha, weighting=weighting())
    expected = naive_dpace_specforge(pred.ce.detach(), pred.valid, alpha, naive)
    assert_close(loss.weights(pred), expected)
    assert not loss.weights(pred).requires_grad


@pytest.mark.parametrize(("weighting", "naive"), WEIGHTINGS, ids=WEIGHTING_IDS)
@pytest.mark.parametrize(("normalisation", "per_sequence"), [(PerSequence(), True), (PerWeight(), False)])
def test_dpace_specforge_loss_and_gradient_under_both_normalisations(
    weighting, naive, normalisation, per_sequence
):
    pred = random_pred(0, sequences=3)
    loss, _ = DPACESpecForge(alpha=0.5, weighting=weighting(), normalisation=normalisation)(pred)
    w = naive_dpace_specforge(pred.ce.detach(), pred.valid, 0.5, naive)
    total = 3.0 if per_sequence else w.sum().item()
    naive_loss = sum(w[n, k].item() * pred.ce[n, k].item() for n in range(7) for k in range(6)) / total
    assert loss.item() == pytest.approx(naive_loss, rel=1e-5)
    loss.backward()
    assert torch.isfinite(pred.ce.grad).all()
    assert_close(pred.ce.grad, w / total)  # the weights are constants to autograd


def test_dpace_specforge_skips_an_invalid_position_where_ours_ends_the_chain():
    # q = 0.5 and α = 0.5 → s = 0.75 at valid positions; position 1 is invalid.
    ce = torch.full((1, 3), math.log(2.0))
    pred = Predictions(
        ce=ce, valid=torch.tensor([[True, False, True]]), hit=torch.ones(1, 3).bool(), sequences=1
    )
    assert_close(DPACESpecForge(alpha=0.5).weights(pred), torch.tensor([[0.75 + 0.5625, 0.0, 0.5625]]))
    assert_close(DPACE(alpha=0.5).weights(pred), torch.tensor([[0.75, 0.0, 0.0]]))
    with pytest.raises(ValueError, match="sequences"):  # the per-sequence normaliser needs the batch size
        DPACESpecForge()(random_pred(0, sequences=None))
    with pytest.raises(ConfigError, match="alpha"):
        DPACESpecForge(alpha=1.5)


def test_the_two_dpace_agree_on_prefix_valid_blocks_up_to_the_normaliser():
    pred = random_pred(1)
    # Valid positions a prefix of each block (the block runs off the supervised span): no chain to skip.
    valid = torch.cumprod(pred.valid.long(), dim=1).bool()
    pred = Predictions(ce=pred.ce, valid=valid, hit=pred.hit, sequences=3)
    ours, theirs = DPACE(alpha=0.5), DPACESpecForge(alpha=0.5)
    w = ours.weights(pred)
    assert_close(theirs.weights(pred), w)
    assert_close(theirs(pred)[0], ours(pred)[0] * w.sum() / 3)


def naive_lk(ce, valid, objective, kl_scale=1.0, kl_decay=1.0):
    """LK from its definition with target distribution δ_label, one scalar op per position (keeps the graph).

    a = Σ_v min(δ(v), q(v)) = q(label); ā and mean log a over valid positions; the KL term −Σ_v δ(v) log q(v)
    summed over valid positions and divided by every position of the blocks that have a valid one."""
    n, d = ce.shape
    acc = log_acc = ce_sum = 0.0
    count = positions = 0
    for i in range(n):
        positions += d if bool(valid[i].any()) else 0
        for j in range(d):
            if valid[i, j]:
                q = torch.exp(-ce[i, j])
                acc, log_acc, ce_sum, count = acc + q, log_acc + torch.log(q), ce_sum + ce[i, j], count + 1
    if objective == "alpha":
        return -log_acc / count
    lam = kl_scale * math.exp(-kl_decay * float(acc.detach() / count))
    return lam * ce_sum / positions + (1 - lam) * (1 - acc / count)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("loss", "objective", "knobs"),
    [
        (LKAlpha(), "alpha", {}),
        (LKLambda(), "lambda", {}),
        (LKLambda(2.0, 0.5), "lambda", {"kl_scale": 2.0, "kl_decay": 0.5}),
    ],
    ids=["alpha", "lambda", "lambda_2_0.5"],
)
def test_lk_matches_naive_loop_value_and_gradient(loss, objective, knobs, seed):
    pred = random_pred(seed)
    value, metrics = loss(pred)
    (grad,) = torch.autograd.grad(value, pred.ce)
    naive = naive_lk(pred.ce, pred.valid, objective, **knobs)
    (naive_grad,) = torch.autograd.grad(naive, pred.ce)
    assert_close(value, naive)
    assert torch.isfinite(grad).all()
    assert_close(grad, naive_grad)
    assert (grad[~pred.valid] == 0).all()
    num, den = metrics["acceptance_rate"]
    assert (num / den).item() == pytest.approx(torch.exp(-pred.ce[pred.valid]).mean().item(), rel=1e-5)


def test_lk_alpha_on_labels_is_full_ce():
    pred = random_pred(4)
    assert_close(LKAlpha()(pred)[0], CrossEntropy()(pred)[0])


def test_lk_lambda_weighs_the_kl_term_by_the_acceptance_rate():
    # Every position valid with q = 0.5: ā = 0.5, λ = exp(−0.5), CE term = ln 2.
    ce = torch.full((2, 4), math.log(2.0))
    pred = Predictions(ce=ce, valid=torch.ones(2, 4).bool(), hit=torch.ones(2, 4).bool())
    lam = math.exp(-0.5)
    assert LKLambda()(pred)[0].item() == pytest.approx(lam * math.log(2.0) + (1 - lam) * 0.5)
    with pytest.raises(ConfigError, match="kl_scale"):
        LKLambda(kl_scale=-1.0)


@pytest.mark.parametrize(
    "loss",
    [
        DPACESpecForge(),
        DPACESpecForge(weighting=ContinuationValue(), normalisation=PerWeight()),
        LKLambda(),
        LKAlpha(),
    ],
    ids=["dpace_specforge", "dpace_continuation_per_weight", "lk_lambda", "lk_alpha"],
)
def test_field_losses_average_over_processes_to_the_whole_batch(loss):
    """Two simulated processes on unequal halves, as tests/test_data_parallel.py does for the others."""
    pred = random_pred(2, n=9, sequences=4)
    whole, _ = loss(pred)
    (grad_whole,) = torch.autograd.grad(whole, pred.ce, retain_graph=True)
    halves = [(slice(0, 3), 1), (slice(3, 9), 3)]  # (rows, sequences)

    def part(s: slice, sequences: int) -> Predictions:
        return Predictions(ce=pred.ce[s], valid=pred.valid[s], hit=pred.hit[s], sequences=sequences)

    seen: list[list[torch.Tensor]] = []
    for s, b in halves:
        seen.append([])
        with data_parallel_weights(lambda v, out=seen[-1]: out.append(v) or v):
            loss(part(s, b))
    means = torch.stack([torch.stack(v) for v in seen]).mean(dim=0)
    losses = []
    for s, b in halves:
        calls = iter(means)
        with data_parallel_weights(lambda v, calls=calls: next(calls)):
            losses.append(loss(part(s, b))[0])
    averaged = torch.stack(losses).mean()
    (grad_avg,) = torch.autograd.grad(averaged, pred.ce)
    assert_close(averaged, whole)
    assert_close(grad_avg, grad_whole)


def test_a_placement_reduces_with_its_branch_losses_normalisation():
    pred = random_pred(3)
    placed = BranchPlacement(base=DPACESpecForge(), final=LKLambda())
    out = placed.per_branch({"base": pred, "final": pred})
    assert_close(out["base"][0], DPACESpecForge()(pred)[0])
    assert_close(out["final"][0], LKLambda()(pred)[0])


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
