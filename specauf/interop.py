"""Running a specauf export in z-lab's own DFlash code (PyPI `dflash`), for parity checks (docs/method.md §10).

    model = load_zlab(export_dir)                   z-lab's DFlashDraftModel, refusing missing/unexpected keys
    serve_mask_in_target(target, export_dir)        a learned mask into the target row z-lab's loop reads
    tokens, per_cycle = zlab_generate(model, target, prompt_ids, max_new_tokens, stop_ids)

`dflash` pins its own transformers, so it lives in the interop environment (`make setup-interop`); importing
this module elsewhere works, calling it raises a ConfigError naming the fix.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import torch

from specauf.errors import CheckpointError, ConfigError
from specauf.export_layout import MASK_EMBEDDING_NAME, read_export_config


def _zlab() -> Any:
    try:
        import dflash.model as zlab
    except ImportError as err:
        raise ConfigError(
            f"z-lab's dflash package is not installed here ({err}). Fix: `make setup-interop`, then run with "
            ".venv-interop/bin/python"
        ) from err
    return zlab


def load_exactly(
    cls: Any, export_dir: str | os.PathLike, dtype: torch.dtype = torch.float32
) -> torch.nn.Module:
    """`cls.from_pretrained(export_dir)` (a field's HF-style class); CheckpointError unless every tensor fits."""
    model, info = cls.from_pretrained(export_dir, output_loading_info=True, dtype=dtype)
    wrong = {k: info[k] for k in ("missing_keys", "unexpected_keys", "mismatched_keys") if info.get(k)}
    if wrong:
        raise CheckpointError(f"{export_dir}: {cls.__name__} does not load it as is: {wrong}")
    return model.eval()


def load_zlab(export_dir: str | os.PathLike, dtype: torch.dtype = torch.float32) -> torch.nn.Module:
    """z-lab's `DFlashDraftModel` of an export, refusing missing, unexpected or reshaped tensors."""
    return load_exactly(_zlab().DFlashDraftModel, export_dir, dtype)


def served_mask_embedding(export_dir: str | os.PathLike) -> tuple[int, torch.Tensor] | None:
    """(mask_token_id, embedding) of an export with a learned mask, None for a spare-row mask."""
    path = Path(export_dir) / MASK_EMBEDDING_NAME
    if not read_export_config(export_dir)["specauf"].get("learned_mask_embedding"):
        return None
    served = torch.load(path, map_location="cpu", weights_only=True)
    return int(served["mask_token_id"]), served["embedding"]


def serve_mask_in_target(target: Any, export_dir: str | os.PathLike) -> int | None:
    """Write a learned mask embedding into the target's embedding row at the served id; returns that id.

    z-lab's loop embeds masked slots with `target.get_input_embeddings()` at `mask_token_id`. The served id
    is a token text never contains, so the target computes the same on any sequence without it — the caller
    checks that its sequences do not hold it.
    """
    served = served_mask_embedding(export_dir)
    if served is None:
        return None
    token, embedding = served
    with torch.no_grad():
        weight = target.model.get_input_embeddings().weight
        weight[token] = embedding.to(weight.dtype)
    return token


def zlab_generate(
    model: torch.nn.Module,
    target: Any,
    prompt_ids: list[int],
    max_new_tokens: int,
    stop_ids: list[int] | None,
) -> tuple[list[int], list[int]]:
    """z-lab's `dflash_generate` (greedy): the new tokens and the tokens emitted per cycle (accepted + 1)."""
    zlab = _zlab()
    # It reads its clock through torch.cuda.synchronize when asked for the per-cycle lengths: on CPU only
    # that clock is replaced, not the loop.
    clock = zlab._cuda_time
    if target.device.type != "cuda":
        zlab._cuda_time = time.perf_counter
    try:
        ids = torch.tensor([prompt_ids], device=target.device)
        stats = zlab.dflash_generate(model, target.model, ids, max_new_tokens, stop_ids, return_stats=True)
    finally:
        zlab._cuda_time = clock
    return stats.output_ids[0, len(prompt_ids) :].tolist(), [int(n) for n in stats.acceptance_lengths]
