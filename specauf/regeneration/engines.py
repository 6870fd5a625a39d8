"""What generates the replies: one small interface, and Hugging Face `generate` behind it (the default).

An engine turns prompts (token ids, already rendered by the chat template) into replies (token ids, the
end-of-turn token left out). It never sees conversations, shards or filters, so every engine regenerates the
same data the same way. Which engine runs is chosen by the `engine` config group (`conf/engine/*.yaml`,
each a `_target_`); `specauf.regeneration.vllm_engine` is the other one.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch
from transformers import GenerationConfig

from specauf.dtypes import dtype_name, parse_dtype
from specauf.errors import ConfigError


@dataclass(frozen=True)
class Sampling:
    """How a reply is drawn: temperature 0 is greedy; top_k 0 and top_p 1 switch those cuts off."""

    temperature: float = 0.7
    top_p: float = 1.0
    top_k: int = 0
    max_new_tokens: int = 4096

    def __post_init__(self) -> None:
        problems = []
        if self.temperature < 0:
            problems.append(f"temperature must be >= 0 (0: greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            problems.append(f"top_p must be in (0, 1], got {self.top_p}")
        if self.top_k < 0:
            problems.append(f"top_k must be >= 0 (0: off), got {self.top_k}")
        if self.max_new_tokens < 1:
            problems.append(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if problems:
            raise ConfigError(
                "; ".join(problems) + ". Fix: pass valid values (defaults: conf/regenerate.yaml)"
            )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Generation:
    """One reply: its tokens (without the end-of-turn token) and whether it ended on one (else: cut)."""

    tokens: list[int]
    finished: bool


class Engine(Protocol):
    """Prompts in, replies out, in the same order; the replies depend only on the arguments and `settings`."""

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling, seed: int) -> list[Generation]:
        """One reply per prompt; `seed` fixes the random draws of this call."""
        ...

    @property
    def settings(self) -> dict[str, Any]:
        """What else decides the replies (engine, device, dtype, batching): recorded, and checked on resume."""
        ...


def derive_seed(*parts: int) -> int:
    """A 63-bit seed from integers (run seed, shard, turn): stable across processes, unlike `hash`."""
    digest = hashlib.sha256(":".join(str(int(p)) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") & 0x7FFF_FFFF_FFFF_FFFF


def split_reply(new_tokens: Sequence[int], eos_ids: set[int]) -> Generation:
    """The reply up to its first end-of-turn token; no such token means it was cut at the limit."""
    for i, token in enumerate(new_tokens):
        if token in eos_ids:
            return Generation([int(t) for t in new_tokens[:i]], finished=True)
    return Generation([int(t) for t in new_tokens], finished=False)


class HFEngine:
    """`model.generate` on the target itself, in batches of left-padded prompts.

    Each call seeds its own RNG from `seed` (the global one is left as it was) and decodes the prompts longest
    first, `batch_size` at a time, so the same prompts, settings and seed give the same replies. A different
    `batch_size` gives different (equally valid) samples: a batch draws its random numbers together.
    """

    def __init__(
        self, target: Any, batch_size: int = 16, device: str = "auto", dtype: str | None = None
    ) -> None:
        from specauf.evaluation import resolve_device  # the one home of device=auto

        if batch_size < 1:
            raise ConfigError(f"engine.batch_size must be >= 1, got {batch_size}")
        self.device = resolve_device(device)
        self.dtype = parse_dtype(
            dtype or ("bfloat16" if self.device.type == "cuda" else "float32"), key="engine.dtype"
        )
        self.batch_size = batch_size
        self.model = target.model.to(device=self.device, dtype=self.dtype)
        self.eos_ids = list(target.eos_token_ids)
        if not self.eos_ids:
            raise ConfigError(
                f"target {target.name} names no end-of-turn token (no eos_token_id in its generation config or "
                "tokenizer), so no reply could ever end. Fix: use a chat model, or set tokenizer.eos_token"
            )
        pad = target.tokenizer.pad_token_id
        self.pad_id = int(pad) if pad is not None else self.eos_ids[0]

    @property
    def settings(self) -> dict[str, Any]:
        return {
            "engine": "hf",
            "batch_size": self.batch_size,
            "device": self.device.type,
            "dtype": dtype_name(self.dtype),
        }

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling, seed: int) -> list[Generation]:
        config = self._generation_config(sampling)
        order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))  # stable: ties keep their order
        out: list[Generation | None] = [None] * len(prompts)
        with self._own_rng(seed), _only(self.model, config), torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                for i, reply in zip(rows, self._batch([prompts[i] for i in rows], config), strict=True):
                    out[i] = reply
        return [g for g in out if g is not None]

    def _batch(self, prompts: list[Sequence[int]], config: GenerationConfig) -> list[Generation]:
        width = max(len(p) for p in prompts)
        ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for row, prompt in enumerate(prompts):  # left padding: every prompt ends where generation starts
            ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
            mask[row, width - len(prompt) :] = 1
        sequences = self.model.generate(
            input_ids=ids.to(self.device), attention_mask=mask.to(self.device), generation_config=config
        )
        eos = set(self.eos_ids)
        return [split_reply(row[width:].tolist(), eos) for row in sequences.cpu()]

    def _generation_config(self, sampling: Sampling) -> GenerationConfig:
        args: dict[str, Any] = {
            "max_new_tokens": sampling.max_new_tokens,
            "eos_token_id": self.eos_ids,
            "pad_token_id": self.pad_id,
            "num_beams": 1,
            "do_sample": sampling.temperature > 0,
        }
        if sampling.temperature > 0:
            args.update(temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k)
        return GenerationConfig(**args)

    @contextlib.contextmanager
    def _own_rng(self, seed: int) -> Iterator[None]:
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            yield


@contextlib.contextmanager
def _only(model: Any, config: GenerationConfig) -> Iterator[None]:
    """Generate with `config` alone: transformers fills every unset field from the model's own generation
    config (Qwen3's ships top_k=20, top_p=0.95), which would quietly change the sampling we record."""
    saved = model.generation_config
    model.generation_config = GenerationConfig(
        eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    try:
        yield
    finally:
        model.generation_config = saved
