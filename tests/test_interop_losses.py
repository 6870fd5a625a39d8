"""The field's losses (specauf.losses_field, docs/method.md §4) equal SpecForge 0.2.0's on the same inputs.

D-PACE: SpecForge's `OnlineDFlashModel._dflash_objective_chunk_terms` (the numerator of its loss, with
`_dpace_weight` inside) for each of its three D-PACE `loss_type`s, against the shipped `conf/loss` YAMLs.
LK: SpecForge's `compute_acceptance_rate` and `compute_lk_loss` with a one-hot target distribution on the
label, the only target a specauf loss receives. Runs in the interop environment (`make test-interop`).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from omegaconf import OmegaConf

from specauf.losses import Predictions
from specauf.losses_field import LKAlpha, LKLambda
from tests.conftest import CONF

pytestmark = pytest.mark.interop

dflash_family = pytest.importorskip(
    "specforge.algorithms.common.dflash_family_model", reason="SpecForge is in the interop environment"
)
lk_loss = pytest.importorskip("specforge.core.lk_loss", reason="SpecForge is in the interop environment")

B, N, H, V = 6, 4, 16, 40  # block size (slot 0 the anchor), blocks per sequence, hidden size, vocabulary


def specforge_dflash(loss_type: str, alpha: float) -> torch.nn.Module:
    """SpecForge's DFlash training wrapper with only what its objective reads: the LM head and the knobs."""
    model = dflash_family.OnlineDFlashModel.__new__(dflash_family.OnlineDFlashModel)
    torch.nn.Module.__init__(model)
    model.lm_head = torch.nn.Linear(H, V, bias=False)
    model.block_size, model.loss_type, model.dpace_alpha, model.loss_decay_gamma = B, loss_type, alpha, None
    return model


def block_batch(seed: int, sequences: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SpecForge's layout: hidden [b, N, B, H], target ids and weight mask [b, N, B]; the anchor slot, a
    dropped block, and unsupervised positions inside blocks carry no weight."""
    g = torch.Generator().manual_seed(seed)
    hidden = torch.randn(sequences, N, B, H, generator=g)
    target_ids = torch.randint(0, V, (sequences, N, B), generator=g)
    mask = (torch.rand(sequences, N, B, generator=g) < 0.7).float()
    mask[..., 0] = 0.0  # the anchor
    mask[..., 1] = 1.0  # an anchor's first target is supervised
    mask[0, -1] = 0.0  # a block SpecForge did not keep
    return hidden, target_ids, mask


def specauf_predictions(logits: torch.Tensor, target_ids: torch.Tensor, mask: torch.Tensor) -> Predictions:
    """The same blocks as specauf's losses see them: drafted slots 1..B−1, rows = sequence × block."""
    sequences = logits.shape[0]
    logits, target_ids, valid = logits[:, :, 1:], target_ids[:, :, 1:], mask[:, :, 1:] > 0
    ce = F.cross_entropy(logits.flatten(0, 2), target_ids.flatten(), reduction="none").view(target_ids.shape)
    rows = (sequences * N, B - 1)
    return Predictions(
        ce=torch.where(valid, ce, 0.0).reshape(rows),
        valid=valid.reshape(rows),
        hit=(logits.argmax(-1) == target_ids).reshape(rows),
        sequences=sequences,
    )


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("loss_name", "loss_type"),
    [
        ("dpace_specforge", "dpace"),
        ("dpace_specforge_confidence", "dpace-cumulative-confidence-only"),
        ("dpace_specforge_continuation", "dpace-continuation-value-only"),
    ],
)
def test_dpace_equals_specforge(loss_name, loss_type, seed):
    ours = instantiate(OmegaConf.load(CONF / "loss" / f"{loss_name}.yaml"))
    theirs = specforge_dflash(loss_type, ours.alpha)
    hidden, target_ids, mask = block_batch(seed, sequences=3)
    hidden.requires_grad_(True)

    loss_num, *_ = theirs._dflash_objective_chunk_terms(hidden, target_ids, mask)
    # OnlineDFlashModel.forward divides a D-PACE numerator by the batch size (its sequences).
    their_loss = loss_num / hidden.shape[0]
    (their_grad,) = torch.autograd.grad(their_loss, hidden)

    pred = specauf_predictions(theirs.lm_head(hidden), target_ids, mask)
    our_loss, _ = ours(pred)
    (our_grad,) = torch.autograd.grad(our_loss, hidden)
    torch.testing.assert_close(our_loss, their_loss)
    torch.testing.assert_close(our_grad, their_grad)

    with torch.no_grad():
        prob = torch.exp(
            -F.cross_entropy(theirs.lm_head(hidden).flatten(0, 2), target_ids.flatten(), reduction="none")
        )
        their_w = theirs._dpace_weight(prob.view(mask.shape), mask, mask > 0, loss_type) * mask
    torch.testing.assert_close(ours.weights(pred), their_w[:, :, 1:].reshape(pred.ce.shape))


