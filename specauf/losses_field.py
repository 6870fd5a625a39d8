"""The field's losses as SpecForge 0.2.0 defines them, on specauf's block-loss interface (docs/method.md §4).

- `DPACESpecForge`: SpecForge's DFlash `loss_type` "dpace" and its two ablations
  ("dpace-cumulative-confidence-only", "dpace-continuation-value-only"), with `dpace_alpha` as `alpha`.
- `LKAlpha`, `LKLambda`: SpecForge's `lk_loss_type` "alpha" and "lambda" (its EAGLE-3 objective), with the
  target distribution reduced to what a block loss here receives: the label (see `LKLoss`).

Written from the definitions, not from SpecForge's code; `tests/test_interop_losses.py` compares them
numerically with SpecForge's own functions. Like every loss here they read detached weights from
`Predictions` and put the gradient through `Predictions.ce` only.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from specauf.errors import ConfigError
from specauf.losses import BlockLoss, Predictions, batch_total, support_metrics

# What D-PACE's two knobs are: the weights from the reach and `valid`, and the denominator of Σ w·ce.
Weighting = Callable[[Tensor, Tensor], Tensor]
Normalisation = Callable[[Predictions, Tensor], Tensor]


def suffix_sum(x: Tensor) -> Tensor:
    """out[n, k] = Σ_{j≥k} x[n, j]."""
    return torch.flip(torch.cumsum(torch.flip(x, [1]), dim=1), [1])


def _tiny(x: Tensor) -> float:
    return torch.finfo(x.dtype).tiny


# -- how the weighted sum is normalised -------------------------------------------------------------------


class PerWeight:
    """Σ w: the weighted mean of every loss in `specauf.losses`."""

    def __call__(self, pred: Predictions, weights: Tensor) -> Tensor:
        return weights.sum()

    def __repr__(self) -> str:
        return "PerWeight()"


class PerSequence:
    """The number of sequences the blocks come from. SpecForge's D-PACE returns Σ w·ce over a micro-batch
    with the batch size as its denominator, and its trainer divides the gradients of an optimizer step by
    the sum of those over accumulation steps and processes: the loss is the weighted CE summed per sequence.
    """

    def __call__(self, pred: Predictions, weights: Tensor) -> Tensor:
        if pred.sequences is None:
            raise ValueError(
                "PerSequence needs Predictions.sequences (how many sequences the blocks come from)"
            )
        return weights.new_tensor(float(pred.sequences))

    def __repr__(self) -> str:
        return "PerSequence()"


# -- D-PACE's weightings, from the reach R_j = Π_{i≤j} s_i (an invalid position has s_i = 1) ----------------


class ExpectedAcceptance:
    """SpecForge "dpace": w_k = Σ_{j≥k} valid_j · R_j, the expected number of accepted tokens from k on."""

    def __call__(self, reach: Tensor, valid: Tensor) -> Tensor:
        return suffix_sum(reach * valid)

    def __repr__(self) -> str:
        return "ExpectedAcceptance()"


class CumulativeConfidence:
    """SpecForge "dpace-cumulative-confidence-only": w_k = R_k, the probability of reaching k."""

    def __call__(self, reach: Tensor, valid: Tensor) -> Tensor:
        return reach

    def __repr__(self) -> str:
        return "CumulativeConfidence()"


class ContinuationValue:
    """SpecForge "dpace-continuation-value-only": w_k = Σ_{j≥k} valid_j · R_j / R_k, the value past k."""

    def __call__(self, reach: Tensor, valid: Tensor) -> Tensor:
        return suffix_sum(reach * valid) / reach.clamp_min(_tiny(reach))

    def __repr__(self) -> str:
        return "ContinuationValue()"


class DPACESpecForge(BlockLoss):
    """D-PACE as SpecForge defines it (`loss=dpace_specforge`; the variants `dpace_specforge_confidence`,
    `dpace_specforge_continuation`):

        s_i = (1−α)·sg(q_i(y_i)) + α  where valid_i, else 1;   R_j = Π_{i≤j} s_i
        w_k = valid_k · weighting(R, valid)_k                  (default: Σ_{j≥k} valid_j · R_j)
        L   = Σ_{n,k} w_{n,k} · ce_{n,k} / S                   (S: sequences in the batch; default)

    An invalid position is neutral: it neither ends the chain nor adds to the sum. specauf's own `DPACE`
    (`loss=dpace`, what earlier results here used, kept unchanged) instead ends the chain at an invalid
    position (s_i = 0) and divides by Σ w. SpecForge's anchor slot has no label, hence s = 1: leaving it out,
    as the columns here do (j = 0 is the first drafted token), changes nothing. SpecForge defines D-PACE for
    DFlash only; on Domino each branch gets its own weights here, as for every loss. SpecForge ignores its
    decay γ under D-PACE; `gamma` (default None) multiplies the weights by exp(-j/γ) as for every loss here.

    `normalisation=PerWeight()` divides by Σ w instead. Under data parallelism the denominator is the mean
    over processes (`specauf.losses.batch_total`), so the processes average to the whole batch's loss; with
    gradient accumulation that equals SpecForge's per-step normalisation when the micro-batches have the
    same number of sequences.
    """

    support_kind = "dpace"

    def __init__(
        self,
        alpha: float = 0.5,
        weighting: Weighting | None = None,
        normalisation: Normalisation | None = None,
        gamma: float | None = None,
        **display: Any,
    ) -> None:
        super().__init__(gamma, **display)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"D-PACE α must be in [0, 1], got {alpha}. Fix: loss.alpha=0.5")
        self.alpha = alpha
        self.weighting = weighting if weighting is not None else ExpectedAcceptance()
        self.normalisation = normalisation if normalisation is not None else PerSequence()

    def support(self, pred: Predictions) -> Tensor:
        valid = pred.valid.float()
        smooth = (1 - self.alpha) * pred.label_prob.float() + self.alpha
        reach = torch.cumprod(torch.where(pred.valid, smooth, torch.ones_like(smooth)), dim=1)
        return self.weighting(reach, valid)

    def reduce(self, pred: Predictions, weights: Tensor) -> Tensor:
        total = batch_total(self.normalisation(pred, weights))
        return (weights * pred.ce.float()).sum() / total.clamp_min(_tiny(weights))


# -- LK ---------------------------------------------------------------------------------------------------


@dataclass
class Acceptance:
    """A batch's acceptance statistics under a position mask m (SpecForge's `compute_acceptance_rate`).

    rate:     Σ m·a / Σ m with a = q(y) (carries the gradient);
    log_rate: Σ m·log a / Σ m, a position whose a underflows to 0 counting 0 (carries the gradient);
    rate_sg:  the whole batch's rate, detached (the λ weight's input);
    cross_entropy: Σ m·ce / P, P = every drafted position of every block with a valid label (valid or not).
    """

    rate: Tensor
    log_rate: Tensor
    rate_sg: Tensor
    cross_entropy: Tensor


def acceptance(pred: Predictions, mask: Tensor, eps: float = 1e-8) -> Acceptance:
    """The statistics LK is built from, for target distribution δ_y (the label): a = Σ_v min(δ_y(v), q(v))."""
    ce = pred.ce.float()
    a = torch.exp(-ce)
    count = batch_total(mask.sum()).clamp_min(eps)
    accepted = (a * mask).sum()
    # log a = −ce exactly; SpecForge drops positions where a is 0 (log would be −inf), so does this.
    log_a = torch.where(a > 0, -ce, torch.zeros_like(ce))
    # SpecForge's cross-entropy term is a mean over every position of its [batch, length] tensor, masked
    # ones adding 0. Here the positions are those of real blocks: specauf's empty padding blocks (for the
    # CUDA kernel's tile size, or a sequence with fewer anchors) are no positions of the data.
    blocks = pred.valid.any(dim=1).sum().to(ce.dtype)
    positions = batch_total(blocks * ce.shape[1]).clamp_min(1.0)
    return Acceptance(
        rate=accepted / count,
        log_rate=(log_a * mask).sum() / count,
        rate_sg=batch_total(accepted.detach()) / count,
        cross_entropy=(ce * mask).sum() / positions,
    )


class LKLoss(BlockLoss):
    """LK (SpecForge's `compute_lk_loss` over `compute_acceptance_rate`), on the blocks' positions pooled
    as one step: SpecForge applies it per EAGLE-3 test-time-training step to logits [batch, length, V];
    here the step is [N blocks, D drafted positions], masked by `valid`.

    What it can use. SpecForge's acceptance rate is a = Σ_v min(p(v), q(v)), p the *target's* distribution,
    and its "KL" term is −Σ_v p(v) log q(v). A block loss here receives per position only the label's
    cross-entropy (so q(y) = exp(−ce)), the argmax hit and the rank — the target's distribution over the
    block positions is never computed (the drafter gets the target's hidden features, the head only the
    label), and the label is the data's token, not a sample of the target. So p is taken to be δ_y, the
    point mass on the label, for which a = q(y) and the KL term is ce. This is the drafter's probability
    of the data token, not the acceptance rate against the target model: it is the acceptance probability
    of a draft sampled from q under greedy verification only where the label is the target's argmax. In particular LK-α becomes −mean log q(y) =
    full CE. Anything built on the target's full distribution (soft targets, sampling acceptance) is not
    available through this interface.

    Under data parallelism every denominator (and the batch's rate inside the λ weight) is the mean over
    processes, so the processes' losses average to the whole batch's; SpecForge computes them per process.
    """

    support_kind = "lk"

    def __init__(self, **display: Any) -> None:
        super().__init__(None, **display)

    def objective(self, stats: Acceptance) -> Tensor:
        raise NotImplementedError

    def reduce(self, pred: Predictions, weights: Tensor) -> Tensor:
        # The weights are the position mask (valid, or another branch's under a placement).
        return self.objective(acceptance(pred, weights))

    def metrics(self, pred: Predictions, weights: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        out = support_metrics(pred, weights)
        accepted = (pred.label_prob.float() * weights).sum()
        out["acceptance_rate"] = (accepted, weights.sum())
        return out


class LKAlpha(LKLoss):
    """SpecForge `lk_loss_type="alpha"`: L = −mean_m log a. With a = q(y) this is full CE (see `LKLoss`)."""

    def objective(self, stats: Acceptance) -> Tensor:
        return -stats.log_rate


class LKLambda(LKLoss):
    """SpecForge `lk_loss_type="lambda"` (`loss=lk`):

        λ = kl_scale · exp(−kl_decay · sg(ā)),   L = λ · CE_all + (1 − λ) · (1 − ā)

    ā = Σ_valid q(y) / Σ valid; CE_all = Σ_valid ce / (positions of real blocks), see `acceptance`. λ
    falls from kl_scale at ā = 0 to kl_scale·e^(−kl_decay) at ā = 1: weight moves from the CE term to the
    acceptance term as the drafter improves.
    """

    def __init__(self, kl_scale: float = 1.0, kl_decay: float = 1.0, **display: Any) -> None:
        super().__init__(**display)
        if not kl_scale >= 0 or not kl_decay >= 0:
            raise ConfigError(
                f"LK-λ needs kl_scale >= 0 and kl_decay >= 0, got {kl_scale}, {kl_decay}. "
                "Fix: loss.kl_scale=1 loss.kl_decay=1"
            )
        self.kl_scale, self.kl_decay = kl_scale, kl_decay

    def objective(self, stats: Acceptance) -> Tensor:
        lam = self.kl_scale * torch.exp(-self.kl_decay * stats.rate_sg)
        return lam * stats.cross_entropy + (1 - lam) * (1 - stats.rate)
