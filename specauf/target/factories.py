"""Target factories: any causal LM by hub id or local directory, Qwen3-8B (and its shapes with random
weights, for timing), and a tiny random Llama.

Each is a Hydra `_target_` (see `conf/target/`), reached as `specauf.target.<name>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen3Config

from specauf.dtypes import parse_dtype
from specauf.errors import DownloadError, PathNotFoundError
from specauf.hub import hub_unreachable, looks_like_path
from specauf.target.model import Target
from specauf.target.smollm2 import smollm2_135m
from specauf.tiny import tiny_tokenizer

_PATH_FIX = "Fix: pass target.path=<dir with config.json> or a hub id"


def _resolve(path: str) -> tuple[str, bool]:
    """`(source, from_hub)` for `path`; PathNotFoundError when it is meant as a path but unusable."""
    local = Path(path).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            what = "a file" if local.is_file() else "a directory without config.json"
            raise PathNotFoundError(f"target path {path!r} is {what}. {_PATH_FIX}")
        return str(local), False
    if looks_like_path(path):
        raise PathNotFoundError(
            f"target path {path!r} does not exist. {_PATH_FIX} (e.g. Qwen/Qwen3-8B), or use "
            "target=smollm2_135m for the packaged model"
        )
    return path, True


def from_pretrained(
    path: str,
    layer_ids: list[int] | None = None,
    num_feature_layers: int = 5,
    mask_token_id: int | None = None,
    dtype: str = "float32",
    name: str | None = None,
    attn_implementation: str | None = None,
    revision: str | None = None,
) -> Target:
    """Load a target from a hub id or a local directory (config.json, weights, tokenizer).

    `layer_ids` defaults to `default_layer_ids(num_layers, num_feature_layers)`; `mask_token_id` is a spare
    embedding row (None → the drafter learns a mask embedding); `dtype` is auto/float32/bfloat16/float16;
    `name` defaults to `path`; `revision` is a hub branch, tag or commit (recorded with the drafter).
    """
    source, from_hub = _resolve(path)
    kwargs: dict[str, Any] = {"dtype": parse_dtype(dtype, key="target.dtype", allow_auto=True)}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    offline = hub_unreachable() if from_hub else None
    # With no route to the hub, a copy in the local HF cache still loads; anything else fails now instead
    # of after transformers' retries.
    local_only: dict[str, Any] = {"local_files_only": True} if offline else {}
    if revision is not None:
        local_only["revision"] = revision
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **local_only)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs, **local_only)
    except OSError as err:
        if from_hub:
            raise DownloadError(
                f"could not load {path!r} from the Hugging Face hub ({offline or err}). Fix: download it and "
                "pass target.path=<local dir>, or use target=smollm2_135m (works offline)"
            ) from err
        raise PathNotFoundError(
            f"target path {path!r} cannot be loaded ({err}). Fix: point target.path at a complete model "
            "directory (config.json, weights, tokenizer files)"
        ) from err
    return Target(model, tokenizer, layer_ids, num_feature_layers, mask_token_id, name or path, revision)


def qwen3_8b(
    path: str = "Qwen/Qwen3-8B",
    layer_ids: list[int] | None = None,
    dtype: str = "bfloat16",
    attn_implementation: str | None = None,
) -> Target:
    """Qwen3-8B, the papers' target: 36 layers, features from [1, 9, 17, 25, 33], MASK = row 151669.

    `path` may point at a local copy; the name stays "Qwen/Qwen3-8B" so checkpoints remain comparable.
    """
    return from_pretrained(
        path,
        layer_ids=layer_ids if layer_ids is not None else [1, 9, 17, 25, 33],
        mask_token_id=151669,  # first padded row: the tokenizer has 151669 tokens, the table 151936 rows
        dtype=dtype,
        name="Qwen/Qwen3-8B",
        attn_implementation=attn_implementation,
    )


# Qwen3-8B's published config (config.json of Qwen/Qwen3-8B): the shapes that decide speed and memory.
QWEN3_8B_SHAPES = dict(
    vocab_size=151_936, hidden_size=4096, intermediate_size=12_288, num_hidden_layers=36,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40_960,
    rope_theta=1_000_000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
)  # fmt: skip


def qwen3_8b_random(device: str = "auto", dtype: str = "bfloat16") -> Target:
    """A Qwen3-8B-shaped target with random weights, built on `device`: for timing and memory only (its
    outputs are noise and never end a turn). SmolLM2's tokenizer (ids < 49,152, all valid rows here), so real
    prompts tokenize; features and MASK as `qwen3_8b`.
    """
    where = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device)
    tokenizer = smollm2_135m().tokenizer
    config = Qwen3Config(**QWEN3_8B_SHAPES, attn_implementation="sdpa")
    with torch.random.fork_rng(devices=[]), torch.device(where):  # init draws from the global RNG
        model = AutoModelForCausalLM.from_config(config, dtype=parse_dtype(dtype, key="target.dtype"))
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return Target(
        model, tokenizer, layer_ids=[1, 9, 17, 25, 33], mask_token_id=151_669, name="qwen3_8b_random"
    )


def tiny_random(
    num_layers: int = 6,
    hidden_size: int = 64,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    num_feature_layers: int = 2,
    layer_ids: list[int] | None = None,
    with_mask_token: bool = True,
    seed: int = 0,
    tie_word_embeddings: bool = False,
    max_position_embeddings: int = 4096,
    init_std: float = 0.2,
) -> Target:
    """A random-weight Llama with the byte-level `tiny_tokenizer()`, for tests and smoke runs (fp32).

    259 token rows, plus one spare row used as `mask_token_id` when `with_mask_token`. The weights depend
    only on the arguments (a local generator; the global RNG is left alone). `init_std` is far above HF's
    0.02 so the logits have clear argmaxes: near-ties would make exact-decoding tests flaky.
    """
    tokenizer = tiny_tokenizer()
    rows = len(tokenizer) + int(with_mask_token)
    config = LlamaConfig(
        vocab_size=rows,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        intermediate_size=intermediate_size,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=tie_word_embeddings,
        initializer_range=init_std,
        bos_token_id=tokenizer.convert_tokens_to_ids("<|im_start|>"),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        attn_implementation="sdpa",
    )
    with torch.random.fork_rng(devices=[]):  # from_config's own init draws from the global RNG
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    # Our own init from a local generator, in a fixed order: the weights do not depend on HF's init code.
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, param in sorted(model.named_parameters()):
            if param.dim() >= 2:
                param.copy_(torch.randn(param.shape, generator=gen) * init_std)
            else:
                param.fill_(1.0)  # RMSNorm gains
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    name = (
        f"tiny_random-seed{seed}-L{num_layers}-H{hidden_size}-A{num_heads}kv{num_kv_heads}"
        f"-I{intermediate_size}-V{rows}-std{init_std:g}" + ("-tied" if tie_word_embeddings else "")
    )
    return Target(
        model, tokenizer, layer_ids, num_feature_layers, rows - 1 if with_mask_token else None, name
    )
