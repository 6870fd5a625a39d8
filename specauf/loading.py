"""The one load path: a training checkpoint, a run directory or an export directory → drafter (and target).

    drafter, meta = load_drafter(path)                       no target (export, inspection)
    drafter, target, meta = load_with_target(path)           the target it was trained for, checked (τ eval)

`meta` has the same keys whatever `path` is: `drafter_class`, `drafter_config`, `target_name`,
`target_layer_ids`, `target_hidden_size`, `target_vocab_size`, `target_num_layers`, `target_revision`,
`target_chat_template_sha256`, `serving_mask_token_id` (the id a learned mask is served under),
`target_config`,
`choices`, `run_name`, `training_config`, `path`, `global_step`, `epoch` (None where the source does not
say). `target_problems` is the one target-compatibility rule; resuming (`specauf.checkpointing`) and loading
both use it.
"""

from __future__ import annotations

import importlib
import os
import zipfile
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate

from specauf.dtypes import dtype_name
from specauf.errors import CheckpointError, PathNotFoundError

STATE_PREFIX = "drafter."  # the drafter's weights inside the LightningModule's state_dict
META_KEYS = (
    "drafter_class",
    "drafter_config",
    "target_name",
    "target_layer_ids",
    "target_hidden_size",
    "target_vocab_size",
    "target_num_layers",
    "target_revision",
    "target_chat_template_sha256",
    "serving_mask_token_id",
    "target_config",
    "choices",
    "run_name",
    "training_config",
    "path",
    "global_step",
    "epoch",
)


# --- files ------------------------------------------------------------------------------------------------


def checkpoint_file(path: str | os.PathLike) -> Path:
    """A .ckpt file, or a run directory (→ its checkpoints/last.ckpt); PathNotFoundError with the fix."""
    path = Path(path).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise PathNotFoundError(
            f"no checkpoint at {path}. Fix: pass ckpt=<run dir>/checkpoints/last.ckpt (or the run directory) "
            "of a run of `python -m specauf.train`, or an export directory of `python -m specauf.export`"
        )
    return path


def unreadable(path: Any, err: BaseException) -> CheckpointError:
    """The one message for a checkpoint file that cannot be read, whoever reads it."""
    detail = " ".join(str(err).split())[:160]
    return CheckpointError(
        f"cannot read checkpoint {path}: the file is corrupt or truncated ({type(err).__name__}: {detail}). "
        "Fix: use another checkpoint of the run (resume=<file.ckpt> or an earlier step), or re-run the training"
    )


def read_checkpoint(path: str | os.PathLike, *, mmap: bool = False) -> dict[str, Any]:
    """`torch.load` of a specauf/Lightning checkpoint, with `unreadable`'s one-line error.

    `mmap` maps tensors instead of reading them: cheap enough to inspect a multi-GB checkpoint's metadata.
    Only tensors and plain containers are accepted (weights_only): a checkpoint cannot run code.
    """
    # torch refuses to mmap a file that is not a zip with its own message; reading it plainly gives the
    # unpickling error every other reader reports, so one corrupt file reads the same everywhere.
    mmap = mmap and zipfile.is_zipfile(path)
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise
    except Exception as err:  # zip, pickle, EOF and storage errors all mean "this file is unusable"
        raise unreadable(path, err) from err
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{path} is not a checkpoint (it holds a {type(checkpoint).__name__})")
    return checkpoint


def checkpoint_meta(checkpoint: dict[str, Any], path: str | os.PathLike) -> dict[str, Any]:
    """The normalised `meta` of a training checkpoint (see the module docstring)."""
    saved = checkpoint.get("specauf")
    if not isinstance(saved, dict):
        raise CheckpointError(
            f"{path} is not a specauf checkpoint (no 'specauf' entry). Fix: pass a .ckpt written by "
            "`python -m specauf.train` (its run directory's checkpoints/last.ckpt)"
        )
    run = saved.get("config") or {}
    training = run.get("config") or {}
    meta = {key: saved.get(key) for key in META_KEYS}
    meta.update(
        target_config=training.get("target"),
        choices=run.get("choices"),
        run_name=training.get("run_name"),
        training_config=training or None,
        path=str(path),
        global_step=checkpoint.get("global_step"),
        epoch=checkpoint.get("epoch"),
    )
    return meta


# --- the drafter --------------------------------------------------------------------------------------------


def drafter_class(qualname: str) -> type[torch.nn.Module]:
    """The drafter class a checkpoint names (`package.module.Class`)."""
    from specauf.drafters.dflash import DFlashDrafter

    module, _, name = str(qualname).rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError) as err:
        raise CheckpointError(
            f"drafter class {qualname!r} cannot be imported ({err}). Fix: install the specauf version that "
            "trained it"
        ) from err
    if not (isinstance(cls, type) and issubclass(cls, DFlashDrafter)):
        raise CheckpointError(f"{qualname!r} is not a specauf drafter")
    return cls


