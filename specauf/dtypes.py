"""The one map from the dtype names users write in configs to torch dtypes."""

from __future__ import annotations

import torch

from specauf.errors import ConfigError

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def parse_dtype(
    name: str | torch.dtype, *, key: str = "dtype", allow_auto: bool = False
) -> torch.dtype | str:
    """`float32` → torch.float32 (a torch.dtype passes through); `auto` too when `allow_auto` (HF loaders
    take it to mean the checkpoint's own dtype). ConfigError naming `key` and the choices otherwise."""
    if isinstance(name, torch.dtype):
        return name
    if allow_auto and name == "auto":
        return "auto"
    if name not in DTYPES:
        choices = ", ".join(["auto", *DTYPES] if allow_auto else DTYPES)
        raise ConfigError(f"{key} must be one of {choices}; got {name!r}")
    return DTYPES[name]


def dtype_name(dtype: torch.dtype) -> str:
    """torch.bfloat16 → "bfloat16"."""
    return str(dtype).removeprefix("torch.")
