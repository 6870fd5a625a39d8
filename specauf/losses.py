"""Block losses: pure functions of per-position tensors (docs/method.md §4), and Domino's curriculum (§5).

Every loss here is a weighted mean of the per-position cross-entropy, `L = Σ w·ce / Σ w`; the losses differ
only in the weights `w[n, j]`. The field's own definitions (SpecForge's D-PACE and LK), which normalise
differently or are not a weighted CE at all, are in `specauf.losses_field` on the same interface.
Column `j` is the j-th *drafted* token of block `n` (j = 0 is the first token the drafter proposes), so the
same loss serves a same-position drafter (DFlash: slots 1..B-1) and a next-token one (Domino: slots 0..B-1).
The paper's `exp(-(k-1)/γ)` for DFlash slot k and `exp(-k/γ)` for Domino slot k are both `exp(-j/γ)` in
this indexing.

Weights never carry gradient: the support (which positions count) is computed from detached predictions.
This module imports torch (and the error types) only, so a loss can be used and tested without Hydra, Lightning or a model.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from specauf.errors import ConfigError

# γ for the decay weighting at the block sizes the DFlash/Spec-AUF papers report.
PAPER_GAMMA = {16: 7.0, 10: 5.0, 8: 4.0}


def paper_gamma(block_size: int) -> float:
    """The decay γ the papers use for a block size; other sizes must set γ explicitly."""
    if block_size not in PAPER_GAMMA:
        raise ConfigError(
            f"no published decay γ for block size {block_size} (known: {sorted(PAPER_GAMMA)}); "
            "set loss.gamma explicitly, e.g. loss.gamma=7"
        )
    return PAPER_GAMMA[block_size]


@dataclass
class Predictions:
    """Per-position results of the drafter on a batch of blocks, all of shape [N, D].

    ce:    cross-entropy of the label (carries the gradient).
    valid: the label exists (inside the sequence, on an assistant token).
    hit:   the drafter's argmax equals the label (detached).
    rank:  how many vocabulary entries score strictly above the label (0 ⇔ label is a top-1 token);
           only the top-k support needs it.
    sequences: how many sequences the N rows were drafted from (the batch size); only a per-sequence
           normalisation (SpecForge's D-PACE) needs it.
    """

    ce: Tensor
    valid: Tensor
    hit: Tensor
    rank: Tensor | None = None
    sequences: int | None = None

    @property
    def label_prob(self) -> Tensor:
        return torch.exp(-self.ce.detach())


def leading_hits(valid: Tensor, hit: Tensor) -> Tensor:
    """Number of consecutive correct drafted tokens at the start of each block, [N]."""
    ok = (valid & hit).long()
    return torch.cumprod(ok, dim=1).sum(dim=1)


def alive_until_first_miss(ok: Tensor) -> Tensor:
    """alive[n, j] = Π_{i<j} ok[n, i]: position j counts while every earlier one was right.

    The first miss is still alive (it is the token to repair); everything after it is not.
    """
    ok = ok.to(torch.float32)
    shifted = torch.cat([torch.ones_like(ok[:, :1]), ok[:, :-1]], dim=1)
    return torch.cumprod(shifted, dim=1)


def exp_decay(num_positions: int, gamma: float, device: torch.device | None = None) -> Tensor:
    """exp(-j/γ) for j = 0..D-1."""
    j = torch.arange(num_positions, device=device, dtype=torch.float32)
    return torch.exp(-j / gamma)


# How Σ w is turned into the denominator: the identity in one process; under data parallelism, the mean of
# every process's Σ w (see `data_parallel_weights`).
_WEIGHT_TOTAL: ContextVar[Callable[[Tensor], Tensor] | None] = ContextVar("weight_total", default=None)


@contextmanager
def data_parallel_weights(mean_over_processes: Callable[[Tensor], Tensor]) -> Iterator[None]:
    """Within this block, every weighted mean divides by the mean over processes of Σ w.

    Data parallelism averages the processes' gradients; if each process divided by its own Σ w, that average
    would weight positions differently from one process on the whole batch (the processes' Σ w differ, for
    AUF a lot). Dividing by the mean of Σ w makes the average of the processes' losses — and gradients —
    exactly Σ_all w·ce / Σ_all w, the loss of the whole batch.
    """
    token = _WEIGHT_TOTAL.set(mean_over_processes)
    try:
        yield
    finally:
        _WEIGHT_TOTAL.reset(token)


def batch_total(total: Tensor) -> Tensor:
    """A denominator summed over this process's batch, as this process must divide by it: itself in one
    process, the mean over processes under `data_parallel_weights` (then it is detached)."""
    reduce = _WEIGHT_TOTAL.get()
    return total if reduce is None else reduce(total.detach())


def weighted_mean(ce: Tensor, weights: Tensor) -> Tensor:
    """Σ w·ce / Σ w, and 0 (with a graph) when no position carries weight."""
    total = batch_total(weights.sum())
    return (weights * ce).sum() / total.clamp_min(torch.finfo(weights.dtype).tiny)


def support_metrics(pred: Predictions, weights: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
    """Statistics of a loss's support, as (numerator, denominator) pairs so batches aggregate exactly.

    token_acc:     accuracy on every valid position ("common-token accuracy", the full block).
    support_acc:   accuracy on the positions the loss trains on (w > 0).
    active_ratio:  share of valid positions the loss trains on.
    tf_tau:        teacher-forced acceptance length per block, 1 + leading hits (blocks with a first label).
    """
    valid = pred.valid.float()
    hit = (pred.hit & pred.valid).float()
    support = (weights > 0).float() * valid
    blocks = pred.valid[:, 0].float()
    tau = 1.0 + leading_hits(pred.valid, pred.hit).float()
    return {
        "token_acc": (hit.sum(), valid.sum()),
        "support_acc": ((hit * support).sum(), support.sum()),
        "active_ratio": (support.sum(), valid.sum()),
        "tf_tau": ((tau * blocks).sum(), blocks.sum()),
    }


class BlockLoss:
    """Base: `loss(pred) -> (scalar loss, metrics)`; subclasses define `support` and `gamma`.

    w[n, j] = valid · support[n, j] · exp(-j/γ)   (the decay factor only when γ is set)

    `display_name` and `display_order` say how reports name and sort this loss (from its conf/loss YAML);
    they never change the math. `support_kind` names the support for reports ("full", "auf", ...).
    """

    support_kind = "full"
    # Branches a drafter must have for this loss to mean anything (a single-branch drafter has "final").
    required_branches: tuple[str, ...] = ("final",)

    def __init__(
        self, gamma: float | None = None, *, display_name: str | None = None, display_order: int | None = None
    ) -> None:
        if gamma is not None and not gamma > 0:
            raise ConfigError(f"decay γ must be positive, got {gamma}. Fix: loss.gamma=<a positive number>")
        self.gamma = gamma
        self.display_name, self.display_order = display_name, display_order

    def support(self, pred: Predictions) -> Tensor:
        return torch.ones_like(pred.ce, dtype=torch.float32)

    def weights(self, pred: Predictions) -> Tensor:
        w = pred.valid.float() * self.support(pred).detach()
        if self.gamma is not None:
            w = w * exp_decay(w.shape[1], self.gamma, device=w.device)
        return w

    def __call__(self, pred: Predictions) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
        weights = self.weights(pred)
        return self.reduce(pred, weights), self.metrics(pred, weights)

    def reduce(self, pred: Predictions, weights: Tensor) -> Tensor:
        """The scalar loss of `pred` under `weights` (a placement may pass another branch's weights)."""
        return weighted_mean(pred.ce.float(), weights)

    def metrics(self, pred: Predictions, weights: Tensor) -> dict[str, tuple[Tensor, Tensor]]:
        return support_metrics(pred, weights)

    def per_branch(
        self, preds: dict[str, Predictions]
    ) -> dict[str, tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]]:
        """Every branch of a multi-head drafter under this loss, each with its own support (F-AUF for AUF)."""
        return {name: self(pred) for name, pred in preds.items()}

    @property
    def has_decay(self) -> bool:
        return self.gamma is not None

    def form(self) -> str:
        """This loss with its decay left out: equal for two losses that differ only in decay (AUF, AUF + decay)."""
        knobs = ", ".join(f"{k}={v}" for k, v in self._knobs().items() if k != "gamma")
        return f"{type(self).__name__}({knobs})"

    def labels(self) -> dict[str, Any]:
        """What reports need to name, sort and compare runs of this loss (stored in each run's summary.json)."""
        return {
            "name": self.display_name,
            "order": self.display_order,
            "support": self.support_kind,
            "decay": self.has_decay,
            "form": self.form(),
        }

    def _knobs(self) -> dict[str, Any]:
        return {k: v for k, v in vars(self).items() if k not in ("display_name", "display_order")}

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v}" for k, v in self._knobs().items())
        return f"{type(self).__name__}({knobs})"


