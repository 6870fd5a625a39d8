"""OmegaConf resolvers used by the configs, re-exporting the user-facing error type.

Resolvers keep derived defaults in the YAML where users can see and override them, e.g.
`gamma: ${paper_gamma:${backbone.block_size}}` or `precision: ${auto_precision:}`.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from specauf.errors import UserError
from specauf.losses import paper_gamma

__all__ = ["UserError", "auto_precision", "register_resolvers", "run_name"]


def auto_precision() -> str:
    """bf16 mixed precision where a GPU is present (the paper's recipe), full fp32 on CPU."""
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


def run_name(override_dirname: str) -> str:
    """The run's name from its command-line overrides (`loss=auf,backbone=domino`), or `default`."""
    return override_dirname or "default"


def register_resolvers() -> None:
    for name, fn in {
        "paper_gamma": paper_gamma,
        "auto_precision": auto_precision,
        "run_name": run_name,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
