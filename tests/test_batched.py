"""Batched speculative decoding (`specauf.batched`): each row equals batch-1 decoding, token for token.

fp32 on CPU. Rows accept different numbers of drafts each cycle (ragged), leave at EOS or the budget, and new
prompts join mid-run (batch smaller than the prompt count). An oracle drafter that finds its row's script by
the row's context cache checks, at every cycle of every row, the anchor, the visible context and the cached
keys/values, so a row reading another row's cache, or a stale slot, fails loudly.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

from specauf.batched import BatchedSpeculativeDecoder, RowCache
from specauf.decoding import SpeculativeDecoder, plain_greedy
from specauf.drafters.dflash import DFlashDrafter
from specauf.target import Target, tiny_random
from tests.test_decoding import assert_matches, chat_ids, exact_joint, small_target, soft_drafter

NEW = 24


@pytest.fixture(scope="module")
def target() -> Target:
    return tiny_random(num_layers=4, hidden_size=64, num_feature_layers=2, seed=0)


@pytest.fixture(scope="module")
def prompts(target: Target) -> list[list[int]]:
    texts = ["Hi!", "Write a haiku about the sea, please.", "2+2?", "Name three colours and a fruit."]
    return [chat_ids(target, t) for t in texts] + [[7, 3, 200], [5, 6, 7, 8, 9, 10, 11, 12, 13]]


@pytest.fixture(scope="module")
def references(target: Target, prompts: list[list[int]]) -> list[list[int]]:
    return [plain_greedy(target, p, NEW, eos_ids=[]) for p in prompts]


class RowOracle(DFlashDrafter):
    """Drafts each row's greedy continuation by position, corrupted where `corrupt(row script, position)`.

    Which script a row decodes is found from its context cache: the keys at positions < p must equal the
    drafter's own keys of that script's target features (exactly one script matches, else the cache is wrong).
    """

    def setup(self, target: Target, scripts: list[list[int]], corrupt=lambda s, q: False) -> RowOracle:
        self.scripts, self.corrupt = scripts, corrupt
        self.keys = []
        for script in scripts:
            feats = target.features(torch.tensor([script]))
            self.keys.append(self.context_kv(feats, torch.arange(len(script))[None])[0][0][0])
        self.rows_seen = Counter()
        return self

    def draft(self, anchor_ids, anchor_pos, ctx_kv, embed, lm_head_weight, context_mask=None, sample=None):
        out = []
        keys = ctx_kv[0][0]
        for row in range(anchor_ids.shape[0]):
            p, anchor = int(anchor_pos[row]), int(anchor_ids[row])
            if p == 0:  # a free slot (no prompt, padding): its drafts are never read
                out.append([0] * self.num_drafted)
                continue
            visible = context_mask if context_mask.dim() == 1 else context_mask[row]
            assert visible[:p].all() and not visible[p:].any(), (
                "context must be exactly the positions < anchor"
            )
            matches = [
                i
                for i, ref in enumerate(self.keys)
                if ref.shape[1] > p and torch.allclose(keys[row, :, :p], ref[:, :p], rtol=1e-4, atol=1e-4)
            ]
            if not matches and any(
                ref.shape[1] <= p and torch.allclose(keys[row, :, : ref.shape[1]], ref, rtol=1e-4, atol=1e-4)
                for ref in self.keys
            ):  # a row past its whole script: it ended this cycle, its drafts are never read
                out.append([0] * self.num_drafted)
                continue
            assert len(matches) == 1, f"row {row} at position {p}: its cache matches scripts {matches}"
            script = self.scripts[matches[0]]
            assert anchor == script[p], f"row {row}: anchor at {p} is {anchor}, committed is {script[p]}"
            self.rows_seen[matches[0]] += 1
            drafts = []
            for j in range(self.num_drafted):
                q = p + 1 + j
                tok = script[q] if q < len(script) else 0
                drafts.append((tok + 1) % lm_head_weight.shape[0] if self.corrupt(matches[0], q) else tok)
            out.append(drafts)
        tokens = torch.tensor(out, device=anchor_ids.device)
        if sample is None:
            return tokens
        logits = torch.full((*tokens.shape, lm_head_weight.shape[0]), float("-inf"))
        return tokens, logits.scatter(-1, tokens[..., None], 0.0)


def oracle(target: Target, block_size: int, prompts, references, corrupt) -> RowOracle:
    drafter = RowOracle.from_target(target, num_layers=1, block_size=block_size)
    return drafter.setup(target, [p + r for p, r in zip(prompts, references, strict=True)], corrupt)


def random_drafter(target: Target, kind: str, block_size: int, label_offset: int = 0) -> torch.nn.Module:
    return soft_drafter(target, kind, block_size, label_offset, seed=block_size + 10 * label_offset)


@pytest.mark.parametrize("batch_size", [2, 6])
@pytest.mark.parametrize("block_size", [2, 8])
def test_ragged_rows_equal_batch_one(target, prompts, references, block_size, batch_size):
    # Each row's script is corrupted at its own positions: rows accept different counts in the same cycle.
    corrupt = lambda s, q: (q + 3 * s) % 13 == 0  # noqa: E731
    drafter = oracle(target, block_size, prompts, references, corrupt)
    results = BatchedSpeculativeDecoder(target, drafter, batch_size).generate_many(prompts, NEW, eos_ids=[])
    singles = [SpeculativeDecoder(target, drafter).generate(p, NEW, eos_ids=[]) for p in prompts]
    accepted = []
    for result, single, ref in zip(results, singles, references, strict=True):
        assert result.tokens == ref
        assert result.accepted == single.accepted
        accepted += result.accepted
    # full blocks and rejections at several depths
    assert max(accepted) == drafter.num_drafted and len(set(accepted)) >= min(3, drafter.num_drafted + 1)
    assert set(drafter.rows_seen) == set(range(len(prompts)))


@pytest.mark.parametrize("kind,label_offset", [("dflash", 0), ("dflash", 1), ("domino", 1)])
def test_real_drafters_equal_batch_one(target, prompts, kind, label_offset):
    drafter = random_drafter(target, kind, 4, label_offset)
    singles = [SpeculativeDecoder(target, drafter).generate(p, NEW, eos_ids=[]) for p in prompts]
    results = BatchedSpeculativeDecoder(target, drafter, 4).generate_many(prompts, NEW, eos_ids=[])
    for result, single in zip(results, singles, strict=True):
        assert result.tokens == single.tokens
        assert result.accepted == single.accepted


def test_autoregressive_baseline_batched(target, prompts, references):
    decoder = BatchedSpeculativeDecoder(target, None, 3)
    assert decoder.num_drafted == 0 and decoder.max_tau == 1
    for result, ref in zip(decoder.generate_many(prompts, NEW, eos_ids=[]), references, strict=True):
        assert result.tokens == ref
        assert result.accepted == [0] * (NEW - 1)


def test_rows_leave_at_eos_and_new_prompts_join(target, prompts, references):
    # A different EOS inside each reference: rows stop at different cycles and queued prompts take their place.
    eos = sorted({ref[k] for ref in references for k in (6, 11) if ref[k] not in ref[:k]})
    drafter = oracle(target, 4, prompts, references, lambda s, q: q % 3 == 0)
    for batch_size in (1, 2, len(prompts)):
        results = BatchedSpeculativeDecoder(target, drafter, batch_size).generate_many(
            prompts, NEW, eos_ids=eos
        )
        for prompt, result in zip(prompts, results, strict=True):
            assert result.tokens == plain_greedy(target, prompt, NEW, eos_ids=eos)
            assert result.num_decoded == len(result.tokens) - 1
    lengths = {len(r.tokens) for r in results}
    assert len(lengths) > 1  # the rows really did stop at different times


def test_first_token_eos_and_budget_one(target, prompts, references):
    first = references[0][0]
    drafter = random_drafter(target, "dflash", 4)
    decoder = BatchedSpeculativeDecoder(target, drafter, 3)
    results = decoder.generate_many(prompts, NEW, eos_ids=[first])
    for prompt, result in zip(prompts, results, strict=True):
        assert result.tokens == plain_greedy(target, prompt, NEW, eos_ids=[first])
    assert results[0].tokens == [first] and results[0].accepted == []
    assert [r.tokens for r in decoder.generate_many(prompts, 1, eos_ids=[])] == [[r[0]] for r in references]


def test_budget_per_prompt_and_finish_callback(target, prompts, references):
    # One queue for prompts with different budgets (the suite's benchmarks differ): each row stops at its own.
    budgets = [NEW, 3, 11, 1, 17, 6]
    finished = []
    drafter = random_drafter(target, "dflash", 4)
    results = BatchedSpeculativeDecoder(target, drafter, 3).generate_many(
        prompts, budgets, eos_ids=[], on_finish=finished.append
    )
    for result, ref, budget in zip(results, references, budgets, strict=True):
        assert result.tokens == ref[:budget]
    assert sorted(finished) == list(range(len(prompts)))
    with pytest.raises(ValueError, match="budgets"):
        BatchedSpeculativeDecoder(target, None, 2).generate_many(prompts, [4, 4])


def test_time_shares_add_up(target, prompts):
    decoder = BatchedSpeculativeDecoder(target, random_drafter(target, "dflash", 4), 3)
    results = decoder.generate_many(prompts, 8, eos_ids=[])
    assert all(r.decode_seconds > 0 and r.prefill_seconds > 0 for r in results)


def test_row_cache_prefix_write_keep():
    rows = RowCache(6)
    kv = lambda n, fill: [(torch.full((1, 2, n, 3), fill), torch.full((1, 2, n, 3), -fill))]  # noqa: E731
    rows.allocate(3, kv(1, 0.0))
    assert rows.rows == 3 and rows.kv[0][0].shape == (3, 2, 6, 3)
    address = rows.kv[0][0].data_ptr()
    for r, (n, fill) in enumerate([(2, 1.0), (4, 2.0), (1, 3.0)]):
        rows.write_prefix(r, kv(n, fill))
    rows.write(
        0, torch.tensor([[2, 3], [4, 5], [1, 2]]), torch.full((3, 2, 2, 3), 9.0), torch.zeros(3, 2, 2, 3)
    )
    k = rows.kv[0][0][:, 0, :, 0]
    assert k.tolist() == [[1, 1, 9, 9, 0, 0], [2, 2, 2, 2, 9, 9], [3, 9, 9, 0, 0, 0]]
    assert rows.kv[0][0].data_ptr() == address  # written in place: a captured graph still reads them
    assert rows.row(1)[0][1][0, 0, :, 0].tolist() == [-2, -2, -2, -2, 0, 0]
    rows.keep(torch.tensor([2, 0]))
    assert rows.kv[0][0][:, 0, :, 0].tolist() == [[3, 9, 9, 0, 0, 0], [1, 1, 9, 9, 0, 0]]


def test_bad_arguments(target):
    with pytest.raises(ValueError, match="batch_size"):
        BatchedSpeculativeDecoder(target, None, 0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        BatchedSpeculativeDecoder(target, None, 2).generate_many([[1, 2]], 0)
    limit = target.config.max_position_embeddings
    with pytest.raises(ValueError, match="context"):
        BatchedSpeculativeDecoder(target, None, 2).generate_many([[1, 2], [1] * (limit - 4)], 8)


@pytest.mark.parametrize("kind", ["dflash", "domino"])
def test_batched_sampling_matches_the_target(kind):
    # Speculative sampling row by row in one batch: 1,500 rows of one prompt, drafts from a soft drafter's q.
    small = small_target()
    drafter = soft_drafter(small, kind)
    prompt, samples = [1, 2, 3, 4, 5], 1500
    decoder = BatchedSpeculativeDecoder(small, drafter, 500, temperature=1.0, top_k=3, seed=0)
    results = decoder.generate_many([prompt] * samples, 3, eos_ids=[])
    counts = Counter(tuple(r.tokens) for r in results)
    assert sum(r.accepted[0] for r in results) > 0.04 * samples  # drafts were accepted, not only resampled
    assert_matches(counts, exact_joint(small, prompt, 3, temperature=1.0, top_p=1.0, top_k=3), samples)
