"""The chunked LM-head cross-entropy against the plain full-logits computation."""

import pytest
import torch
import torch.nn.functional as F
from torch.testing import assert_close

from specauf.drafters.head import linear_cross_entropy


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
