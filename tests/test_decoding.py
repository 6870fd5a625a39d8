"""The exactness contract (docs/method.md §6): speculative greedy output == plain greedy, token for token.

fp32 on CPU with torch's default backends. Drafters: an untrained DFlash (almost never accepted), a scripted
"oracle" that proposes the target's own greedy continuation (long accept runs, cache cropping at full
acceptance), a noisy oracle (partial runs) and an anti-oracle (never accepted). The scripted drafters also check
the decoder's bookkeeping from inside: the anchor, its position, and that the drafter's context cache holds
exactly the committed tokens before the anchor.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import pytest
import torch
from torch.testing import assert_close

from specauf.decoding import SpeculativeDecoder, plain_greedy
from specauf.drafters.dflash import DFlashDrafter
from specauf.drafters.domino import DominoDrafter
from specauf.evaluation.mismatch import describe_mismatch, first_divergence, top2_gap
from specauf.sampling import sampling_probs, top_p_filter
from specauf.target import Target, smollm2_135m, tiny_random

NEW = 32  # new tokens per exactness run: several cycles even at B = 16


@pytest.fixture(scope="module")
def target() -> Target:
    return tiny_random(num_layers=4, hidden_size=64, num_feature_layers=2, seed=0)


def chat_ids(target: Target, text: str) -> list[int]:
    messages = [{"role": "user", "content": text}]
    prompt = target.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return target.tokenizer(prompt, add_special_tokens=False).input_ids


@pytest.fixture(scope="module")
def prompts(target: Target) -> list[list[int]]:
    return [chat_ids(target, "Hi!"), chat_ids(target, "Write a haiku about the sea, please."), [7, 3, 200]]


@pytest.fixture(scope="module")
def references(target: Target, prompts: list[list[int]]) -> list[list[int]]:
    return [plain_greedy(target, p, NEW, eos_ids=[]) for p in prompts]


class ScriptedDrafter(DFlashDrafter):
    """Drafts the tokens of a fixed script by absolute position: script[p + 1 + j] for anchor position p.

    With the script = prompt + greedy output this is an oracle (every draft accepted); `corrupt(position)`
    makes chosen drafts wrong. `check` asserts, at every cycle, that the anchor is the committed token at p
    and that the context cache equals the drafter's keys/values of the target features of script[:p].
    """

    script: list[int]
    corrupt: Callable[[int], bool]
    check: Target | None

    def setup(self, script: list[int], corrupt=lambda q: False, check: Target | None = None):
        self.script, self.corrupt, self.check = script, corrupt, check
        self.draft_calls = 0
        return self

    def draft(self, anchor_ids, anchor_pos, ctx_kv, embed, lm_head_weight, context_mask=None, sample=None):
        self.draft_calls += 1
        p, anchor = int(anchor_pos[0]), int(anchor_ids[0])
        # the visible context must be exactly the positions < anchor
        visible = (
            torch.ones(ctx_kv[0][0].shape[2], dtype=torch.bool) if context_mask is None else context_mask
        )
        assert visible[:p].all() and not visible[p:].any(), "context must be exactly the positions < anchor"
        if self.check is not None:
            assert anchor == self.script[p], f"anchor at {p} is {anchor}, committed token is {self.script[p]}"
            feats = self.check.features(torch.tensor([self.script[:p]]))
            for (k, v), (k_ref, v_ref) in zip(
                ctx_kv, self.context_kv(feats, torch.arange(p)[None]), strict=True
            ):
                assert_close(k[:, :, :p], k_ref, rtol=1e-4, atol=1e-4)
                assert_close(v[:, :, :p], v_ref, rtol=1e-4, atol=1e-4)
        vocab = lm_head_weight.shape[0]
        out = []
        for j in range(self.num_drafted):
            q = p + 1 + j
            tok = self.script[q] if q < len(self.script) else 0
            out.append((tok + 1) % vocab if self.corrupt(q) else tok)
        tokens = torch.tensor([out], device=anchor_ids.device)
        if sample is None:
            return tokens
        # Sampling: a deterministic drafter's q is one-hot on its token.
        logits = torch.full((1, len(out), vocab), float("-inf"), device=anchor_ids.device)
        return tokens, logits.scatter(-1, tokens[..., None], 0.0)


def scripted(target: Target, block_size: int, label_offset: int = 0) -> ScriptedDrafter:
    return ScriptedDrafter.from_target(target, num_layers=1, block_size=block_size, label_offset=label_offset)


def random_drafter(target: Target, block_size: int, label_offset: int) -> DFlashDrafter:
    torch.manual_seed(block_size * 10 + label_offset)
    return DFlashDrafter.from_target(target, num_layers=1, block_size=block_size, label_offset=label_offset)


def check_accounting(result, max_tau: int) -> None:
    assert result.num_decoded == len(result.tokens) - 1  # every token but the prefill's comes from a cycle
    assert all(0 <= a <= max_tau - 1 for a in result.accepted)
    if result.accepted:
        assert 1.0 <= result.tau <= max_tau


# --- greedy exactness ------------------------------------------------------------------------------------


def test_plain_greedy_matches_hf_generate(target, prompts, references):
    ids = torch.tensor([prompts[1]])
    out = target.model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=NEW)
    assert out[0, ids.shape[1] :].tolist() == plain_greedy(target, prompts[1], NEW)


@pytest.mark.parametrize("label_offset", [0, 1])
@pytest.mark.parametrize("block_size", [2, 5, 16])
def test_untrained_drafter_is_exact(target, prompts, references, block_size, label_offset):
    drafter = random_drafter(target, block_size, label_offset)
    decoder = SpeculativeDecoder(target, drafter)
    assert decoder.num_drafted == block_size - 1 + label_offset
    for ids, ref in zip(prompts[:2], references[:2], strict=True):
        result = decoder.generate(ids, NEW, eos_ids=[])
        assert result.tokens == ref, describe_mismatch(target, ids, result.tokens, ref)
        check_accounting(result, decoder.max_tau)


@pytest.mark.parametrize("label_offset", [0, 1])
@pytest.mark.parametrize("block_size", [2, 4, 16])
def test_oracle_drafter_full_acceptance(target, prompts, references, block_size, label_offset):
    drafter = scripted(target, block_size, label_offset)
    decoder = SpeculativeDecoder(target, drafter)
    d = decoder.num_drafted
    for ids, ref in zip(prompts, references, strict=True):
        drafter.setup(ids + ref, check=target)
        result = decoder.generate(ids, NEW, eos_ids=[])
        assert result.tokens == ref, describe_mismatch(target, ids, result.tokens, ref)
        check_accounting(result, d + 1)
        # Every cycle takes the whole block, except that the last one drafts only what the budget leaves.
        assert result.accepted[:-1] == [d] * (len(result.accepted) - 1)
        assert result.num_cycles == math.ceil((NEW - 1) / (d + 1))


@pytest.mark.parametrize("label_offset", [0, 1])
@pytest.mark.parametrize("block_size", [2, 16])
def test_noisy_oracle_partial_acceptance(target, prompts, references, block_size, label_offset):
    drafter = scripted(target, block_size, label_offset)
    decoder = SpeculativeDecoder(target, drafter)
    accepted = []
    for ids, ref in zip(prompts, references, strict=True):
        drafter.setup(ids + ref, corrupt=lambda q: q % 7 in (0, 3), check=target)
        result = decoder.generate(ids, NEW, eos_ids=[])
        assert result.tokens == ref, describe_mismatch(target, ids, result.tokens, ref)
        check_accounting(result, decoder.max_tau)
        accepted += result.accepted
    assert 0 in accepted and any(a > 0 for a in accepted)
    if block_size == 16:
        assert any(0 < a < decoder.num_drafted for a in accepted)  # runs that end inside the block


def test_never_matching_drafter_tau_is_one(target, prompts, references):
    drafter = scripted(target, 8)
    decoder = SpeculativeDecoder(target, drafter)
    for ids, ref in zip(prompts, references, strict=True):
        drafter.setup(ids + ref, corrupt=lambda q: True)
        result = decoder.generate(ids, NEW, eos_ids=[])
        assert result.tokens == ref
        assert result.accepted == [0] * (NEW - 1)
        assert result.tau == 1.0


def test_autoregressive_baseline_same_loop(target, prompts, references):
    drafter = scripted(target, 8).setup([])
    for decoder in (SpeculativeDecoder(target, None), SpeculativeDecoder(target, drafter, block_size=1)):
        assert decoder.block_size == 1 and decoder.num_drafted == 0
        for ids, ref in zip(prompts, references, strict=True):
            result = decoder.generate(torch.tensor(ids), NEW, eos_ids=[])
            assert result.tokens == ref
            assert result.accepted == [0] * (NEW - 1) and result.tau == 1.0
            assert result.decode_seconds > 0 and result.prefill_seconds > 0
    assert drafter.draft_calls == 0  # block 1 never asks the drafter


@pytest.mark.parametrize("block_size", [4, 16])
def test_eos_stops_and_is_kept(target, prompts, references, block_size):
    ids, ref = prompts[1], references[1]
    # The EOS: a token that first appears well inside the reference, so it lands inside an accepted block.
    k = next(i for i in range(5, NEW) if ref[i] not in ref[:i])
    eos = [ref[k]]
    assert plain_greedy(target, ids, NEW, eos_ids=eos) == ref[: k + 1]
    oracle = scripted(target, block_size).setup(ids + ref, check=target)
    for drafter in (oracle, random_drafter(target, block_size, 0), None):
        result = SpeculativeDecoder(target, drafter).generate(ids, NEW, eos_ids=eos)
        assert result.tokens == ref[: k + 1]
        check_accounting(result, block_size + 1)
    # The default EOS ids are the target's.
    assert SpeculativeDecoder(target, oracle).generate(ids, NEW).tokens == plain_greedy(target, ids, NEW)
    # An EOS as the very first token: no cycle at all.
    first = SpeculativeDecoder(target, oracle).generate(ids, NEW, eos_ids=[ref[0]])
    assert first.tokens == ref[:1] and first.num_cycles == 0 and math.isnan(first.tau)


# max_new_tokens → accepted per cycle with an oracle at B = 16 (15 drafts): the first token is the prefill's.
BUDGETS = {1: [], 2: [0], 3: [1], 16: [14], 17: [15], 18: [15, 0]}


@pytest.mark.parametrize("max_new", list(BUDGETS))
def test_max_new_tokens_exact(target, prompts, references, max_new):
    ids, ref = prompts[0], references[0]
    drafter = scripted(target, 16).setup(ids + ref)
    result = SpeculativeDecoder(target, drafter).generate(ids, max_new, eos_ids=[])
    assert result.tokens == ref[:max_new]
    # The drafts are capped by the budget, so no cycle verifies tokens it cannot emit.
    assert result.accepted == BUDGETS[max_new]


def test_rejects_a_block_size_the_drafter_was_not_built_for(target):
    with pytest.raises(ValueError, match="built for blocks of 4"):
        SpeculativeDecoder(target, scripted(target, 4), block_size=8)
    with pytest.raises(ValueError, match="max_new_tokens"):
        SpeculativeDecoder(target, None).generate([1, 2], 0)


# --- sampling --------------------------------------------------------------------------------------------

T, TOP_P, SAMPLES = 0.3, 0.9, 1500


def exact_joint(
    target: Target,
    prompt: list[int],
    steps: int,
    temperature: float = T,
    top_p: float = TOP_P,
    top_k: int = 0,
) -> dict[tuple[int, ...], float]:
    """The target's exact distribution of its first `steps` sampled tokens (temperature, top-k, nucleus)."""
    joint = {(): 1.0}
    for _ in range(steps):
        seqs = list(joint)
        with torch.no_grad():
            logits = target.model(torch.tensor([prompt + list(s) for s in seqs])).logits[:, -1]
        probs = sampling_probs(logits, temperature, top_p, top_k)
        joint = {
            (*s, t): w * float(probs[i, t])
            for i, (s, w) in enumerate(joint.items())
            for t in probs[i].nonzero().flatten().tolist()
        }
    return joint


