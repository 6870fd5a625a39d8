"""`specauf.sampling`: speculative sampling leaves the target's distribution exactly as it is.

The kernel test runs 400k independent cycles at once against a toy "target" whose distribution at each slot
depends on the tokens before it, and a draft whose second slot depends on the first (as Domino's does). The
first three emitted tokens (continued by plain target sampling where a cycle stopped early) must follow the
target's exact joint; a total-variation bound a correct sampler passes by a factor of ~3 and biased rules
(checked below, the mutation check) fail by a wide margin.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from specauf.sampling import rejection_sample, sample, sampling_probs

V, N = 6, 400_000
TV_BOUND = 0.02  # the measured TV of the correct sampler here is ~0.006 (noise at N = 400k over 216 cells)


def tables(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    dist = lambda *shape: torch.distributions.Dirichlet(torch.full((V,), 0.7)).sample(shape)  # noqa: E731
    torch.manual_seed(seed)
    return {
        "p0": dist(), "p1": dist(V), "p2": dist(V, V),  # target: p1[x] = p(· | x), p2[x, y] = p(· | x, y)
        "q1": dist(), "q2": dist(V),  # draft: q2[d1] = q(· | d1)
        "g": g,
    }  # fmt: skip


def emitted_joint(kernel: Callable, t: dict[str, torch.Tensor]) -> torch.Tensor:
    """The empirical joint [V, V, V] of the first three tokens out of one cycle (+ plain target sampling)."""
    g = t["g"]
    d1 = sample(t["q1"].expand(N, V), g)
    d2 = sample(t["q2"][d1], g)
    drafts = torch.stack([d1, d2], dim=1)
    p = torch.stack([t["p0"].expand(N, V), t["p1"][d1], t["p2"][d1, d2]], dim=1)  # [N, 3, V]
    q = torch.stack([t["q1"].expand(N, V), t["q2"][d1]], dim=1)  # [N, 2, V]
    accepted, token = kernel(drafts, p, q, g)
    c0 = torch.where(accepted == 0, token, d1)
    c1 = torch.where(accepted == 1, token, torch.where(accepted == 2, d2, sample(t["p1"][c0], g)))
    c2 = torch.where(accepted == 2, token, sample(t["p2"][c0, c1], g))
    counts = torch.bincount(c0 * V * V + c1 * V + c2, minlength=V**3).float()
    return counts.view(V, V, V) / N


def exact_joint(t: dict[str, torch.Tensor]) -> torch.Tensor:
    return t["p0"][:, None, None] * t["p1"][:, :, None] * t["p2"]


def tv(a: torch.Tensor, b: torch.Tensor) -> float:
    return 0.5 * float((a - b).abs().sum())


@pytest.mark.parametrize("seed", [0, 1])
def test_rejection_sampling_gives_the_target_joint(seed):
    t = tables(seed)
    assert tv(emitted_joint(rejection_sample, t), exact_joint(t)) < TV_BOUND


def biased_acceptance(drafts, p, q, g):
    """Mutant: accepts with min(1, 1.1·p/q), too often where q > p (TV ~0.05 here; 1.05 gives ~0.027)."""
    return rejection_sample(drafts, p, q / 1.1, g)


def residual_from_p(drafts, p, q, g):
    """Mutant: resamples a rejected slot from p instead of the residual max(p − q, 0)."""
    accepted, _ = rejection_sample(drafts, p, q, g)
    at = accepted[:, None, None].expand(-1, 1, p.shape[-1])
    return accepted, sample(p.gather(1, at)[:, 0], g)


def draft_must_equal_a_target_sample(drafts, p, q, g):
    """The old rule: a draft counts only if it equals the target's own sample (lossless, but not this test's
    subject: it is here to show the test tells rules apart only by their output distribution)."""
    choices = sample(p, g)
    ok = (drafts == choices[:, :-1]).long().cumprod(-1)
    accepted = ok.sum(-1)
    return accepted, choices.gather(1, accepted[:, None])[:, 0]


@pytest.mark.parametrize("mutant", [biased_acceptance, residual_from_p])
def test_the_bound_catches_a_biased_rule(mutant):
    t = tables(0)
    assert tv(emitted_joint(mutant, t), exact_joint(t)) > 2 * TV_BOUND


def test_the_exact_match_rule_is_lossless_but_accepts_less():
    t = tables(0)
    assert tv(emitted_joint(draft_must_equal_a_target_sample, t), exact_joint(t)) < TV_BOUND
    g = torch.Generator().manual_seed(3)
    d1 = sample(t["q1"].expand(N, V), g)
    drafts = d1[:, None]
    p = torch.stack([t["p0"].expand(N, V), t["p1"][d1]], dim=1)
    q = t["q1"].expand(N, 1, V)
    rejection = rejection_sample(drafts, p, q, g)[0].float().mean()
    exact_match = draft_must_equal_a_target_sample(drafts, p, q, g)[0].float().mean()
    # Acceptance of one draft: Σ min(p, q) for rejection sampling, Σ p·q for the exact-match rule.
    assert float(rejection) == pytest.approx(float(torch.minimum(t["p0"], t["q1"]).sum()), abs=0.005)
    assert float(exact_match) == pytest.approx(float((t["p0"] * t["q1"]).sum()), abs=0.005)
    assert rejection > exact_match


def test_sampling_probs_temperature_top_k_top_p():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]])
    assert torch.allclose(sampling_probs(logits, 1.0), torch.softmax(logits, -1))
    assert torch.allclose(sampling_probs(logits, 0.5), torch.softmax(logits / 0.5, -1))
    top2 = sampling_probs(logits, 1.0, top_k=2)
    assert torch.allclose(top2, torch.tensor([[0.7311, 0.2689, 0.0, 0.0]]), atol=1e-4)
    nucleus = sampling_probs(logits, 1.0, top_p=0.7)  # 0.64 + 0.24 reaches 0.7: two tokens stay
    assert (nucleus > 0).tolist() == [[True, True, False, False]] and torch.allclose(
        nucleus.sum(), torch.tensor(1.0)
    )


def test_a_draft_equal_to_the_target_is_always_accepted():
    g = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(3, V, generator=g), -1)
    drafts = torch.tensor([[1, 4]]).expand(1000, 2)
    accepted, _ = rejection_sample(drafts, probs.expand(1000, 3, V), probs[:2].expand(1000, 2, V), g)
    assert bool((accepted == 2).all())  # p = q: min(1, p/q) = 1
