"""Training progress that speaks wherever the output goes.

On a terminal: Lightning's rich bar, labelled "train" (a step-bounded run has no epoch count: the stock bar
reads "Epoch 0/-2"). Written to a file (nohup, SLURM, CI), where a bar only prints when it closes: one plain line
every `every_n_steps` — step, loss, teacher-forced τ, steps/s, ETA. `progress_callbacks()` picks.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar
from rich.console import Console

log = logging.getLogger(__name__)


def interactive() -> bool:
    return sys.stderr.isatty()


def console() -> Console:
    """A rich console that does not cut lines at 80 columns when the output is not a terminal."""
    return Console() if interactive() else Console(width=200, soft_wrap=True)


class StepProgressBar(RichProgressBar):
    """Lightning's rich bar, without an epoch count a step-bounded run does not have."""

    def _get_train_description(self, current_epoch: int) -> str:
        if self.trainer.max_epochs is not None and self.trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        return f"{'train':{len(self.validation_description)}}"


class ProgressLines(L.Callback):
    """A log line every `every_n_steps` steps: step/max, train/loss, train/tf_tau, steps/s, ETA."""

    def __init__(self, every_n_steps: int) -> None:
        self.every_n_steps = max(1, int(every_n_steps))
        self._start: tuple[float, int] | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: Any) -> None:
        self._start = (time.perf_counter(), trainer.global_step)

    def on_train_batch_end(self, trainer: L.Trainer, *args: Any) -> None:
        step = trainer.global_step
        if not trainer.is_global_zero or self._start is None:
            return
        if step % self.every_n_steps and step != trainer.max_steps:
            return
        started, first = self._start
        rate = (step - first) / max(time.perf_counter() - started, 1e-9)
        metrics = trainer.callback_metrics
        parts = [f"step {step}/{trainer.max_steps}"]
        for key, label in (("train/loss", "loss"), ("train/tf_tau", "TF-τ")):
            if key in metrics:
                parts.append(f"{label} {float(metrics[key]):.4g}")
        parts.append(f"{rate:.2f} steps/s")
        if rate > 0 and trainer.max_steps and trainer.max_steps > step:
            parts.append(f"ETA {_clock((trainer.max_steps - step) / rate)}")
        log.info(" | ".join(parts))


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def progress_callbacks(log_every_n_steps: int) -> tuple[list[L.Callback], bool]:
    """(callbacks, enable_progress_bar) for this output: the bar on a terminal, plain lines otherwise."""
    if interactive():
        return [StepProgressBar()], True
    return [ProgressLines(log_every_n_steps)], False
