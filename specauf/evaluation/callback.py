"""Real τ during training: the draft-and-verify loop on a small fixed prompt set, logged as a curve.

Teacher-forced τ can mislead badly (a run with train TF-τ 4.85 had real τ 1.81), so `RealTau` runs the real
decoder every `every_n_steps` on a few prompts per benchmark of the run's `benchmarks` suite, with a small
token budget, and logs `val/tau/<benchmark>` and `val/tau/avg` at that step, next to `val/tf_tau`.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import lightning as L
import torch

from specauf.data.benchmarks import BenchmarkSuite
from specauf.errors import ConfigError
from specauf.evaluation.suite import evaluate_suite

log = logging.getLogger(__name__)


class RealTau(L.Callback):
    """Log real τ every `every_n_steps` (and after the last step) on the main process.

    `enabled`: true, false, or "auto" (on when training on a GPU). `suite`: the run's benchmark suite, cut to
    `prompts_per_benchmark` prompts of at most `max_new_tokens` new tokens each; the same prompts every time,
    `batch_size` of them decoded at once (`specauf.batched`).
    Skipped under FSDP, where no single process holds the whole drafter.
    """

    def __init__(
        self,
        suite: BenchmarkSuite | None,
        every_n_steps: int,
        enabled: bool | str = "auto",
        prompts_per_benchmark: int = 2,
        max_new_tokens: int = 32,
        batch_size: int = 16,
    ) -> None:
        if enabled not in (True, False, "auto"):
            raise ConfigError(f"real_tau.enabled must be true, false or auto, got {enabled!r}")
        if min(every_n_steps, prompts_per_benchmark, max_new_tokens, batch_size) < 1:
            raise ConfigError(
                "real_tau.every_n_steps, prompts_per_benchmark, max_new_tokens and batch_size must be positive, "
                f"got {every_n_steps}, {prompts_per_benchmark}, {max_new_tokens}, {batch_size}"
            )
        self.batch_size = batch_size
        self.enabled, self.every_n_steps = enabled, every_n_steps
        self.suite = _cut(suite, prompts_per_benchmark, max_new_tokens) if suite is not None else None
        self._last_step = -1

    def _active(self, trainer: L.Trainer) -> bool:
        if self.suite is None or not self.suite.benchmarks or self.enabled is False:
            return False
        if "FSDP" in type(trainer.strategy).__name__:
            return False
        return self.enabled is True or trainer.strategy.root_device.type == "cuda"

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        step = trainer.global_step
        if step % self.every_n_steps == 0 or step == trainer.max_steps:
            self._measure(trainer, pl_module)

    def _measure(self, trainer: L.Trainer, pl_module: Any) -> None:
        step = trainer.global_step
        if step == self._last_step or not self._active(trainer) or not trainer.is_global_zero:
            return
        self._last_step = step
        drafter, target = pl_module.drafter, pl_module.target
        with torch.autocast(trainer.strategy.root_device.type, enabled=False):
            # evaluate_suite puts the drafter in eval mode and back.
            results = evaluate_suite(
                target, drafter, self.suite, ar_baseline=False, progress=False, batch_size=self.batch_size
            )
        metrics = {
            f"val/tau/{name}": b["tau"] for name, b in results["benchmarks"].items() if b["tau"] is not None
        }
        if results.get("tau/avg") is not None:
            metrics["val/tau/avg"] = results["tau/avg"]
        log.info(
            "step %d real τ: %s", step, ", ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in metrics.items())
        )
        if trainer.logger is not None and metrics:
            trainer.logger.log_metrics(metrics, step=step)


def _cut(suite: BenchmarkSuite, n: int, max_new_tokens: int) -> BenchmarkSuite:
    """The same benchmarks, each with at most `n` prompts of at most `max_new_tokens` new tokens."""
    benches = {
        name: dataclasses.replace(
            b, n=min(b.n or b.default_n or n, n), max_new_tokens=min(b.max_new_tokens, max_new_tokens)
        )
        for name, b in suite.benchmarks.items()
    }
    # Missing data is the final evaluation's business (and preflight's): here it is skipped.
    return BenchmarkSuite(**benches, skip_missing=True, data_dir=suite.data_dir)