def test_sampling_matches_the_target_distribution():
    # A small target whose tempered, nucleus-filtered distribution over 3 tokens has ~80 outcomes, most of the
    # mass on a few: enough samples per cell for a chi-square test in a few seconds.
    target = tiny_random(num_layers=2, hidden_size=32, intermediate_size=64, num_feature_layers=1, seed=1)
    prompt = [1, 2, 3, 4, 5]
    greedy = plain_greedy(target, prompt, 8, eos_ids=[])
    # Drafts = the greedy continuation by position: often accepted (the mode is likely at T=0.3), so the third
    # token comes sometimes from an accepted run, sometimes from the next cycle: both paths are tested.
    drafter = scripted(target, 4).setup(prompt + greedy)
    decoder = SpeculativeDecoder(target, drafter, temperature=T, top_p=TOP_P, seed=0)
    counts: Counter[tuple[int, ...]] = Counter()
    accepted = 0
    for _ in range(SAMPLES):
        result = decoder.generate(prompt, 3, eos_ids=[])
        counts[tuple(result.tokens)] += 1
        accepted += result.accepted[0]
    assert 0.2 * SAMPLES < accepted < 0.9 * SAMPLES  # the acceptance path really was exercised

    assert_matches(counts, exact_joint(target, prompt, 3), SAMPLES)


