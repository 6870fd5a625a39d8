"""Batched speculative decoding for evaluation: many prompts at once, each row at its own length.

Rows advance by different amounts each cycle (ragged acceptance), so every row keeps its own length in the
target's and the drafter's caches: a cycle writes each row's verified block at that row's length, and a
rejection rolls back only that row (its length is simply not advanced past the accepted tokens).

The batch has a fixed number of rows (slots), allocated once per call: a prompt joins a free slot between
cycles (its prefill, alone as at batch 1, copied into that slot) and leaves it at EOS or its budget. A free
slot is still computed, as padding, so every cycle has one shape: on CUDA the whole greedy cycle (verify,
accept, the drafter's context write and the next draft) is captured once as a CUDA graph and replayed. When
no prompt is left to join and at most half the slots are busy, the busy rows move into a batch half as large.

Under greedy choices each row's output equals batch-1 decoding (`specauf.decoding`) token for token
(tests/test_batched.py); above temperature 0 each row is speculative sampling as in `specauf.sampling`, with
one generator for the whole batch (so a row's samples differ from batch 1's, not its distribution). With no
drafter it is the batched autoregressive baseline, one token per row per cycle.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import Cache
from transformers.cache_utils import StaticLayer

from specauf.decoding import DecodeResult, SpeculativeDecoder, _sync, as_ids
from specauf.drafters.fused import eager
from specauf.sampling import rejection_sample, sample

log = logging.getLogger(__name__)

KV = list[tuple[Tensor, Tensor]]


class RowCache:
    """Keys and values [rows, heads, max_length, head_dim] per layer, one independent row per slot.

    A row holds its positions at the same indices (index = position); entries past a row's length are stale and
    masked by the caller. The tensors never move between `allocate` and `keep`, so a CUDA graph can read them.
    """

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.kv: KV = []

    @property
    def rows(self) -> int:
        return self.kv[0][0].shape[0] if self.kv else 0

    def allocate(self, rows: int, like: KV) -> None:
        """Zeros for `rows` slots, shaped per layer like `like`'s keys/values [_, heads, _, head_dim]."""
        self.kv = [
            (k.new_zeros(rows, k.shape[1], self.max_length, k.shape[3]), v.new_zeros(rows, v.shape[1], self.max_length, v.shape[3]))
            for k, v in like
        ]  # fmt: skip

    def write_prefix(self, row: int, prefix: KV) -> None:
        """Put one sequence's keys/values (per layer [1, heads, P, head_dim]) at positions 0..P−1 of `row`."""
        for (k_buf, v_buf), (k, v) in zip(self.kv, prefix, strict=True):
            k_buf[row, :, : k.shape[2]] = k[0]
            v_buf[row, :, : v.shape[2]] = v[0]

    def row(self, row: int) -> KV:
        """A one-row view of `row` (no copy)."""
        return [(k[row : row + 1], v[row : row + 1]) for k, v in self.kv]

    def keep(self, rows: Tensor) -> None:
        """Keep only `rows` (indices), in that order: new tensors (a graph of the old ones is stale)."""
        self.kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.kv]

    def write(self, layer: int, slots: Tensor, keys: Tensor, values: Tensor) -> None:
        """Write keys/values [rows, heads, q, head_dim] of every row at its own `slots` [rows, q]."""
        k_buf, v_buf = self.kv[layer]
        index = slots[:, None, :, None]
        k_buf.scatter_(2, index.expand(-1, k_buf.shape[1], -1, k_buf.shape[3]), keys.to(k_buf.dtype))
        v_buf.scatter_(2, index.expand(-1, v_buf.shape[1], -1, v_buf.shape[3]), values.to(v_buf.dtype))


class _TargetRows(Cache):
    """A transformers Cache over a `RowCache`: each layer's new keys/values go to the slots set in
    `write_slots` (the rows' own positions) instead of one shared position."""

    def __init__(self, rows: RowCache, num_layers: int) -> None:
        # Placeholder layers for the Cache API; keys and values live in `rows`.
        super().__init__(layers=[StaticLayer(rows.max_length) for _ in range(num_layers)])
        self.rows = rows
        self.write_slots: Tensor | None = None

    def update(self, key_states: Tensor, value_states: Tensor, layer_idx: int, *args: Any, **kwargs: Any):
        self.rows.write(layer_idx, self.write_slots, key_states, value_states)
        return self.rows.kv[layer_idx]

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0  # positions and the mask are always passed explicitly


def _prefix_kv(cache: Any) -> KV:
    """Per-layer keys/values of a prefilled transformers DynamicCache."""
    return [(layer.keys, layer.values) for layer in cache.layers]