class CrossEntropy(BlockLoss):
    """Cross-entropy on every valid position (`full_ce`), or with position decay when γ is set (`decay`)."""


class AUF(BlockLoss):
    """Accept-Until-Fail (Spec-AUF): train a position only while the drafter's own greedy predictions at
    every earlier position of the block were right; the first miss keeps its weight. An invalid position
    counts as a miss. With γ set this is `auf_decay`.
    """

    support_kind = "auf"

    def support(self, pred: Predictions) -> Tensor:
        return alive_until_first_miss(pred.hit.detach() & pred.valid)


class TopKAlive(BlockLoss):
    """GRIFFIN-style support: alive while the label stays in the drafter's top-k at every earlier position."""

    support_kind = "topk"

    def __init__(self, k: int = 3, gamma: float | None = None, **display: Any) -> None:
        super().__init__(gamma, **display)
        if k < 1:
            raise ConfigError(f"top-k support needs k >= 1, got {k}. Fix: loss.k=3")
        self.k = k

    def support(self, pred: Predictions) -> Tensor:
        if pred.rank is None:
            raise ValueError("TopKAlive needs Predictions.rank (the label's rank among the logits)")
        return alive_until_first_miss((pred.rank.detach() < self.k) & pred.valid)


class DPACE(BlockLoss):
    """D-PACE, specauf's variant (`loss=dpace`, the one earlier results in this repo used):

        p_i = ((1−α)·sg(q_i(y_i)) + α)·valid_i,   w_k = valid_k · Σ_{j≥k} Π_{i≤j} p_i,   L = Σ w·ce / Σ w

    It differs from the field's definition (`specauf.losses_field.DPACESpecForge`, `loss=dpace_specforge`)
    in two ways: an invalid position makes p_i = 0, so it ends the chain as it does for AUF (SpecForge
    skips it: p_i = 1), and the loss is normalised by Σ w like every loss in this module (SpecForge divides
    the weighted sum by the number of sequences). Where every block's valid positions are a prefix of it,
    the weights are the same and the two losses differ by the batch's factor (sequences / Σ w).
    """

    support_kind = "dpace"

    def __init__(self, alpha: float = 0.5, gamma: float | None = None, **display: Any) -> None:
        super().__init__(gamma, **display)
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"D-PACE α must be in [0, 1], got {alpha}. Fix: loss.alpha=0.5")
        self.alpha = alpha

    def support(self, pred: Predictions) -> Tensor:
        # An invalid position ends the chain, as it does for AUF.
        p = ((1 - self.alpha) * pred.label_prob + self.alpha) * pred.valid.float()
        reach = torch.cumprod(p, dim=1)
        return torch.flip(torch.cumsum(torch.flip(reach, [1]), dim=1), [1])


