"""OmegaConf resolvers used by the configs, re-exporting the user-facing error type.

Resolvers keep derived defaults in the YAML where users can see and override them, e.g.
`gamma: ${paper_gamma:${backbone.block_size}}` or `precision: ${auto_precision:}`.
"""

from __future__ import annotations

import torch
from omegaconf import OmegaConf

from specauf.errors import UserError
from specauf.losses import paper_gamma

__all__ = ["UserError", "auto_precision", "gpu_count", "job_devices", "register_resolvers", "run_name"]


def auto_precision() -> str:
    """bf16 mixed precision where a GPU is present (the paper's recipe), full fp32 on CPU."""
    return "bf16-mixed" if torch.cuda.is_available() else "32-true"


def run_name(override_dirname: str) -> str:
    """The run's name from its command-line overrides (`loss=auf,backbone=domino`), or `default`."""
    return override_dirname or "default"


def gpu_count() -> int:
    """How many runs a local parallel launcher starts at once: one per GPU (1 without GPUs)."""
    return max(1, torch.cuda.device_count())


def job_devices() -> int | list[int]:
    """`trainer.devices`: one device; under the parallel local launcher job k gets GPU k mod #GPUs, so the
    runs of a sweep spread over the host's GPUs instead of all landing on GPU 0."""
    from hydra.core.hydra_config import HydraConfig

    if not torch.cuda.is_available() or not HydraConfig.initialized():
        return 1
    hydra_cfg = HydraConfig.get()
    if "joblib" not in str(hydra_cfg.launcher.get("_target_", "")):
        return 1
    return [int(hydra_cfg.job.get("num") or 0) % torch.cuda.device_count()]


def register_resolvers() -> None:
    for name, fn in {
        "paper_gamma": paper_gamma,
        "auto_precision": auto_precision,
        "run_name": run_name,
        "gpu_count": gpu_count,
        "job_devices": job_devices,
    }.items():
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, fn)
