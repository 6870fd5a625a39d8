"""Numerical guard: a training step with a non-finite loss or gradient is skipped, not applied.

One NaN gradient applied by AdamW turns every weight it touches into NaN for good, and the next checkpoint
saves the damage over the last good one. The guard checks the loss (`on_before_backward`) and every gradient
(`on_before_optimizer_step`, before clipping) and, when anything is inf/NaN, drops the gradients so the
optimizer step changes neither the weights nor the optimizer's moments. The batch still counts as consumed
and the global step and LR schedule still advance, so the data order and schedule of the run stay the ones
a run without the bad step would have had.

Each skipped step is logged (a warning naming the offending parameters, and the `train/skipped_steps`
counter); `max_consecutive_nonfinite` skipped steps in a row stop the run with `NonFiniteTrainingError` (a
one-line error at the command line), keeping the last checkpoint, which cannot hold non-finite weights: the
guard also refuses to write a checkpoint whose weights are not all finite.

Mixed precision: in bf16 (the GPU default) this is the whole story. With fp16 and a GradScaler, overflowing
steps are normal while the scale calibrates; the scaler already skips them, and they are counted here too.
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from torch import Tensor

from specauf.errors import UserError

log = logging.getLogger(__name__)


class NonFiniteTrainingError(UserError):
    """Training produced non-finite losses or gradients too many steps in a row, or non-finite weights."""


def _all_finite(tensors: list[Tensor]) -> bool:
    # One reduction per tensor, one host sync for all of them.
    if not tensors:
        return True
    return bool(torch.stack([torch.isfinite(t).all() for t in tensors]).all())


class NumericalGuard(L.Callback):
    """Skip optimizer steps with a non-finite loss or gradient; stop after `max_consecutive_nonfinite` in a row.

    `max_consecutive_nonfinite=None` (or 0) never stops the run, it only skips.
    """

    def __init__(self, max_consecutive_nonfinite: int | None = 20) -> None:
        if max_consecutive_nonfinite is not None and max_consecutive_nonfinite < 0:
            raise ValueError(
                f"guard.max_consecutive_nonfinite must be >= 0 or null, got {max_consecutive_nonfinite}"
            )
        self.max_consecutive = max_consecutive_nonfinite or None
        self.skipped_total = 0
        self.consecutive = 0
        self._bad_loss = False  # OR over the micro-batches of one optimizer step (gradient accumulation)
        self._last_loss: float | None = None
        self._decision: str | None = None  # what the last optimizer step found: None, "" (fine) or a reason
        self._names: dict[int, str] = {}
        self._step = 0

    # -- state (saved in checkpoints, so the counters survive a resume) ---------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"skipped_total": self.skipped_total, "consecutive": self.consecutive}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.skipped_total = int(state_dict.get("skipped_total", 0))
        self.consecutive = int(state_dict.get("consecutive", 0))

    # -- detection ----------------------------------------------------------------------------------------------
    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._names = {id(p): name for name, p in pl_module.named_parameters()}

    def on_before_backward(self, trainer: L.Trainer, pl_module: L.LightningModule, loss: Tensor) -> None:
        loss = loss.detach()
        if not bool(torch.isfinite(loss).all()):
            self._bad_loss = True
            self._last_loss = float(loss.float().flatten()[0])

    def on_before_optimizer_step(
        self, trainer: L.Trainer, pl_module: L.LightningModule, optimizer: torch.optim.Optimizer
    ) -> None:
        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grads_ok = _all_finite([p.grad for p in params])
        reasons = []
        if self._bad_loss:
            reasons.append(f"loss {self._last_loss}")
        if not grads_ok:
            bad = [
                self._names.get(id(p), f"<{tuple(p.shape)}>")
                for p in params
                if not torch.isfinite(p.grad).all()
            ]
            shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
            reasons.append(f"non-finite gradients in {len(bad)} parameter(s) ({shown})")
        self._bad_loss, self._last_loss = False, None
        self._decision = "; ".join(reasons)
        self._step = trainer.global_step  # 0-based, as loggers number steps; it advances before batch end
        if reasons:
            # No gradient, no update: AdamW (and SGD, and the clipping that follows) skip parameters whose
            # .grad is None, so the weights and the moment estimates stay as they were.
            for p in params:
                p.grad = None

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        decision, self._decision = self._decision, None
        if decision is None:  # no optimizer step on this batch (gradient accumulation)
            return
        if decision:
            self.skipped_total += 1
            self.consecutive += 1
            log.warning(
                "step %d skipped (no update): %s [%d in a row, %d in total]",
                self._step,
                decision,
                self.consecutive,
                self.skipped_total,
            )
        else:
            self.consecutive = 0
        pl_module.log("train/skipped_steps", float(self.skipped_total), on_step=True, on_epoch=False)
        if self.max_consecutive is not None and self.consecutive >= self.max_consecutive:
            last = getattr(trainer.checkpoint_callback, "last_model_path", "") or ""
            kept = f"the last checkpoint ({last}) predates them" if last else "no checkpoint was written yet"
            raise NonFiniteTrainingError(
                f"training stopped at step {self._step}: {self.consecutive} steps in a row had a "
                f"non-finite loss or gradients (last: {decision}). None of them was applied and {kept}. Fix: "
                "lower optim.optimizer.lr, look for broken data, or train in fp32 (trainer.precision=32-true); "
                "guard.max_consecutive_nonfinite sets how many in a row are tolerated"
            )

    # -- never save non-finite weights ----------------------------------------------------------------------
    def on_save_checkpoint(
        self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict[str, Any]
    ) -> None:
        params = [p.detach() for p in pl_module.parameters() if p.requires_grad]
        if not _all_finite(params):
            bad = [
                n for n, p in pl_module.named_parameters() if p.requires_grad and not torch.isfinite(p).all()
            ]
            raise NonFiniteTrainingError(
                f"refusing to save a checkpoint at step {trainer.global_step}: the weights are not finite "
                f"({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); the previous checkpoint is kept. Fix: "
                "lower optim.optimizer.lr or train in fp32 (trainer.precision=32-true)"
            )
