"""The frozen target LM wrapper: its context features, embedding and head, and the cached decoding step.

The drafter borrows the target's token embedding and LM head and reads the hidden states of a few of its
layers (docs/method.md §2); the decoder uses it to verify drafted blocks (§6).
"""

from __future__ import annotations

import hashlib
import inspect
import logging
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import torch
from torch import Tensor
from transformers import DynamicCache, PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase
from transformers.cache_utils import StaticLayer

from specauf.errors import ConfigError
from specauf.target.cache import StaticKVCache

log = logging.getLogger(__name__)


def default_layer_ids(num_layers: int, n: int = 5) -> list[int]:
    """`n` layer indices spread evenly from layer 1 to layer `num_layers - 3` (docs/method.md §2).

    Rounded half up and deduplicated: 36 layers → [1, 9, 17, 25, 33]; 30 → [1, 8, 14, 21, 27]. Models too
    small for that range are clamped into [0, num_layers - 1] (1 layer → [0]; 4 layers → [1]).
    """
    if num_layers < 1 or n < 1:
        raise ConfigError(
            f"need num_layers >= 1 and n >= 1, got num_layers={num_layers}, n={n}. "
            "Fix: set target.num_feature_layers >= 1 (5 is the papers' choice)"
        )
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
        tokenizer: PreTrainedTokenizerBase,
        layer_ids: list[int] | None = None,
        num_feature_layers: int = 5,
        mask_token_id: int | None = None,
        name: str | None = None,
        revision: str | None = None,
    ) -> None:
        super().__init__()
        model.eval()
        model.requires_grad_(False)
        self.model = model
        self.tokenizer = tokenizer
        text_config = model.config.get_text_config()
        self.num_layers: int = int(text_config.num_hidden_layers)
        self.hidden_size: int = int(text_config.hidden_size)
        self.vocab_size: int = int(model.get_input_embeddings().weight.shape[0])
        self.layer_ids: list[int] = self._check_layer_ids(layer_ids, num_feature_layers)
        self.mask_token_id: int | None = self._check_mask_token_id(mask_token_id, tokenizer)
        self.name: str = name or str(getattr(model.config, "_name_or_path", "") or type(model).__name__)
        # transformers renamed the forward's cache argument (`past_key_values` → `cache`, the old name
        # deprecated, to be removed in 5.40): pass whichever this version's model takes.
        forward_args = inspect.signature(type(model).forward).parameters
        self._cache_arg = "cache" if "cache" in forward_args else "past_key_values"
        # Which weights of `name`: a hub revision or a package pin (None: not known).
        self.revision: str | None = revision or getattr(model.config, "_commit_hash", None)

    def _check_layer_ids(self, layer_ids: list[int] | None, num_feature_layers: int) -> list[int]:
        if layer_ids is None:
            return default_layer_ids(self.num_layers, num_feature_layers)
        layer_ids = [int(i) for i in layer_ids]
        if not layer_ids:
            raise ConfigError(
                "target.layer_ids is empty: the drafter needs at least one target layer as context. "
                "Fix: list layer indices, or layer_ids=null for the default rule"
            )
        bad = [i for i in layer_ids if not 0 <= i < self.num_layers]
        if bad:
            raise ConfigError(
                f"target.layer_ids {bad} out of range for a target with {self.num_layers} layers "
                f"(valid: 0..{self.num_layers - 1}). Fix: use indices in that range, e.g. the default rule's "
                f"{default_layer_ids(self.num_layers, len(layer_ids))}, or layer_ids=null"
            )
        if len(set(layer_ids)) != len(layer_ids):
            raise ConfigError(f"target.layer_ids has duplicates: {layer_ids}. Fix: list each layer once")
        return layer_ids

    def _check_mask_token_id(
        self, mask_token_id: int | None, tokenizer: PreTrainedTokenizerBase
    ) -> int | None:
        if mask_token_id is None:
            return None
        mask_token_id = int(mask_token_id)
        if not 0 <= mask_token_id < self.vocab_size:
            raise ConfigError(
                f"target.mask_token_id {mask_token_id} is outside the target's embedding table "
                f"({self.vocab_size} rows). Fix: pass a spare row id, or mask_token_id=null for a learned mask"
            )
        if mask_token_id < len(tokenizer):
            # Allowed (a rarely used token works), but usually a typo for the first padded row.
            log.warning(
                "mask_token_id %d is a real token of the tokenizer (%d tokens), not a spare row",
                mask_token_id,
                len(tokenizer),
            )
        return mask_token_id

    # --- description -------------------------------------------------------------------------------------

    @property
    def config(self) -> PretrainedConfig:
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
    def chat_template_sha256(self) -> str | None:
        """SHA-256 of the tokenizer's chat template: a drafter trained on one template drafts for that one."""
        template = getattr(self.tokenizer, "chat_template", None)
        if not isinstance(template, str):
            return None
        return hashlib.sha256(template.encode("utf-8")).hexdigest()

    @property
    def serving_mask_token_id(self) -> int | None:
        """The token id a learned mask embedding is served under (docs/method.md §10), or None.

        Engines embed a drafter's masked slots by token id (vLLM replaces every position holding that id with a
        shipped mask embedding), so the id must never occur in real text: the highest special token that is
        not an end, start, padding or unknown token and that the chat template does not write. A spare row
        (`mask_token_id`) is served as itself.
        """
        if self.mask_token_id is not None:
            return self.mask_token_id
        tok = self.tokenizer
        reserved = {getattr(tok, f"{k}_token_id", None) for k in ("eos", "bos", "pad", "unk")}
        reserved.update(self.eos_token_ids)
        template = getattr(tok, "chat_template", None) or ""
        decoder = getattr(tok, "added_tokens_decoder", {}) or {}
        unused = [
            int(i)
            for i, added in decoder.items()
            if getattr(added, "special", False) and int(i) not in reserved and str(added) not in template
        ]
        return max(unused) if unused else None

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
        logits, features = self.forward_cached(input_ids, past_key_values, logits_to_keep, forward=forward)
        if static:
            past_key_values.length += input_ids.shape[1]
        return logits, features, past_key_values

    def forward_cached(
        self,
        input_ids: Tensor,
        cache: Any,
        logits_to_keep: int = 0,
        attention_mask: Tensor | None = None,
        position_ids: Tensor | None = None,
        forward: Callable | None = None,
    ) -> tuple[Tensor, Tensor]:
        """One forward of the LM through `cache` (any transformers Cache): (logits, features).

        The one place that calls the model with a cache, under the argument name this transformers version
        takes. `attention_mask` (a 4D additive mask) and `position_ids` are for callers that place tokens
        themselves (batched decoding, `specauf.batched`).
        """
        extra = {
            k: v
            for k, v in (("attention_mask", attention_mask), ("position_ids", position_ids))
            if v is not None
        }
        out = (forward if forward is not None else self.model)(
            input_ids=input_ids,
            **{self._cache_arg: cache},
            **extra,
            use_cache=True,
            output_hidden_states=True,
            logits_to_keep=logits_to_keep,
        )
        return out.logits, self._select(out.hidden_states)

    def _compiled_forward(self) -> Callable:
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