class BranchPlacement(BlockLoss):
    """Per-branch losses for a two-branch drafter (Domino), and which branch's predictions define the support.

    Spec-AUF's placements: B-AUF (base: AUF, final: plain CE), S-AUF (both AUF on the *base* support),
    F-AUF (both AUF, each its own support), B-AUF+D (B-AUF with decay). `support_from` maps a branch to
    the branch whose hits decide its weights (default: itself). It needs a drafter with both branches.
    """

    required_branches = ("base", "final")

    def __init__(
        self,
        base: BlockLoss,
        final: BlockLoss,
        support_from: dict[str, str] | None = None,
        **display: Any,
    ) -> None:
        super().__init__(None, **display)
        self.base, self.final = base, final
        self.support_from = {"base": "base", "final": "final", **(support_from or {})}
        for branch, source in self.support_from.items():
            if branch not in ("base", "final") or source not in ("base", "final"):
                raise ConfigError(f"support_from maps base/final to base/final, got {branch}: {source}")
        # The placement is named after where its support comes from: the base branch's loss.
        self.support_kind = base.support_kind

    def __call__(self, pred: Predictions) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
        return self.final(pred)

    def per_branch(
        self, preds: dict[str, Predictions]
    ) -> dict[str, tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]]:
        out = {}
        for branch, loss in (("base", self.base), ("final", self.final)):
            weights = loss.weights(preds[self.support_from[branch]])
            pred = preds[branch]
            out[branch] = (loss.reduce(pred, weights), loss.metrics(pred, weights))
        return out

    @property
    def has_decay(self) -> bool:
        return self.base.has_decay or self.final.has_decay

    def form(self) -> str:
        return f"BranchPlacement(base={self.base.form()}, final={self.final.form()}, support_from={self.support_from})"

    def __repr__(self) -> str:
        return f"BranchPlacement(base={self.base!r}, final={self.final!r}, support_from={self.support_from})"


