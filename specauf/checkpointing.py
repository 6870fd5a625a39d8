"""Crash-safe checkpoints and exact resumption of a training run.

A run killed at any moment (SIGKILL mid-step, mid-checkpoint-write, a preempted node) resumes from its last
checkpoint with `resume=auto` and continues the schedule it would have followed:

- **Files**: `AtomicCheckpointIO` writes each checkpoint to a temporary file beside it, fsyncs, then renames
  it over the old one, so `last.ckpt` is always a complete checkpoint: the previous one or the new one. A
  kill mid-write leaves a `<name>.tmp*` file behind, which `resolve_checkpoint` removes on resume.
- **Step count, LR, optimizer state**: Lightning's own checkpoint (global step, loop progress, optimizer and
  scheduler state dicts).
- **Data order**: `ChatDataModule.state_dict` records how far into its epoch the run was; the resumed sampler
  skips those samples (Lightning alone would restart the epoch from its first batch). Anchors are a pure
  function of (seed, epoch, index), so they replay too.
- **RNG**: nothing in training draws from the global RNGs today — data order and anchors use their own
  seeded generators, the drafter has no dropout, and the frozen target runs in eval mode. Lightning does not
  save the global RNG states either, so any future use of them (dropout, a stochastic kernel) would diverge
  after a resume. `StepSeed` closes that gap: it seeds torch, numpy and `random` before every training batch
  from (seed, epoch, batch index), so whatever a step draws depends on the step alone, resumed or not.
- **Compatibility**: `check_resumable` refuses a checkpoint whose drafter (backbone, block size, shapes,
  label alignment) or target differs from the run's, before anything is trained.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
from lightning.fabric.utilities.cloud_io import _is_local_file_protocol
from lightning.pytorch.plugins.io import TorchCheckpointIO

from specauf.errors import CheckpointError, PathNotFoundError
from specauf.io import TEMP_MARK, atomic_write
from specauf.loading import checkpoint_meta, read_checkpoint, target_problems, unreadable

log = logging.getLogger(__name__)


# Drafter settings that may change between a run and its resumption: they do not alter the weights' meaning.
RESUMABLE_CHANGES = {"head_chunk_size", "init_std"}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's torch checkpoint IO, with all-or-nothing local writes and readable load errors.

    Lightning's default goes through an fsspec transaction without fsync: a crash or power loss right after the
    rename can still leave an empty or partial file. Here the bytes reach the disk before the rename, and the
    directory entry after it. Remote paths (s3://, gs://) keep Lightning's behaviour.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        if storage_options is not None or not _is_local_file_protocol(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(path, lambda f: torch.save(checkpoint, f), durable=True)

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict:
        try:
            if map_location is None:
                return super().load_checkpoint(path, weights_only=weights_only)
            return super().load_checkpoint(path, map_location=map_location, weights_only=weights_only)
        except FileNotFoundError:
            raise
        except Exception as err:  # zip, pickle, EOF, storage errors: all mean "this file is unusable"
            raise unreadable(path, err) from err


# --- finding the checkpoint to resume from ----------------------------------------------------------------


def clean_stale_temp_files(directory: Path) -> list[Path]:
    """Remove `*.ckpt.tmp*` files: checkpoints whose write was interrupted. Returns what was removed."""
    removed = []
    if directory.is_dir():
        for tmp in sorted(directory.glob(f"*.ckpt{TEMP_MARK}*")):
            if tmp.is_file():
                tmp.unlink(missing_ok=True)
                removed.append(tmp)
    if removed:
        log.warning(
            "removed %d unfinished checkpoint file(s) left by an interrupted save: %s",
            len(removed),
            ", ".join(p.name for p in removed),
        )
    return removed


def resolve_checkpoint(resume: str | None, run_dir: Path) -> str | None:
    """The checkpoint `resume` names: None, `auto`, a run directory, or a checkpoint file.

    `auto` is this run directory's `checkpoints/last.ckpt` when there is one (a fresh start otherwise), so the
    same command both starts and resumes a run given a fixed `hydra.run.dir`. Unfinished temp files of an
    interrupted save are removed from the checkpoint directory first; they are never resumed from.
    """
    if resume is None:
        return None
    if resume == "auto":
        ckpt_dir = run_dir / "checkpoints"
        clean_stale_temp_files(ckpt_dir)
        last = ckpt_dir / "last.ckpt"
        if last.is_file():
            log.info("resume=auto: resuming from %s", last)
            return str(last)
        log.info(
            "resume=auto: no checkpoint in %s yet; starting a new run (resume=auto continues the run in its own "
            "directory: pass hydra.run.dir=<that run's directory>)",
            ckpt_dir,
        )
        return None
    path = Path(resume).expanduser()
    if path.is_dir():
        clean_stale_temp_files(path / "checkpoints")
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise PathNotFoundError(
            f"resume={resume}: no checkpoint at {path}. Fix: give a .ckpt file or a run directory (one with "
            "checkpoints/last.ckpt), or resume=auto with hydra.run.dir=<the run directory>"
        )
    return str(path)


def _qualname(obj: Any) -> str:
    return f"{type(obj).__module__}.{type(obj).__qualname__}"


def check_resumable(
    path: str | os.PathLike, drafter: torch.nn.Module, target: Any, max_steps: int | None = None
) -> dict[str, Any]:
    """Refuse (CheckpointError) to resume `path` into a run whose drafter or target differs from its own.

    Compared: the drafter class (backbone), every drafter setting that changes what the weights mean (block
    size, label alignment, shapes, mask token, ...), the target's name and feature layers. Lightning would
    otherwise either fail with a wall of state_dict errors or — block size and target have no shape of their
    own — silently train on. Returns the checkpoint's "specauf" metadata plus its global step.
    """
    checkpoint = read_checkpoint(path, mmap=True)
    if (
        not isinstance(checkpoint.get("specauf"), dict)
        or "optimizer_states" not in checkpoint
        or "loops" not in checkpoint
    ):
        raise CheckpointError(
            f"cannot resume from {path}: it is not a full specauf training checkpoint (no training state). "
            "Fix: resume from a checkpoints/last.ckpt written by `python -m specauf.train`"
        )
    meta = checkpoint_meta(checkpoint, path)
    problems = []
    saved_class = str(meta.get("drafter_class"))
    if saved_class != _qualname(drafter):
        # Another backbone: its settings differ by construction, the class says it all.
        problems.append(f"backbone {saved_class.rsplit('.', 1)[-1]} (this run: {type(drafter).__name__})")
    else:
        # Settings an older version stored but no longer are architecture (Domino's curriculum) are ignored.
        ignored = RESUMABLE_CHANGES | type(drafter).legacy_config_keys
        saved, current = dict(meta.get("drafter_config") or {}), dict(getattr(drafter, "config", {}))
        for key in sorted((saved.keys() | current.keys()) - ignored):
            if saved.get(key) != current.get(key):
                problems.append(f"{key}={saved.get(key)!r} (this run: {current.get(key)!r})")
    problems += target_problems(meta, target)
    if problems:
        choices = meta.get("choices") or {}
        groups = ", ".join(
            f"{k}={v}" for k, v in sorted(choices.items()) if k in ("backbone", "target", "loss")
        )
        raise CheckpointError(
            f"cannot resume from {path}: it was trained with " + "; ".join(problems) + ". Fix: resume with "
            f"the settings of that run{f' ({groups}, plus its overrides)' if groups else ''}, or start a new "
            "run without resume="
        )
    saved_max = (meta.get("training_config") or {}).get("trainer", {}).get("max_steps")
    if max_steps is not None and saved_max is not None and saved_max != max_steps:
        log.warning(
            "resuming with trainer.max_steps=%s (the run started with %s): the LR schedule and curricula are "
            "stretched to the new length from here on",
            max_steps,
            saved_max,
        )
    log.info(
        "resuming from %s (step %s, epoch %s)", path, checkpoint.get("global_step"), checkpoint.get("epoch")
    )
    return meta


def keep_previous_metrics(logger: Any, tag: str) -> Path | None:
    """Move a CSVLogger's metrics.csv aside before a resumed run starts writing its own.

    Lightning's CSV writer deletes an existing metrics.csv when it starts; the interrupted run's curve would
    be lost. Call before the logger writes anything (log_hyperparams included). Other loggers are untouched.
    """
    from lightning.pytorch.loggers import CSVLogger

    if not isinstance(logger, CSVLogger):
        return None
    metrics = Path(logger.log_dir) / "metrics.csv"
    if not metrics.is_file():
        return None
    kept = metrics.with_name(f"metrics.{tag}.csv")
    n = 1
    while kept.exists():
        n += 1
        kept = metrics.with_name(f"metrics.{tag}-{n}.csv")
    metrics.rename(kept)
    log.info("kept the interrupted run's metrics as %s", kept)
    return kept


# --- RNG ----------------------------------------------------------------------------------------------------


class StepSeed(L.Callback):
    """Seed the global RNGs (torch incl. CUDA, numpy, random) before every training batch from
    (seed, epoch, batch index), so randomness inside a step is the same whether or not the run was resumed.

    The batch index Lightning passes is restored from the checkpoint; an uninterrupted run and a resumed one
    see the same (epoch, batch index) for the same data, and so the same draws.
    """

    def __init__(self, seed: int) -> None:
        self.seed = int(seed)

    def step_seed(self, epoch: int, batch_idx: int) -> int:
        # A fixed mixing of the three ints (Python's hash of ints is not salted, but spell it out anyway).
        return (self.seed * 1_000_003 + epoch * 1_000_000_007 + batch_idx * 97_409) % (2**63 - 1)

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ):
        seed = self.step_seed(trainer.current_epoch, batch_idx)
        torch.manual_seed(seed)  # also seeds every CUDA device
        np.random.seed(seed % 2**32)
        random.seed(seed)