class _Batch:
    """The device side of one `generate_many` call: both caches and the per-row state, fixed shapes.

    `live[r]` says whether slot r holds a sequence; a free slot sits at length 0 and its outputs are ignored.
    """

    def __init__(self, size: int, num_drafted: int) -> None:
        self.target_rows, self.draft_rows = RowCache(size), RowCache(size)
        self.m = num_drafted
        self.graph: torch.cuda.CUDAGraph | None = None
        self.draft_logits: Tensor | None = None

    def allocate(self, rows: int, target_kv: KV, draft_kv: KV | None, device: torch.device) -> None:
        self.target_rows.allocate(rows, target_kv)
        if draft_kv is not None:
            self.draft_rows.allocate(rows, draft_kv)
        self.anchors = torch.zeros(rows, dtype=torch.long, device=device)
        self.lengths = torch.zeros(rows, dtype=torch.long, device=device)
        self.drafts = torch.zeros(rows, self.m, dtype=torch.long, device=device)
        self.live = torch.zeros(rows, dtype=torch.bool, device=device)

    @property
    def rows(self) -> int:
        return self.target_rows.rows

    def keep(self, rows: Tensor) -> None:
        """Move `rows` into a smaller batch, in that order (the graph of the larger one is dropped)."""
        self.target_rows.keep(rows)
        if self.draft_rows.kv:
            self.draft_rows.keep(rows)
        for name in ("anchors", "lengths", "drafts", "live"):
            setattr(self, name, getattr(self, name).index_select(0, rows))
        if self.draft_logits is not None:
            self.draft_logits = self.draft_logits.index_select(0, rows)
        self.graph = None

    def state(self) -> list[Tensor]:
        return [self.anchors, self.lengths, self.drafts, self.live]


