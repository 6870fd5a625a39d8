"""Checks before the first training step, reported together: a run must not train for hours and then fail.

`preflight(cfg, target, run_dir)` looks at everything that can be known before the data is tokenized — the
benchmark data the final τ evaluation reads, the tokenizer's chat template, the output directory, the
device, the trainer's keys and the optimizer's learning rate — and raises one ConfigError listing every
problem with its fix. The W&B mode is a warning, not a problem: online without a key logs offline
(`specauf.tracking`).
"""

from __future__ import annotations

import inspect
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig

from specauf.data.chat import check_tokenizer
from specauf.errors import ConfigError, UserError

log = logging.getLogger(__name__)


def preflight(cfg: DictConfig, target: Any, run_dir: Path) -> None:
    """Raise one ConfigError naming every problem found (see the module docstring); return if none."""
    problems: list[str] = []
    for check in (
        lambda: _benchmarks(cfg),
        lambda: check_tokenizer(target.tokenizer),
        lambda: _output_dir(run_dir),
        lambda: _device(cfg.trainer),
        lambda: _trainer_keys(cfg.trainer),
        lambda: _learning_rate(cfg),
        lambda: _eval_knobs(cfg),
    ):
        _collect(check, problems)
    if problems:
        listed = "\n".join(f"  - {p}" for p in problems)
        raise ConfigError(
            f"the run cannot start ({len(problems)} problem{'s' * (len(problems) > 1)}):\n{listed}"
        )


def _collect(check: Callable[[], None], problems: list[str]) -> None:
    try:
        check()
    except UserError as err:
        problems.append(str(err).replace("\n", "\n    "))


def _benchmarks(cfg: DictConfig) -> None:
    if cfg.get("benchmarks") is None:
        return
    suite = instantiate(cfg.benchmarks)
    if suite.benchmarks:
        suite.load()  # every benchmark's data, as the τ evaluation after training will read it


def _output_dir(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=run_dir):
            pass
    except OSError as err:
        raise ConfigError(
            f"cannot write to the run directory {run_dir} ({err.strerror}). Fix: hydra.run.dir=<a writable dir>"
        ) from None


def _device(trainer: DictConfig) -> None:
    accelerator = str(trainer.get("accelerator", "auto")).lower()
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ConfigError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA device. Fix: "
            "trainer.accelerator=auto (or cpu)"
        )
    devices, available = trainer.get("devices"), torch.cuda.device_count()
    if accelerator in ("gpu", "cuda") and isinstance(devices, int) and devices > available > 0:
        raise ConfigError(
            f"trainer.devices={devices} but this machine has {available} GPU(s). Fix: trainer.devices={available}"
        )


def _trainer_keys(trainer: DictConfig) -> None:
    target = trainer.get("_target_")
    if target != "lightning.pytorch.Trainer":
        return
    from lightning.pytorch import Trainer

    known = set(inspect.signature(Trainer.__init__).parameters) - {"self"}
    unknown = sorted(k for k in trainer if k != "_target_" and k not in known)
    if unknown:
        raise ConfigError(
            f"trainer.{unknown[0]} is not a Lightning Trainer argument"
            + (f" (nor {', '.join('trainer.' + k for k in unknown[1:])})" if len(unknown) > 1 else "")
            + ". Fix: remove it (see `python -m specauf.train --cfg job` for the trainer's keys)"
        )


def _learning_rate(cfg: DictConfig) -> None:
    optimizer = cfg.get("optim", {}).get("optimizer", {})
    lr = optimizer.get("lr") if optimizer else None
    if lr is not None and not float(lr) > 0:
        raise ConfigError(
            f"optim.optimizer.lr must be positive, got {lr}. Fix: optim.optimizer.lr=<e.g. 6e-4>"
        )


def _eval_knobs(cfg: DictConfig) -> None:
    knobs = cfg.get("eval") or {}
    batch_size = knobs.get("batch_size", 1)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(
            f"eval.batch_size must be a whole number >= 1, got {batch_size!r}. Fix: eval.batch_size=1 (batch 1) "
            "or e.g. eval.batch_size=16 (batched speculative decoding)"
        )
    temperature = knobs.get("temperature", 0.0)
    if temperature is not None and float(temperature) < 0:
        raise ConfigError(
            f"eval.temperature must be >= 0 (0 = greedy), got {temperature}. Fix: eval.temperature=0"
        )