def load_weights(drafter: torch.nn.Module, state: dict[str, torch.Tensor], source: Any) -> None:
    """load_state_dict with a one-line error instead of PyTorch's wall of missing/unexpected/shape lines."""
    own = drafter.state_dict()
    missing = sorted(own.keys() - state.keys())
    unexpected = sorted(state.keys() - own.keys())
    reshaped = sorted(k for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or reshaped:
        parts = [
            f"{len(names)} {what} (e.g. {names[0]})"
            for what, names in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("of another shape", reshaped),
            )
            if names
        ]
        raise CheckpointError(
            f"{source}: the weights do not fit the {type(drafter).__name__} its config describes: "
            + ", ".join(parts)
            + ". Fix: load it with the specauf version that wrote it, or re-export it from its checkpoint"
        )
    drafter.load_state_dict(state)


def build_drafter(meta: dict[str, Any], state: dict[str, torch.Tensor], source: Any) -> torch.nn.Module:
    """The drafter `meta` describes, with `state` loaded, in eval mode."""
    if not isinstance(meta.get("drafter_config"), dict):
        raise CheckpointError(f"{source}: no drafter settings recorded; is it a specauf checkpoint?")
    drafter = drafter_class(meta["drafter_class"]).from_config(meta["drafter_config"])
    if not state:
        raise CheckpointError(f"{source}: it holds no drafter weights; is the file complete?")
    load_weights(drafter, state, source)
    return drafter.eval()


def is_export(path: str | os.PathLike) -> bool:
    """Whether `path` is an export directory (config.json beside the weights) rather than a run/checkpoint."""
    path = Path(path).expanduser()
    return path.is_dir() and (path / "config.json").is_file()


def load_drafter(path: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """`(drafter, meta)` from a .ckpt file, a run directory or an export directory, without the target.

    Export and inspection need no target: loading an 8B model to read a drafter would only cost time.
    """
    if is_export(path):
        from specauf.export_layout import read_export

        return read_export(path)
    ckpt = checkpoint_file(path)
    checkpoint = read_checkpoint(ckpt)
    meta = checkpoint_meta(checkpoint, ckpt)
    weights = checkpoint.get("state_dict") or {}
    state = {k[len(STATE_PREFIX) :]: v for k, v in weights.items() if k.startswith(STATE_PREFIX)}
    return build_drafter(meta, state, ckpt), meta


# --- the target -----------------------------------------------------------------------------------------------


def target_problems(meta: dict[str, Any], target: Any) -> list[str]:
    """What in `target` differs from the one the drafter of `meta` was trained for (empty: it fits).

    Name, revision, chat template, feature layers, hidden size, the mask token's row, vocabulary. Entries a
    source does not record (or a target does not know) are not compared.
    """
    config = meta.get("drafter_config") or {}
    problems = []
    name = meta.get("target_name")
    if name is not None and getattr(target, "name", None) != name:
        problems.append(f"target {name!r} (this target: {getattr(target, 'name', None)!r})")
    for key, what in (
        ("target_revision", "revision"),
        ("target_chat_template_sha256", "chat template sha256"),
    ):
        recorded, here = meta.get(key), getattr(target, key.removeprefix("target_"), None)
        if recorded is not None and here is not None and recorded != here:
            problems.append(f"{what} {recorded!r} (this target: {here!r})")
    layers = list(meta.get("target_layer_ids") or [])
    if layers and layers != list(getattr(target, "layer_ids", [])):
        problems.append(f"target layers {layers} (this target: {list(target.layer_ids)})")
    hidden = config.get("hidden_size")
    if hidden is not None and getattr(target, "hidden_size", hidden) != hidden:
        problems.append(f"hidden size {hidden} (this target: {target.hidden_size})")
    vocab_size = getattr(target, "vocab_size", None)
    mask = config.get("mask_token_id")
    if mask is not None and vocab_size is not None and not 0 <= mask < vocab_size:
        problems.append(f"mask token {mask} (outside this target's {vocab_size}-row embedding)")
    vocab = config.get("vocab_size") or meta.get("target_vocab_size")
    if vocab is not None and vocab_size is not None and vocab != vocab_size:
        problems.append(f"vocabulary {vocab} (this target: {vocab_size})")
    return problems


def check_target(meta: dict[str, Any], target: Any) -> None:
    """Refuse (CheckpointError) a target the drafter of `meta` was not trained for."""
    problems = target_problems(meta, target)
    if problems:
        raise CheckpointError(
            f"{meta.get('path')}: the drafter was trained for another target: " + "; ".join(problems) + ". "
            "Fix: use it with the target it was trained on"
        )


def build_target(meta: dict[str, Any], dtype: torch.dtype | None = None) -> Any:
    """The target recorded with the drafter, loaded in `dtype` directly when its factory takes one."""
    target_cfg = meta.get("target_config")
    if not target_cfg or "_target_" not in target_cfg:
        raise CheckpointError(
            f"{meta.get('path')}: no target config is recorded with the drafter. Fix: build the target "
            "yourself and pass it (load_with_target(path, target=...))"
        )
    overrides = {"dtype": dtype_name(dtype)} if dtype is not None and "dtype" in target_cfg else {}
    return instantiate(target_cfg, **overrides)


def load_with_target(
    path: str | os.PathLike,
    target: Any = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """`(drafter, target, meta)`: the drafter of `path` and the target it was trained for, checked to fit.

    The target is built from the recorded config unless one is given. `device`/`dtype` move both.
    """
    drafter, meta = load_drafter(path)
    if target is None:
        target = build_target(meta, dtype)
    check_target(meta, target)
    placement = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if placement:
        target.to(**placement)
        drafter.to(**placement)
    return drafter.eval(), target, meta