def lk_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draft logits [N, D, V] with grad, labels and a valid mask with gaps; every block has a valid label."""
    g = torch.Generator().manual_seed(seed)
    logits = (torch.randn(8, B - 1, V, generator=g) * 2).requires_grad_(True)
    labels = torch.randint(0, V, (8, B - 1), generator=g)
    valid = torch.rand(8, B - 1, generator=g) < 0.7
    valid[:, 0] = True
    return logits, labels, valid


def specforge_lk(logits, labels, valid, lk_loss_type: str, kl_scale: float, kl_decay: float) -> torch.Tensor:
    target = F.one_hot(labels, V).float()  # the target distribution: the label
    mask = valid[..., None].float()
    rate, log_rate = lk_loss.compute_acceptance_rate(logits=logits, target_probs=target, position_mask=mask)
    # SpecForge's KL term (LogSoftmaxLoss, Triton only; its reference `_compute_loss` in core/loss.py):
    # −Σ_v mask·p·log softmax(logits), averaged over every position of the step.
    kl = -(mask * target * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
    return lk_loss.compute_lk_loss(
        kl_loss=kl,
        acceptance_rate=rate,
        log_acceptance_rate=log_rate,
        lk_loss_type=lk_loss_type,
        kl_scale=kl_scale,
        kl_decay=kl_decay,
    )


def our_predictions(logits, labels, valid) -> Predictions:
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    return Predictions(ce=torch.where(valid, ce, 0.0), valid=valid, hit=logits.argmax(-1) == labels)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(
    ("ours", "lk_loss_type", "kl_scale", "kl_decay"),
    [
        (LKAlpha(), "alpha", 1.0, 1.0),
        (LKLambda(), "lambda", 1.0, 1.0),
        (LKLambda(0.7, 3.0), "lambda", 0.7, 3.0),
    ],
    ids=["alpha", "lambda", "lambda_0.7_3"],
)
def test_lk_equals_specforge_with_the_label_as_target(ours, lk_loss_type, kl_scale, kl_decay, seed):
    logits, labels, valid = lk_inputs(seed)
    theirs = specforge_lk(logits, labels, valid, lk_loss_type, kl_scale, kl_decay)
    (their_grad,) = torch.autograd.grad(theirs, logits)
    mine, _ = ours(our_predictions(logits, labels, valid))
    (our_grad,) = torch.autograd.grad(mine, logits)
    torch.testing.assert_close(mine, theirs)
    torch.testing.assert_close(our_grad, their_grad)


def test_lk_counts_no_padding_block_where_specforge_counts_every_row():
    """The one deliberate difference (docs/method.md §4): an empty padding block is no position here."""
    logits, labels, valid = lk_inputs(0)
    padded = torch.cat([logits, torch.zeros_like(logits[:1])]), torch.cat([labels, labels[:1]])
    padded_valid = torch.cat([valid, torch.zeros_like(valid[:1])])
    mine, _ = LKLambda()(our_predictions(*padded, padded_valid))
    torch.testing.assert_close(mine, specforge_lk(logits, labels, valid, "lambda", 1.0, 1.0))