class BatchedSpeculativeDecoder(SpeculativeDecoder):
    """Speculative decoding of up to `batch_size` prompts at once (the knobs of `SpeculativeDecoder`, whose
    batch-1 `generate` it keeps).

    `generate_many(prompts, max_new_tokens)` returns one `DecodeResult` per prompt, in order. Each row's
    `decode_seconds` is its share of the batched cycles it took part in (a cycle's time divided among its busy
    rows), so the sum over rows is the wall time and decoded tokens / that sum is the batch's throughput.
    `compile` (default: on CUDA unless SPECAUF_COMPILE=0) replays the greedy cycle as a CUDA graph; sampling
    runs eagerly. Targets with only full-attention layers (a sliding-window ring buffer cannot hold ragged rows).
    """

    def __init__(
        self,
        target: Any,
        drafter: torch.nn.Module | None,
        batch_size: int,
        block_size: int | None = None,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int = 0,
        top_k: int = 0,
        compile: bool | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(target, drafter, block_size, temperature, top_p, seed, compile=compile, top_k=top_k)
        self.batch_size = int(batch_size)
        # Graph replays: a rejection sampler's generator state would need registering with the graph.
        self.graphs = self.compile and self.temperature == 0.0
        self.graph_cycles = 0  # cycles replayed from a graph (the rest ran eagerly): for benchmarks

    # --- one cycle, on the batch's fixed buffers ---------------------------------------------------------

    def _draft(self, kv: KV, anchors: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        visible = torch.arange(kv[0][0].shape[2], device=anchors.device)[None] < lengths[:, None]
        target = self.target
        if self.temperature == 0.0:
            return self.drafter.draft(
                anchors, lengths, kv, target.embed, target.lm_head_weight, context_mask=visible
            ), None
        return self.drafter.draft(
            anchors,
            lengths,
            kv,
            target.embed,
            target.lm_head_weight,
            context_mask=visible,
            sample=lambda logits: sample(self._probs(logits), self.generator),
        )

    def _verify(self, tokens: Tensor, lengths: Tensor, cache: _TargetRows) -> tuple[Tensor, Tensor]:
        """The target over `tokens` [b, q] at each row's `lengths`: (logits [b, q, V], features [b, q, F])."""
        target = self.target
        slots = lengths[:, None] + torch.arange(tokens.shape[1], device=tokens.device)
        cache.write_slots = slots
        key = torch.arange(cache.rows.max_length, device=tokens.device)
        hidden = key[None, None, :] > slots[:, :, None]  # [b, q, L]: causal, each row from its own length
        mask = torch.zeros(hidden.shape, dtype=target.dtype, device=tokens.device)
        mask = mask.masked_fill(hidden, torch.finfo(target.dtype).min)[:, None]
        return target.forward_cached(tokens, cache, attention_mask=mask, position_ids=slots)

    def _cycle(self, batch: _Batch, cache: _TargetRows) -> Tensor:
        """Verify every row's block, accept, append the drafter's context, draft the next block; the buffers
        are updated in place. Returns one row per slot for the host: greedy `[a, c_0..c_m]`, sampling
        `[d_1..d_m, a, c_a]` (the emitted tokens are c_0..c_a, resp. d_1..d_a then c_a)."""
        m = self.num_drafted
        block = torch.cat([batch.anchors[:, None], batch.drafts], dim=1)
        logits, features = self._verify(block, batch.lengths, cache)
        if self.temperature == 0.0 or m == 0:
            choices = self._choose(logits)  # [b, m + 1]
            accepted = (batch.drafts == choices[:, :m]).long().cumprod(dim=1).sum(dim=1)
            out = torch.cat([accepted[:, None], choices], dim=1)
            anchors = choices.gather(1, accepted[:, None])[:, 0]
        else:
            accepted, anchors = rejection_sample(
                batch.drafts, self._probs(logits), self._probs(batch.draft_logits), self.generator
            )
            anchors = anchors.to(batch.anchors.dtype)
            out = torch.cat([batch.drafts, accepted[:, None], anchors[:, None]], dim=1)
        if self.drafter is not None:
            slots = batch.lengths[:, None] + torch.arange(m + 1, device=block.device)
            for i, (k, v) in enumerate(self.drafter.context_kv(features, slots)):
                batch.draft_rows.write(i, slots, k, v)
        batch.lengths.copy_(torch.where(batch.live, batch.lengths + accepted + 1, 0))
        batch.anchors.copy_(anchors)
        if self.drafter is not None:
            drafts, draft_logits = self._draft(batch.draft_rows.kv, batch.anchors, batch.lengths)
            batch.drafts.copy_(drafts)
            if draft_logits is not None:
                batch.draft_logits.copy_(draft_logits)
        return out

    def _run_cycle(self, batch: _Batch, cache: _TargetRows) -> list[list[int]]:
        if self.graphs and batch.graph is None:
            self._capture(batch, cache)
        if batch.graph is not None:
            batch.graph.replay()
            self.graph_cycles += 1
            return batch.out.tolist()
        return self._cycle(batch, cache).tolist()

    def _capture(self, batch: _Batch, cache: _TargetRows) -> None:
        # Warm-up runs execute (lazy initialisations must happen outside the capture) and advance the state:
        # keep it and put it back. What they wrote to the caches lies past the kept lengths (stale, masked).
        saved = [t.clone() for t in batch.state()]
        try:
            with eager():  # inside a graph, fusing saves no launches; plain ops capture most simply
                stream = torch.cuda.Stream()
                stream.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(stream):
                    for _ in range(2):
                        self._cycle(batch, cache)
                torch.cuda.current_stream().wait_stream(stream)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    batch.out = self._cycle(batch, cache)
            batch.graph = graph
        except RuntimeError as err:  # an op that cannot be captured: run eagerly, still correct
            log.warning("batched decoding without a CUDA graph (capture failed: %s)", err)
            self.graphs = False
        for buffer, value in zip(batch.state(), saved, strict=True):
            buffer.copy_(value)

    # --- the loop ---------------------------------------------------------------------------------------

    @torch.no_grad()
    def generate_many(
        self,
        prompts: Sequence[Sequence[int] | Tensor],
        max_new_tokens: int | Sequence[int],
        eos_ids: Sequence[int] | None = None,
        on_finish: Callable[[int], None] | None = None,
    ) -> list[DecodeResult]:
        """Decode every prompt up to its `max_new_tokens` (one for all, or one per prompt) new tokens,
        stopping after an EOS, `batch_size` at once. `on_finish(i)` is called when prompt i is done."""
        budgets = (
            [int(max_new_tokens)] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
        )
        if len(budgets) != len(prompts):
            raise ValueError(
                f"{len(budgets)} budgets for {len(prompts)} prompts: give one, or one per prompt"
            )
        if any(b < 1 for b in budgets):
            raise ValueError(f"max_new_tokens must be >= 1, got {min(budgets)}")
        target = self.target
        device = target.device
        eos = set(target.eos_token_ids if eos_ids is None else (int(i) for i in eos_ids))
        ids = [as_ids(p, device) for p in prompts]
        limit = getattr(target.config.get_text_config(), "max_position_embeddings", None)
        need = [x.shape[1] + b for x, b in zip(ids, budgets, strict=True)]
        longest = max(range(len(ids)), key=need.__getitem__, default=None)
        if limit and longest is not None and need[longest] > limit:
            length = ids[longest].shape[1]
            raise ValueError(
                f"a {length}-token prompt + {budgets[longest]} new tokens exceed the target's context of "
                f"{limit} positions. Fix: shorten the prompt or pass max_new_tokens <= {max(limit - length, 0)}"
            )
        results = [DecodeResult() for _ in ids]
        if not ids:
            return results
        batch = _Batch(max(need) + self.num_drafted + 1, self.num_drafted)
        cache = _TargetRows(batch.target_rows, target.num_layers)
        queue = deque(range(len(ids)))
        slots: list[int | None] = []  # the prompt in each row (None: free)
        finish = on_finish or (lambda index: None)
        while queue or any(s is not None for s in slots):
            self._fill(batch, slots, ids, queue, results, eos, budgets, finish)
            busy = [r for r, s in enumerate(slots) if s is not None]
            if not busy:
                continue
            if not queue and len(busy) <= batch.rows // 2:
                keep = busy + [r for r, s in enumerate(slots) if s is None]
                keep = keep[: max(1, 1 << (len(busy) - 1).bit_length())]
                batch.keep(torch.tensor(keep, dtype=torch.long, device=device))
                slots = [slots[r] for r in keep]
                busy = list(range(len(busy)))
            _sync(device)
            start = time.perf_counter()
            host = self._run_cycle(batch, cache)
            done = []
            for r in busy:
                index = slots[r]
                result = results[index]
                if self.temperature == 0.0 or self.num_drafted == 0:
                    tokens = host[r][1 : host[r][0] + 2]
                else:
                    a = host[r][self.num_drafted]
                    tokens = [*host[r][:a], host[r][-1]]
                tokens = tokens[: budgets[index] - len(result.tokens)]
                stop = next((j for j, t in enumerate(tokens) if t in eos), None)
                if stop is not None:
                    tokens = tokens[: stop + 1]
                result.tokens.extend(tokens)
                result.accepted.append(len(tokens) - 1)
                if stop is not None or len(result.tokens) >= budgets[index]:
                    done.append(r)
            if done:
                rows = torch.tensor(done, dtype=torch.long, device=device)
                batch.live[rows] = False
                batch.lengths[rows] = 0
            _sync(device)
            share = (time.perf_counter() - start) / len(busy)
            for r in busy:
                results[slots[r]].decode_seconds += share
            for r in done:
                finish(slots[r])
                slots[r] = None
        return results

    def _fill(
        self,
        batch: _Batch,
        slots: list[int | None],
        ids: list[Tensor],
        queue: deque[int],
        results: list[DecodeResult],
        eos: set[int],
        budgets: list[int],
        finish: Callable[[int], None],
    ) -> None:
        """Prefill queued prompts (one at a time, as batch 1 does) into free slots until none is free.

        A prompt that ends at its first token is done without a slot. The first prefill allocates the batch:
        `batch_size` slots, or fewer when fewer prompts are given.
        """
        target, device = self.target, self.target.device
        while queue and (not slots or None in slots):
            index = queue.popleft()
            _sync(device)
            start = time.perf_counter()
            logits, feats, prefilled = target.step(ids[index], target.new_cache(), logits_to_keep=1)
            anchor = self._choose(logits[0, -1:])
            first = int(anchor.item())
            result = results[index]
            result.tokens.append(first)
            result.prefill_seconds = time.perf_counter() - start
            if first in eos or budgets[index] == 1:
                finish(index)
                continue
            _sync(device)
            start = time.perf_counter()
            length = ids[index].shape[1]
            ctx = None
            if self.drafter is not None:
                ctx = self.drafter.context_kv(feats, torch.arange(length, device=device)[None])
            if not slots:
                rows = min(self.batch_size, len(ids))
                batch.allocate(rows, _prefix_kv(prefilled), ctx, device)
                slots.extend([None] * rows)
            r = slots.index(None)
            slots[r] = index
            batch.target_rows.write_prefix(r, _prefix_kv(prefilled))
            batch.anchors[r], batch.lengths[r], batch.live[r] = anchor[0], length, True
            if self.drafter is not None:
                batch.draft_rows.write_prefix(r, ctx)
                drafts, draft_logits = self._draft(batch.draft_rows.row(r), anchor, batch.lengths[r : r + 1])
                batch.drafts[r] = drafts[0]
                if draft_logits is not None:
                    if batch.draft_logits is None:
                        batch.draft_logits = draft_logits.new_zeros(batch.rows, *draft_logits.shape[1:])
                    batch.draft_logits[r] = draft_logits[0]
            _sync(device)
            result.decode_seconds += time.perf_counter() - start
