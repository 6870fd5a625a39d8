"""The target LLM: loading (hub id, local dir, packaged GGUF, tiny random), its context features, its KV cache.

A `Target` is frozen: the drafter borrows its token embedding and LM head and reads the hidden states of a few
of its layers (docs/method.md §2), and the decoder uses it to verify drafted blocks (§6). The factories are
Hydra `_target_`s: configs, old checkpoints' included, name them `specauf.target.<factory>`, so every name
below stays importable from here.
"""

from specauf.dtypes import DTYPES
from specauf.target.cache import StaticKVCache
from specauf.target.factories import from_pretrained, qwen3_8b, qwen3_8b_random, tiny_random
from specauf.target.model import Target, default_layer_ids
from specauf.target.smollm2 import (
    SMOLLM2_DIRNAME,
    SMOLLM2_MEMBER,
    SMOLLM2_NAME,
    SMOLLM2_PACKAGE,
    SMOLLM2_SHA256,
    smollm2_135m,
)

__all__ = [
    "DTYPES",
    "SMOLLM2_DIRNAME",
    "SMOLLM2_MEMBER",
    "SMOLLM2_NAME",
    "SMOLLM2_PACKAGE",
    "SMOLLM2_SHA256",
    "StaticKVCache",
    "Target",
    "default_layer_ids",
    "from_pretrained",
    "qwen3_8b",
    "qwen3_8b_random",
    "smollm2_135m",
    "tiny_random",
]