def assert_matches(counts: Counter, expected: dict[tuple[int, ...], float], samples: int) -> None:
    # Pearson chi-square over cells with ≥ 5 expected samples, the rest lumped into one cell. The seeds are
    # fixed, so the test is deterministic; p > 1e-3 would fail a correct sampler once in a thousand seed
    # choices, while the classic bugs (a draft accepted without matching the target's sample, a sample taken
    # at the wrong position) move tens of percent of the mass and give p-values far below 1e-10. The
    # sampling kernel's own, stronger test is tests/test_sampling.py.
    big = [s for s, p in expected.items() if p * samples >= 5]
    obs = [counts[s] for s in big] + [samples - sum(counts[s] for s in big)]
    exp = [expected[s] * samples for s in big] + [samples * (1 - sum(expected[s] for s in big))]
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp, strict=True) if e > 0)
    # chi-square survival function: the regularised upper incomplete gamma Q(df/2, x/2)
    p_value = torch.special.gammaincc(torch.tensor((len(obs) - 1) / 2), torch.tensor(float(stat) / 2)).item()
    assert p_value > 1e-3, (p_value, sorted(zip(obs, exp, strict=True), key=lambda x: -x[1])[:8])


def small_target() -> Target:
    return tiny_random(num_layers=2, hidden_size=32, intermediate_size=64, num_feature_layers=1, seed=1)


