"""The chunked LM-head cross-entropy against the plain full-logits computation."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from specauf.drafters.head import linear_cross_entropy, nested_linear_cross_entropy


@pytest.mark.parametrize("chunk_size", [1, 7, 1024])
def test_matches_full_logits_values_and_grads(chunk_size):
    g = torch.Generator().manual_seed(0)
    m, h, r, v = 23, 16, 4, 50
    x = torch.randn(m, h, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(m, r, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, h, generator=g, dtype=torch.float64)  # frozen, like the target's head
    w2 = torch.randn(v, r, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, v, (m,), generator=g)
    upstream = torch.rand(m, generator=g, dtype=torch.float64)

    ce, argmax, rank = linear_cross_entropy([x, c], [w, w2], labels, chunk_size)
    (ce * upstream).sum().backward()
    got = (x.grad.clone(), c.grad.clone(), w2.grad.clone())
    x.grad = c.grad = w2.grad = None

    logits = x @ w.t() + c @ w2.t()
    ref = F.cross_entropy(logits, labels, reduction="none")
    (ref * upstream).sum().backward()
    assert_close(ce.double(), ref, rtol=1e-5, atol=1e-6)
    assert torch.equal(argmax, logits.argmax(1))
    assert torch.equal(rank, (logits > logits.gather(1, labels[:, None])).sum(1))
    for a, b in zip(got, (x.grad, c.grad, w2.grad), strict=True):
        assert_close(a, b)


def test_empty_rows():
    x = torch.randn(0, 8, requires_grad=True)
    ce, argmax, _ = linear_cross_entropy([x], [torch.randn(10, 8)], torch.zeros(0, dtype=torch.long))
    assert ce.shape == (0,) and argmax.shape == (0,)
    ce.sum().backward()


def test_rows_without_upstream_gradient_get_none():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(10, 8, generator=g, requires_grad=True)
    w = torch.randn(30, 8, generator=g)
    labels = torch.randint(0, 30, (10,), generator=g)
    upstream = torch.zeros(10)
    upstream[[2, 5]] = 1.0
    ce, _, _ = linear_cross_entropy([x], [w], labels, chunk_size=3)
    (ce * upstream).sum().backward()
    ref_x = x.detach().clone().requires_grad_(True)
    (F.cross_entropy(ref_x @ w.t(), labels, reduction="none") * upstream).sum().backward()
    assert_close(x.grad, ref_x.grad)
    assert (x.grad[[0, 1, 3, 4, 6, 7, 8, 9]] == 0).all()


@pytest.mark.parametrize("chunk_size", [1, 5, 1024])
def test_nested_heads_match_separate_full_logits(chunk_size):
    """Domino's base (z·W) and final (z·W + c·W2) heads in one pass == each head on its own full logits."""
    g = torch.Generator().manual_seed(2)
    m, h, r, v = 17, 12, 3, 40
    z = torch.randn(m, h, generator=g, dtype=torch.float64, requires_grad=True)
    c = torch.randn(m, r, generator=g, dtype=torch.float64, requires_grad=True)
    w = torch.randn(v, h, generator=g, dtype=torch.float64)
    w2 = torch.randn(v, r, generator=g, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, v, (m,), generator=g)
    up = torch.rand(2, m, generator=g, dtype=torch.float64)
    up[0, :6] = 0  # rows dead in one head only, and in both
    up[1, 3:8] = 0

    (ce_b, arg_b, rank_b), (ce_f, arg_f, rank_f) = nested_linear_cross_entropy(
        [z, c], [w, w2], labels, (1, 2), chunk_size
    )
    ((ce_b * up[0]).sum() + (ce_f * up[1]).sum()).backward()
    got = (z.grad.clone(), c.grad.clone(), w2.grad.clone())
    z.grad = c.grad = w2.grad = None

    base, final = z @ w.t(), z @ w.t() + c @ w2.t()
    ref_b = F.cross_entropy(base, labels, reduction="none")
    ref_f = F.cross_entropy(final, labels, reduction="none")
    ((ref_b * up[0]).sum() + (ref_f * up[1]).sum()).backward()
    assert_close(ce_b.double(), ref_b)
    assert_close(ce_f.double(), ref_f)
    assert torch.equal(arg_b, base.argmax(1)) and torch.equal(arg_f, final.argmax(1))
    assert torch.equal(rank_f, (final > final.gather(1, labels[:, None])).sum(1))
    assert torch.equal(rank_b, (base > base.gather(1, labels[:, None])).sum(1))
    for a, b in zip(got, (z.grad, c.grad, w2.grad), strict=True):
        assert_close(a, b)


@pytest.mark.parametrize("prefixes", [(), (2, 1), (0, 2), (1,), (1, 1, 2)])
def test_nested_heads_reject_bad_prefixes(prefixes):
    x = torch.randn(3, 4)
    with pytest.raises(ValueError, match="prefixes"):
        nested_linear_cross_entropy(
            [x, x], [torch.randn(5, 4)] * 2, torch.zeros(3, dtype=torch.long), prefixes
        )