class BaseAnchoredCurriculum:
    """Domino's training objective over its branches: L = (1 − λ)·L_final + λ·L_base (docs/method.md §5).

    λ falls linearly from 1 at the start to 0 at `fraction` of the run (the released recipe: the whole run).
    It is a training schedule, not architecture: a run may resume with another fraction, and exports do not
    carry it. A drafter with one branch ("final") trains on L_final alone.
    """

    def __init__(self, fraction: float = 1.0) -> None:
        if not 0.0 < fraction <= 1.0:
            raise ConfigError(
                f"curriculum.fraction must be in (0, 1], got {fraction}. Fix: curriculum.fraction=1.0"
            )
        self.fraction = fraction

    def weight(self, progress: float) -> float:
        """λ at `progress` ∈ [0, 1] of the run."""
        return max(0.0, 1.0 - progress / self.fraction)

    def __call__(
        self, loss: BlockLoss, preds: dict[str, Predictions], progress: float
    ) -> tuple[Tensor, dict[str, tuple[Tensor, Tensor]]]:
        """The scalar to train on and its metrics: the final branch's, then `base/*` ones and λ."""
        if "base" not in preds:
            return loss(preds["final"])
        lam = self.weight(progress)
        per_branch = loss.per_branch(preds)
        loss_base, metrics_base = per_branch["base"]
        loss_final, metrics_final = per_branch["final"]
        one = torch.ones((), device=loss_base.device)
        metrics = dict(metrics_final)  # what decoding uses: the final branch
        metrics.update({f"base/{k}": v for k, v in metrics_base.items()})
        metrics.update(
            {
                "lambda": (one * lam, one),
                "loss_base": (loss_base.detach(), one),
                "loss_final": (loss_final.detach(), one),
            }
        )
        return (1.0 - lam) * loss_final + lam * loss_base, metrics

    def __repr__(self) -> str:
        return f"BaseAnchoredCurriculum(fraction={self.fraction})"


def check_branches(loss: BlockLoss, branches: tuple[str, ...], drafter_name: str) -> None:
    """Refuse (ConfigError) a loss that needs branches the drafter does not have (B-AUF on DFlash)."""
    missing = [b for b in loss.required_branches if b not in branches]
    if missing:
        raise ConfigError(
            f"loss {loss.display_name or type(loss).__name__} places losses on the branches "
            f"{list(loss.required_branches)}, but {drafter_name} has only {list(branches)}: it would silently "
            "train plain CE. Fix: use it with backbone=domino, or pick a single-branch loss (e.g. loss=auf)"
        )
