"""Batched speculative decoding for evaluation: many prompts at once, each row at its own length.

Rows advance by different amounts each cycle (ragged acceptance), so every row keeps its own length in the
target's and the drafter's caches: a cycle writes each row's verified block at that row's length, and a
rejection rolls back only that row (its length is simply not advanced past the accepted tokens). Rows join
(one prompt's prefill) and leave (EOS or budget) between cycles, so the batch stays full while prompts remain.

Under greedy choices each row's output equals batch-1 decoding (`specauf.decoding`) token for token
(tests/test_batched.py); above temperature 0 each row is speculative sampling as in `specauf.sampling`, with
one generator for the whole batch (so a row's samples differ from batch 1's, not its distribution). With no
drafter it is the batched autoregressive baseline, one token per row per cycle.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from transformers import Cache
from transformers.cache_utils import StaticLayer

from specauf.decoding import DecodeResult, SpeculativeDecoder, _sync, as_ids
from specauf.sampling import rejection_sample, sample

KV = list[tuple[Tensor, Tensor]]


class RowCache:
    """Keys and values [b, heads, max_length, head_dim] per layer, one independent row per sequence.

    Row r holds its positions at the same slots (slot = position); entries past a row's length are stale and
    masked by the caller. Rows are added by `join` (prompt prefixes) and removed by `keep`.
    """

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.kv: KV = []

    @property
    def rows(self) -> int:
        return self.kv[0][0].shape[0] if self.kv else 0

    def join(self, prefixes: Sequence[KV]) -> None:
        """Append one row per prefix (per layer, keys/values [1, heads, P, head_dim])."""
        new = []
        for layer in zip(*prefixes, strict=True):
            k0, v0 = layer[0]
            k = k0.new_zeros(len(layer), k0.shape[1], self.max_length, k0.shape[3])
            v = v0.new_zeros(len(layer), v0.shape[1], self.max_length, v0.shape[3])
            for i, (pk, pv) in enumerate(layer):
                k[i, :, : pk.shape[2]] = pk[0]
                v[i, :, : pv.shape[2]] = pv[0]
            new.append((k, v))
        self.extend(new)

    def extend(self, kv: KV) -> None:
        """Append the rows of `kv` (per layer, [n, heads, max_length, head_dim])."""
        if not self.kv:
            self.kv = list(kv)
        else:
            self.kv = [
                (torch.cat([k, nk]), torch.cat([v, nv])) for (k, v), (nk, nv) in zip(self.kv, kv, strict=True)
            ]

    def keep(self, rows: Tensor) -> None:
        """Keep only `rows` (indices into the batch), in that order."""
        self.kv = [(k.index_select(0, rows), v.index_select(0, rows)) for k, v in self.kv]

    def write(self, layer: int, slots: Tensor, keys: Tensor, values: Tensor) -> None:
        """Write keys/values [b, heads, q, head_dim] of every row at its own `slots` [b, q]."""
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


class BatchedSpeculativeDecoder(SpeculativeDecoder):
    """Speculative decoding of up to `batch_size` prompts at once (the knobs of `SpeculativeDecoder`, whose
    batch-1 `generate` it keeps; always eager).

    `generate_many(prompts, max_new_tokens)` returns one `DecodeResult` per prompt, in order. Each row's
    `decode_seconds` is its share of the batched cycles it took part in (a cycle's time divided among its
    rows), so the sum over rows is the wall time and decoded tokens / that sum is the batch's throughput.
    Targets with only full-attention layers (a sliding-window ring buffer cannot hold ragged rows).
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
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        super().__init__(target, drafter, block_size, temperature, top_p, seed, compile=False, top_k=top_k)
        self.batch_size = int(batch_size)

    def _draft(self, rows: RowCache, anchors: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor | None]:
        visible = torch.arange(rows.max_length, device=anchors.device)[None] < lengths[:, None]
        target = self.target
        if self.temperature == 0.0:
            return self.drafter.draft(
                anchors, lengths, rows.kv, target.embed, target.lm_head_weight, context_mask=visible
            ), None
        return self.drafter.draft(
            anchors,
            lengths,
            rows.kv,
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

    def _accept(
        self, drafts: Tensor | None, logits: Tensor, draft_logits: Tensor | None
    ) -> tuple[list[list[int]], Tensor, Tensor]:
        """Per row: the emitted tokens c_0..c_a (host), a [b] and the next anchors [b] (device)."""
        m = self.num_drafted
        b = logits.shape[0]
        if self.temperature == 0.0 or m == 0:
            choices = self._choose(logits)  # [b, m + 1]
            if m == 0:
                accepted = torch.zeros(b, dtype=torch.long, device=logits.device)
            else:
                accepted = (drafts == choices[:, :m]).long().cumprod(dim=1).sum(dim=1)
            host = torch.cat([accepted[:, None], choices], dim=1).tolist()
            emitted = [row[1 : row[0] + 2] for row in host]
            return emitted, accepted, choices.gather(1, accepted[:, None])[:, 0]
        accepted, token = rejection_sample(
            drafts, self._probs(logits), self._probs(draft_logits), self.generator
        )
        token = token.to(drafts.dtype)
        host = torch.cat([drafts, accepted[:, None], token[:, None]], dim=1).tolist()
        emitted = [[*row[: row[m]], row[m + 1]] for row in host]
        return emitted, accepted, token

    @torch.no_grad()
    def generate_many(
        self,
        prompts: Sequence[Sequence[int] | Tensor],
        max_new_tokens: int,
        eos_ids: Sequence[int] | None = None,
    ) -> list[DecodeResult]:
        """Decode every prompt up to `max_new_tokens` new tokens (stopping after an EOS), `batch_size` at once."""
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        target = self.target
        device = target.device
        eos = set(target.eos_token_ids if eos_ids is None else (int(i) for i in eos_ids))
        ids = [as_ids(p, device) for p in prompts]
        limit = getattr(target.config.get_text_config(), "max_position_embeddings", None)
        longest = max((x.shape[1] for x in ids), default=0)
        if limit and longest + max_new_tokens > limit:
            raise ValueError(
                f"a {longest}-token prompt + {max_new_tokens} new tokens exceed the target's context of "
                f"{limit} positions. Fix: shorten the prompt or pass max_new_tokens <= {max(limit - longest, 0)}"
            )
        m = self.num_drafted
        size = longest + max_new_tokens + m + 1
        target_rows, draft_rows = RowCache(size), RowCache(size)
        cache = _TargetRows(target_rows, target.num_layers)
        results = [DecodeResult() for _ in ids]
        queue = deque(range(len(ids)))
        active: list[int] = []  # prompt index of each row
        anchors = lengths = drafts = draft_logits = None
        while queue or active:
            if queue and len(active) < self.batch_size:
                joined = self._join(ids, queue, results, eos, max_new_tokens, target_rows, draft_rows)
                if joined is not None:
                    rows, new_anchors, new_lengths, new_drafts, new_logits = joined
                    active += rows
                    anchors = new_anchors if anchors is None else torch.cat([anchors, new_anchors])
                    lengths = new_lengths if lengths is None else torch.cat([lengths, new_lengths])
                    if m > 0:
                        drafts = new_drafts if drafts is None else torch.cat([drafts, new_drafts])
                        if new_logits is not None:
                            draft_logits = (
                                new_logits if draft_logits is None else torch.cat([draft_logits, new_logits])
                            )
                if not active:
                    continue
            _sync(device)
            start = time.perf_counter()
            block = (
                anchors[:, None] if m == 0 else torch.cat([anchors[:, None], drafts.to(anchors.dtype)], dim=1)
            )
            logits, features = self._verify(block, lengths, cache)
            emitted, accepted, anchors = self._accept(None if m == 0 else block[:, 1:], logits, draft_logits)
            del logits
            if self.drafter is not None:
                slots = lengths[:, None] + torch.arange(block.shape[1], device=device)
                for i, (k, v) in enumerate(self.drafter.context_kv(features, slots)):
                    draft_rows.write(i, slots, k, v)
            lengths = lengths + accepted + 1
            keep = []
            for row, (index, tokens) in enumerate(zip(active, emitted, strict=True)):
                result = results[index]
                tokens = tokens[: max_new_tokens - len(result.tokens)]
                stop = next((j for j, t in enumerate(tokens) if t in eos), None)
                if stop is not None:
                    tokens = tokens[: stop + 1]
                result.tokens.extend(tokens)
                result.accepted.append(len(tokens) - 1)
                if stop is None and len(result.tokens) < max_new_tokens:
                    keep.append(row)
            if len(keep) < len(active):
                rows = torch.tensor(keep, dtype=torch.long, device=device)
                target_rows.keep(rows)
                draft_rows.keep(rows)
                anchors, lengths = anchors[rows], lengths[rows]
            if self.drafter is not None and keep:
                drafts, draft_logits = self._draft(draft_rows, anchors, lengths)
            _sync(device)
            share = (time.perf_counter() - start) / len(active)
            for index in active:
                results[index].decode_seconds += share
            active = [active[row] for row in keep]
            if not active:
                anchors = lengths = drafts = draft_logits = None
                target_rows.kv, draft_rows.kv = [], []
        return results

    def _join(
        self,
        ids: list[Tensor],
        queue: deque[int],
        results: list[DecodeResult],
        eos: set[int],
        max_new_tokens: int,
        target_rows: RowCache,
        draft_rows: RowCache,
    ) -> tuple[list[int], Tensor, Tensor, Tensor | None, Tensor | None] | None:
        """Prefill queued prompts (one at a time, as batch 1 does) until the batch is full; append their rows.

        Returns (their prompt indices, anchors, lengths, first drafts, draft logits), or None if every
        prefilled prompt already ended at its first token.
        """
        target = self.target
        device = target.device
        rows: list[int] = []
        anchors, lengths, target_kv, features = [], [], [], []
        while queue and target_rows.rows + len(rows) < self.batch_size:
            index = queue.popleft()
            _sync(device)
            start = time.perf_counter()
            logits, feats, cache = target.step(ids[index], target.new_cache(), logits_to_keep=1)
            anchor = self._choose(logits[0, -1:])
            first = int(anchor.item())
            result = results[index]
            result.tokens.append(first)
            result.prefill_seconds = time.perf_counter() - start
            if first in eos or max_new_tokens == 1:
                continue
            rows.append(index)
            anchors.append(anchor)
            lengths.append(ids[index].shape[1])
            target_kv.append(_prefix_kv(cache))
            features.append(feats)
        if not rows:
            return None
        _sync(device)
        start = time.perf_counter()
        target_rows.join(target_kv)
        anchors_t = torch.cat(anchors)
        lengths_t = torch.tensor(lengths, dtype=torch.long, device=device)
        drafts = draft_logits = None
        if self.drafter is not None:
            new_rows = RowCache(draft_rows.max_length)
            new_rows.join(
                [self.drafter.context_kv(f, torch.arange(f.shape[1], device=device)[None]) for f in features]
            )
            drafts, draft_logits = self._draft(new_rows, anchors_t, lengths_t)
            draft_rows.extend(new_rows.kv)
        _sync(device)
        share = (time.perf_counter() - start) / len(rows)
        for index in rows:
            results[index].decode_seconds += share
        return rows, anchors_t, lengths_t, drafts, draft_logits
