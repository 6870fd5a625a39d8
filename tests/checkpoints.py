"""The trainer's checkpoint format, written by the module's own hook, for the tests that load checkpoints."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import torch

from specauf.losses import AUF
from specauf.module import DrafterModule
from specauf.target import Target

TINY_TARGET = {
    "num_layers": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_feature_layers": 1,
    "seed": 0,
}


def save_checkpoint(
    path: Path,
    target: Target,
    drafter: torch.nn.Module,
    *,
    target_kwargs: dict[str, Any] | None = None,
    step: int = 7,
    run_name: str = "loss=auf",
    choices: dict[str, str] | None = None,
    training_state: bool = False,
    target_config: dict[str, Any] | None = None,
) -> Path:
    """A checkpoint in the trainer's format, its metadata written by the module's own hook (as Lightning does).

    `target_kwargs` are the `tiny_random` arguments recorded as the run's target config (so `load_with_target`
    can rebuild it), or `target_config` the whole recorded target config; `training_state` adds the (empty)
    optimizer/loop entries `check_resumable` asks for.
    """
    config = {
        "target": target_config
        or {"_target_": "specauf.target.tiny_random", **(target_kwargs or TINY_TARGET)},
        "run_name": run_name,
        "trainer": {"max_steps": 10},
    }
    module = DrafterModule(
        drafter,
        target,
        AUF(),
        partial(torch.optim.AdamW),
        run_config={"config": config, "choices": choices if choices is not None else {"loss": "auf"}},
    )
    checkpoint: dict[str, Any] = {"state_dict": module.state_dict(), "global_step": step, "epoch": 0}
    if training_state:
        checkpoint.update(optimizer_states=[], loops={})
    module.on_save_checkpoint(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def trained_like(drafter: torch.nn.Module) -> torch.nn.Module:
    """Random weights everywhere (Domino's zero-initialised w2 included), as after some training: every
    tensor's mapping then matters in a round trip."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in drafter.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2 + (1.0 if p.dim() == 1 else 0.0))
    return drafter.eval()