def soft_drafter(
    target: Target, kind: str, block_size: int = 4, label_offset: int = 0, seed: int | None = None
):
    """A random drafter with spread-out logits (Domino's head drawn too: zero-initialised it would leave the
    base logits alone). The default seeds are ones under which, on `small_target()`, its top 3 overlap the
    target's often enough to accept."""
    torch.manual_seed((6 if kind == "domino" else 2) if seed is None else seed)
    cls = DominoDrafter if kind == "domino" else DFlashDrafter
    drafter = cls.from_target(
        target, num_layers=1, block_size=block_size, label_offset=label_offset, init_std=0.5
    )
    if kind == "domino":
        torch.nn.init.normal_(drafter.w2.weight, std=0.5)
    return drafter


@pytest.mark.parametrize("kind", ["dflash", "domino"])
def test_sampling_with_a_soft_drafter_matches_the_target(kind):
    # Drafts sampled from the drafter's own q (top-3 of a random drafter at T = 1): accepted with
    # min(1, p/q) or resampled from the residual, so the decoder's plumbing of q is what is tested.
    target = small_target()
    drafter = soft_drafter(target, kind)
    prompt = [1, 2, 3, 4, 5]
    decoder = SpeculativeDecoder(target, drafter, temperature=1.0, top_k=3, seed=0)
    counts: Counter[tuple[int, ...]] = Counter()
    accepted, samples = 0, 1000
    for _ in range(samples):
        result = decoder.generate(prompt, 3, eos_ids=[])
        counts[tuple(result.tokens)] += 1
        accepted += result.accepted[0]
    assert accepted > 0.04 * samples  # drafts were accepted, not only resampled
    assert_matches(counts, exact_joint(target, prompt, 3, temperature=1.0, top_p=1.0, top_k=3), samples)


def test_sampling_reproducible_and_greedy_ignores_seed(target, prompts, references):
    drafter = random_drafter(target, 4, 0)
    ids = prompts[0]
    a = SpeculativeDecoder(target, drafter, temperature=1.0, seed=3).generate(ids, 12, eos_ids=[])
    b = SpeculativeDecoder(target, drafter, temperature=1.0, seed=3).generate(ids, 12, eos_ids=[])
    assert a.tokens == b.tokens and a.accepted == b.accepted
    greedy = SpeculativeDecoder(target, drafter, temperature=0.0, seed=5).generate(ids, NEW, eos_ids=[])
    assert greedy.tokens == references[0]


