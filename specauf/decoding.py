"""Speculative decoding with a block drafter, and the autoregressive baseline through the same loop.

The loop and its metrics are docs/method.md §6.

One cycle: the drafter proposes a block from the last committed token (the anchor) and the context features of
the tokens before it; the target verifies `[anchor, d_1..d_m]` in one forward; the longest prefix of drafts
equal to the target's own choices is accepted and the target's choice at the first mismatch (the bonus) is
emitted after it (sampling: rejection sampling, `specauf.sampling`). Under greedy choices the output equals plain greedy decoding token for token (the exactness
contract, tested against `plain_greedy`). With no drafter (or block size 1) the same loop is plain
autoregressive decoding: the baseline speedups are measured against.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from specauf.drafters.fused import compile_enabled, eager
from specauf.sampling import rejection_sample, sample, sampling_probs

log = logging.getLogger(__name__)


@dataclass
class DecodeResult:
    """What one `generate` call produced.

    `tokens` are the new tokens only (an EOS that stopped decoding is kept). `accepted[i]` is how many drafts
    cycle i committed; every cycle also emits one token of the target's own, so it emitted `accepted[i] + 1`.
    The first token comes from the prefill, not from a cycle. Times exclude each other: `prefill_seconds` is
    the prompt pass (and the drafter's context cache), `decode_seconds` all cycles.
    """

    tokens: list[int] = field(default_factory=list)
    accepted: list[int] = field(default_factory=list)
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def num_cycles(self) -> int:
        return len(self.accepted)

    @property
    def num_decoded(self) -> int:
        """Tokens emitted by the cycles (all but the prefill's first token)."""
        return sum(self.accepted) + len(self.accepted)

    @property
    def tau(self) -> float:
        """Mean emitted length per cycle, mean(accepted + 1) (docs/method.md §6); NaN with no cycle."""
        return self.num_decoded / self.num_cycles if self.accepted else float("nan")


def _sync(device: torch.device) -> None:
    # Kernels are asynchronous on CUDA: a clock read without a sync measures the launch, not the work.
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def as_ids(prompt_ids: Sequence[int] | Tensor, device: torch.device) -> Tensor:
    ids = torch.as_tensor(prompt_ids, dtype=torch.long, device=device).reshape(1, -1)
    if ids.shape[1] == 0:
        raise ValueError("prompt_ids is empty: the target needs at least one prompt token")
    return ids


class _DraftState:
    """The drafter's side of decoding, with fixed shapes: its context keys/values in preallocated buffers and
    one step per cycle — append the verified block's keys/values, draft the next block — that on CUDA is
    captured once as a CUDA graph and replayed (`graph=True`), since a drafter's few small layers are
    otherwise launch-bound.

    Every cycle appends the keys/values of the whole verified block at the anchor's position; only the
    accepted rows count, by the context length that masks the rest (stale rows are overwritten next cycle).
    """

    def __init__(
        self,
        drafter: torch.nn.Module,
        target: Any,
        max_length: int,
        block_len: int,
        graph: bool,
        sampler: Any = None,
    ):
        self.drafter, self.embed, self.lm_head = drafter, target.embed, target.lm_head_weight
        self.max_length, self.block_len = max_length, block_len
        # Sampled drafts (`sampler`: logits → tokens) also return their logits, and are drafted eagerly.
        self.sampler, self.graph_enabled = sampler, graph and sampler is None
        self.kv: list[tuple[Tensor, Tensor]] | None = None
        self.graph: torch.cuda.CUDAGraph | None = None

    def prefill(self, features: Tensor) -> None:
        """Write the prompt's context keys/values (positions 0..P−1); allocate the buffers on first use."""
        length = features.shape[1]
        device = features.device
        ctx = self.drafter.context_kv(features, torch.arange(length, device=device)[None])
        if self.kv is None:
            self.kv = [
                (k.new_zeros(1, k.shape[1], self.max_length, k.shape[3]), v.new_zeros(1, v.shape[1], self.max_length, v.shape[3]))
                for k, v in ctx
            ]  # fmt: skip
            self.features = features.new_zeros(1, self.block_len, features.shape[2])
            self.write_pos = torch.zeros(1, dtype=torch.long, device=device)
            self.length = torch.zeros(1, dtype=torch.long, device=device)
            self.anchor = torch.zeros(1, dtype=torch.long, device=device)
            self.offsets = torch.arange(self.block_len, device=device)
            self.key_index = torch.arange(self.max_length, device=device)
        for (k_buf, v_buf), (k, v) in zip(self.kv, ctx, strict=True):
            k_buf[:, :, :length] = k
            v_buf[:, :, :length] = v

    def first(self, anchor: Tensor, length: int) -> tuple[Tensor, Tensor | None]:
        """The first draft after the prefill: nothing verified yet, so the appended block is zeros (stale)."""
        return self.cycle(self.features.new_zeros(self.features.shape), length, length, anchor)

    def cycle(
        self, features: Tensor, write_pos: int, length: int, anchor: Tensor
    ) -> tuple[Tensor, Tensor | None]:
        """Append `features` [1, block_len, F] at `write_pos`, keep `length` context rows, draft from
        `anchor` (at position `length`): the drafts [D] (in the graph's memory until the next cycle) and,
        when sampling, the logits [D, V] they were drawn from."""
        self.features.copy_(features)
        self.write_pos.fill_(write_pos)
        self.length.fill_(length)
        self.anchor.copy_(anchor)
        if self.graph_enabled and self.graph is None:
            self._capture()
        if self.graph is not None:
            self.graph.replay()
            return self.drafts, None
        if self.sampler is None:
            return self._step(), None
        return self._step()

    def _step(self) -> Tensor:
        positions = self.write_pos + self.offsets
        for (k_buf, v_buf), (k, v) in zip(
            self.kv, self.drafter.context_kv(self.features, positions[None]), strict=True
        ):
            k_buf.index_copy_(2, positions, k.to(k_buf.dtype))
            v_buf.index_copy_(2, positions, v.to(v_buf.dtype))
        visible = self.key_index < self.length
        if self.sampler is None:
            return self.drafter.draft(
                self.anchor, self.length, self.kv, self.embed, self.lm_head, context_mask=visible
            )[0]
        tokens, logits = self.drafter.draft(
            self.anchor,
            self.length,
            self.kv,
            self.embed,
            self.lm_head,
            context_mask=visible,
            sample=self.sampler,
        )
        return tokens[0], logits[0]

    def _capture(self) -> None:
        try:
            with eager():  # inside a graph, fusing saves no launches; plain ops capture most simply
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(2):  # warm-up: lazy initialisations happen outside the capture
                        self._step()
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    self.drafts = self._step()
            self.graph = graph
        except RuntimeError as err:  # an op that cannot be captured: draft eagerly, still correct
            log.warning("drafting without a CUDA graph (capture failed: %s)", err)
            self.graph_enabled = False


class SpeculativeDecoder:
    """Batch-1 speculative decoding of `target` with a block `drafter` (docs/method.md §6).

    `drafter=None` or `block_size=1` gives the autoregressive baseline through the same loop (one token per
    cycle). `block_size=None` takes the drafter's own; any other value must equal it (a drafter drafts the
    block layout it was trained on). `temperature=0` is greedy; above 0 it is speculative sampling as the field
    does it (`specauf.sampling`): the drafter samples its drafts from q, the target accepts each with
    probability min(1, p/q) and resamples the first rejected slot from the residual, with temperature,
    `top_k` and nucleus `top_p` applied to both, from a generator seeded with `seed`. The output is then
    distributed as the target's own samples.

    Every cycle verifies a whole block (the anchor and D drafts; the last one's surplus is simply not
    emitted), into a preallocated KV cache: the verify step has one shape, so on CUDA it is compiled and
    replayed as a CUDA graph (`compile`, default on for CUDA unless SPECAUF_COMPILE=0). A small target is
    launch-bound there: a graph replay removes the per-kernel launch cost of its many small kernels.
    """

    def __init__(
        self,
        target: Any,
        drafter: torch.nn.Module | None,
        block_size: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        compile: bool | None = None,
        top_k: int = 0,
    ) -> None:
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}")
        if top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {top_k}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if block_size is not None and block_size < 1:
            raise ValueError(f"block_size must be >= 1 (1 = autoregressive), got {block_size}")
        if drafter is not None and block_size not in (None, 1, drafter.block_size):
            raise ValueError(
                f"block_size={block_size} but the drafter was built for blocks of {drafter.block_size}; "
                "pass block_size=None (the drafter's) or 1 (the autoregressive baseline)"
            )
        self.target = target
        self.drafter = None if block_size == 1 else drafter
        self.block_size = 1 if self.drafter is None else int(self.drafter.block_size)
        # D tokens drafted per cycle: B−1 for same-position drafters (DFlash), B for next-token ones (Domino).
        self.num_drafted = 0 if self.drafter is None else int(self.drafter.num_drafted)
        self.temperature, self.top_p, self.top_k, self.seed = (
            float(temperature),
            float(top_p),
            int(top_k),
            int(seed),
        )
        self.generator = torch.Generator(device=target.device).manual_seed(self.seed)
        if compile is None:
            compile = target.device.type == "cuda" and compile_enabled()
        if compile and target.device.type != "cuda":
            raise ValueError(
                "compile=True replays the verify step as a CUDA graph: it needs the target on CUDA"
            )
        self.compile = bool(compile)
        self._kv_cache, self._draft_state = None, None

    def _caches(self, needed: int) -> tuple[Any, _DraftState | None]:
        """Empty caches with room for `needed` positions, the target's and the drafter's, reused across calls.

        Compiled, their size is a bucket (a power of two, at least 1024), not the exact need: the compiled
        verify step and the captured draft specialise on it, so a new size per prompt would recompile every
        time. Eager, the exact need (attention runs over the whole static cache, masked).
        """
        size = max(1024, 1 << (needed - 1).bit_length()) if self.compile else needed
        state = self._draft_state
        if self.drafter is not None and (state is None or state.max_length < needed):
            sampler = (
                None
                if self.temperature == 0.0
                else (lambda logits: sample(self._probs(logits), self.generator))
            )
            state = self._draft_state = _DraftState(
                self.drafter, self.target, size, self.num_drafted + 1, graph=self.compile, sampler=sampler
            )
        cache = self._kv_cache
        if cache is None or cache.max_length < needed:
            cache = self.target.new_cache(max_length=size)
            if not self.target.cache_is_static(cache):
                return cache, state  # a growing cache (sliding-window models): a fresh one per call
            self._kv_cache = cache
        return self.target.crop_cache(cache, 0), state

    @property
    def max_tau(self) -> int:
        """The largest possible emitted length per cycle: D + 1."""
        return self.num_drafted + 1

    def _probs(self, logits: Tensor) -> Tensor:
        return sampling_probs(logits, self.temperature, self.top_p, self.top_k)

    def _choose(self, logits: Tensor) -> Tensor:
        """The target's own token for each row of logits [n, V]: argmax, or a seeded sample."""
        if self.temperature == 0.0:
            return logits.argmax(dim=-1)
        return sample(self._probs(logits), self.generator)

    def _verify(
        self, block: Tensor, logits: Tensor, draft_logits: Tensor | None
    ) -> tuple[int, list[int], Tensor]:
        """Accept drafts of `block` = [anchor, d_1..d_m] against the target's `logits` [m + 1, V].

        Greedy: the longest prefix equal to the target's argmax, then its argmax (c_i = the target's token).
        Sampling: rejection sampling against the draft distributions (`specauf.sampling`). Returns (a, the
        emitted tokens c_0..c_a, c_a as a [1] tensor); one host sync either way.
        """
        m = block.shape[0] - 1
        if self.temperature == 0.0 or m == 0:
            choices = self._choose(logits)  # c_i: the target's token at position p + i + 1
            host = (torch.cat([block[1:], choices]) if m > 0 else choices).tolist()
            d, c = host[:m], host[m:]
            a = 0
            while a < m and d[a] == c[a]:
                a += 1
            return a, c[: a + 1], choices[a : a + 1]
        accepted, token = rejection_sample(
            block[1:], self._probs(logits), self._probs(draft_logits), self.generator
        )
        host = torch.cat([block[1:], accepted[None], token[None].to(block.dtype)]).tolist()
        a = host[m]
        return a, [*host[:a], host[m + 1]], token.view(1).to(block.dtype)

    @torch.no_grad()
    def generate(
        self, prompt_ids: Sequence[int] | Tensor, max_new_tokens: int, eos_ids: Sequence[int] | None = None
    ) -> DecodeResult:
        """Decode up to `max_new_tokens` new tokens after `prompt_ids`, stopping after an EOS.

        `eos_ids=None` uses the target's (`target.eos_token_ids`); pass `[]` to never stop early.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        target = self.target
        device = target.device
        eos = set(target.eos_token_ids if eos_ids is None else (int(i) for i in eos_ids))
        ids = as_ids(prompt_ids, device)
        prompt_len = ids.shape[1]
        limit = getattr(target.config.get_text_config(), "max_position_embeddings", None)
        if limit and prompt_len + max_new_tokens > limit:
            raise ValueError(
                f"a {prompt_len}-token prompt + {max_new_tokens} new tokens exceed the target's context of "
                f"{limit} positions (its outputs past them are not defined). Fix: shorten the prompt or pass "
                f"max_new_tokens <= {max(limit - prompt_len, 0)}"
            )

        _sync(device)
        start = time.perf_counter()
        # Room for the prompt, the budget and one whole block past it (the last block's surplus).
        cache, state = self._caches(prompt_len + max_new_tokens + self.num_drafted + 1)
        compiled = self.compile and target.cache_is_static(cache)
        # Logits of the last prompt position only (a long prompt × vocabulary is large); features of all.
        logits, features, cache = target.step(ids, cache, logits_to_keep=1)
        anchor = self._choose(logits[0, -1:])  # [1], stays on the device
        if state is not None:
            state.prefill(features)
        first = int(anchor.item())
        _sync(device)
        result = DecodeResult(tokens=[first], prefill_seconds=time.perf_counter() - start)
        if first in eos or max_new_tokens == 1:
            return result

        m = self.num_drafted
        p = prompt_len  # position of the anchor; the target cache and the drafter's hold positions < p
        start = time.perf_counter()
        drafts, draft_logits = state.first(anchor, p) if state is not None else (None, None)
        while True:
            block = torch.cat([anchor, drafts.to(anchor.dtype)]) if m > 0 else anchor
            logits, features, cache = target.step(block[None], cache, compiled=compiled)
            # a accepted drafts, the emitted tokens c_0..c_a, and c_a (the next anchor) on the device.
            a, c, anchor = self._verify(block, logits[0], draft_logits)
            del logits  # in the CUDA graph's memory when compiled: the next replay overwrites it
            # Never more than the budget (the same tokens a cycle that drafted only up to the budget would emit).
            emitted = c[: max_new_tokens - len(result.tokens)]
            stop = next((i for i, t in enumerate(emitted) if t in eos), None)
            if stop is not None:
                emitted = emitted[: stop + 1]  # keep the EOS, drop what follows (it would not be decoded)
            result.tokens.extend(emitted)
            result.accepted.append(len(emitted) - 1)
            if stop is not None or len(result.tokens) >= max_new_tokens:
                break
            # Keep the anchor and the accepted drafts; the bonus c_a is the next anchor, not yet in the cache.
            target.crop_cache(cache, p + a + 1)
            if state is not None:
                drafts, draft_logits = state.cycle(features, p, p + a + 1, anchor)
            p += a + 1
        _sync(device)
        result.decode_seconds = time.perf_counter() - start
        return result


@torch.no_grad()
def plain_greedy(
    target: Any, prompt_ids: Sequence[int] | Tensor, max_new_tokens: int, eos_ids: Sequence[int] | None = None
) -> list[int]:
    """The reference: greedy decoding one token at a time with the KV cache, no drafter, no shared loop code.

    Stops after an EOS (kept) or `max_new_tokens`; `eos_ids=None` uses the target's.
    """
    eos = set(target.eos_token_ids if eos_ids is None else (int(i) for i in eos_ids))
    ids = as_ids(prompt_ids, target.device)
    logits, _, cache = target.step(ids, None, logits_to_keep=1)
    out: list[int] = []
    while True:
        token = int(logits[0, -1].argmax())
        out.append(token)
        if token in eos or len(out) >= max_new_tokens:
            return out
        logits, _, cache = target.step(torch.tensor([[token]], device=target.device), cache)