def test_top_p_keeps_the_nucleus():
    probs = torch.tensor([[0.5, 0.3, 0.15, 0.05]])

    def kept(top_p: float) -> list[list[bool]]:
        return (top_p_filter(probs, top_p) > 0).tolist()

    assert kept(0.75) == [[True, True, False, False]]
    assert kept(0.85) == [[True, True, True, False]]
    assert kept(0.1) == [[True, False, False, False]]  # the top token always stays
    assert kept(1.0) == [[True, True, True, True]]
    assert_close(top_p_filter(probs, 0.75), torch.tensor([[0.5, 0.3, 0.0, 0.0]]))


# --- numerics report -------------------------------------------------------------------------------------


def test_first_divergence_and_mismatch_report(target, prompts, references):
    assert first_divergence([1, 2, 3], [1, 2, 3]) is None
    assert first_divergence([1, 2, 3], [1, 5, 3]) == 1
    assert first_divergence([1, 2], [1, 2, 3]) == 2
    ids, ref = prompts[1], references[1]
    assert describe_mismatch(target, ids, ref, ref) is None
    bad = [*ref[:4], (ref[4] + 1) % 259, *ref[5:]]
    message = describe_mismatch(target, ids, bad, ref)
    assert "first difference at new token 4" in message and "top-2 logit gap" in message
    gap = top2_gap(target, ids + ref, len(ids) + 4)
    with torch.no_grad():
        logits = target.model(torch.tensor([ids + ref[:4]])).logits[0, -1]
    top = logits.topk(2).values
    assert gap == pytest.approx(float(top[0] - top[1]))
    assert int(logits.argmax()) == ref[4]


# --- the real target -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_speculative_equals_plain_greedy():
    target = smollm2_135m()
    torch.manual_seed(0)
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=16)
    oracle = scripted(target, 16)
    questions = [
        "What is the capital of France?",
        "Write a Python function that reverses a string.",
        "Give me three tips for sleeping better.",
    ]
    for question in questions:
        ids = chat_ids(target, question)
        ref = plain_greedy(target, ids, 48)
        result = SpeculativeDecoder(target, drafter).generate(ids, 48)
        assert result.tokens == ref, describe_mismatch(target, ids, result.tokens, ref)
        # Whole 16-token blocks verified at once against token-by-token decoding, on real weights (past any
        # EOS, so every prompt gives 48 tokens).
        ref = plain_greedy(target, ids, 48, eos_ids=[])
        oracle.setup(ids + ref)
        result = SpeculativeDecoder(target, oracle).generate(ids, 48, eos_ids=[])
        assert result.tokens == ref, describe_mismatch(target, ids, result.tokens, ref)
        assert result.accepted == [15, 15, 14]  # 1 + 16 + 16 + 15 = 48 tokens


def test_one_static_cache_serves_every_prompt(target, prompts, references):
    """The decoder keeps one preallocated cache (a fixed shape for the compiled verify step): rolled back to
    empty for each prompt, it still decodes every prompt exactly; it grows only for a longer prompt."""
    decoder = SpeculativeDecoder(target, random_drafter(target, 5, 0))
    order = sorted(range(3), key=lambda i: -len(prompts[i]))  # the longest first: no regrowth after it
    decoder.generate(prompts[order[0]], NEW, eos_ids=[])
    cache = decoder._kv_cache
    assert target.cache_is_static(cache) and cache.max_length == len(prompts[order[0]]) + NEW + 5
    for i in order:
        assert decoder.generate(prompts[i], NEW, eos_ids=[]).tokens == references[i]
    assert decoder._kv_cache is cache


def test_a_prompt_and_budget_beyond_the_context_are_refused():
    small = tiny_random(num_layers=2, hidden_size=32, intermediate_size=64, num_feature_layers=1,
                        max_position_embeddings=16)  # fmt: skip
    decoder = SpeculativeDecoder(small, None)
    decoder.generate(list(range(10)), 6, eos_ids=[])  # exactly fits: 10 + 6 = 16, no error
    with pytest.raises(
        ValueError, match=r"a 10-token prompt \+ 7 new tokens exceed the target's context of 16"
    ):
        decoder.generate(list(range(10)), 7, eos_ids=[])
