"""The LM head and its cross-entropy, computed in chunks of rows so the [rows × vocab] logits never exist.

With a 150k vocabulary the logits of a few thousand block positions are gigabytes; the head dominates both
time and memory of a drafter step (docs/method.md §3). `linear_cross_entropy` returns what the losses need per
row — the cross-entropy, the argmax and the label's rank — and its backward recomputes each chunk's logits
instead of storing them. The logits are a sum of linear terms, `Σ_i x_i @ W_i.T`, so the same op serves the
frozen target head (DFlash) and base + low-rank correction (Domino). Gradients flow to every input and to
every weight that requires them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from specauf.drafters.fused import fused


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


def _ends(prefixes: tuple[int, ...], n: int) -> tuple[bool, ...]:
    """Which term closes a head. Passed to the compiled functions as bools: torch.compile specialises on
    bools, whereas ints that change between calls (a second drafter) would turn symbolic."""
    return tuple(i + 1 in prefixes for i in range(n))


def _chunk_stats(terms: list[Tensor], labels: Tensor, ends: tuple[bool, ...]) -> tuple[Tensor, ...]:
    """Per head, for the rows of one chunk: logsumexp, cross-entropy, argmax and the label's rank.

    `terms` are the matmul outputs `x_i @ W_i.T` in the matmul dtype (bf16 under autocast); a head's logits
    are the sum of the terms up to one that `ends` it, formed in fp32 inside this function — a 150k-way
    logsumexp in bf16 is too coarse. On CUDA this whole function is one compiled graph, so the [rows × vocab]
    logits are read a few times in registers instead of once per eager op in fp32 (the head's elementwise
    work used to take as long as its matmuls).
    """
    stat = _stat_dtype(terms[0].dtype)
    lse, ce, argmax, rank = [], [], [], []
    logits = None
    for term, end in zip(terms, ends, strict=True):
        logits = term.to(stat) if logits is None else logits + term.to(stat)
        if end:
            label_logit = logits.gather(1, labels[:, None]).squeeze(1)
            lse.append(torch.logsumexp(logits, dim=1))
            ce.append(lse[-1] - label_logit)
            argmax.append(logits.argmax(dim=1))
            rank.append((logits > label_logit[:, None]).sum(dim=1))
    return torch.stack(lse), torch.stack(ce), torch.stack(argmax), torch.stack(rank)


def _chunk_grads(
    terms: list[Tensor], labels: Tensor, lse: Tensor, grad_ce: Tensor, ends: tuple[bool, ...]
) -> list[Tensor]:
    """d loss / d term_i for the rows of one chunk, in the terms' dtype.

    d ce_k / d logits_k = softmax_k − onehot(label), scaled by the upstream gradient of head k; a term's
    gradient sums the heads that include it. Compiled on CUDA like `_chunk_stats`.
    """
    stat = lse.dtype
    onehot = torch.arange(terms[0].shape[1], device=labels.device) == labels[:, None]
    heads, logits = [], None
    for term, end in zip(terms, ends, strict=True):
        logits = term.to(stat) if logits is None else logits + term.to(stat)
        if end:
            k = len(heads)
            p = torch.exp(logits - lse[k, :, None])
            heads.append((p - onehot.to(stat)) * grad_ce[k, :, None].to(stat))
    grads, g = [], None
    for term, end in zip(reversed(terms), reversed(ends), strict=True):
        if end:
            g_k = heads.pop()
            g = g_k if g is None else g + g_k
        grads.append(g.to(term.dtype))
    return grads[::-1]


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, labels: Tensor, chunk_size: int, n: int, ends: tuple[bool, ...], *tensors: Tensor):
        xs, ws = tensors[:n], tensors[n:]
        rows, heads = labels.shape[0], sum(ends)
        stat = _stat_dtype(xs[0].dtype)
        ce = torch.empty(heads, rows, dtype=stat, device=labels.device)
        lse = torch.empty_like(ce)
        argmax = torch.empty(heads, rows, dtype=torch.long, device=labels.device)
        rank = torch.empty_like(argmax)
        stats = fused(_chunk_stats, labels.device)
        for start in range(0, rows, chunk_size):
            sl = slice(start, min(start + chunk_size, rows))
            terms = [x[sl] @ w.t() for x, w in zip(xs, ws, strict=True)]
            lse[:, sl], ce[:, sl], argmax[:, sl], rank[:, sl] = stats(terms, labels[sl], ends)
        ctx.save_for_backward(labels, lse, *tensors)
        ctx.chunk_size, ctx.n, ctx.ends = chunk_size, n, ends
        outputs = (*ce.unbind(0), *argmax.unbind(0), *rank.unbind(0))
        ctx.mark_non_differentiable(*outputs[heads:])
        return outputs

    @staticmethod
    def backward(ctx, *grads: Tensor):
        labels, lse, *tensors = ctx.saved_tensors
        n, chunk_size, ends = ctx.n, ctx.chunk_size, ctx.ends
        grad_ce = torch.stack(grads[: sum(ends)])  # [heads, rows]
        xs, ws = tensors[:n], tensors[n:]
        need_x = ctx.needs_input_grad[4 : 4 + n]
        need_w = ctx.needs_input_grad[4 + n :]
        grad_xs = [torch.zeros_like(x) if need else None for x, need in zip(xs, need_x, strict=True)]
        grad_ws = [
            torch.zeros(w.shape, dtype=_stat_dtype(w.dtype), device=w.device) if need else None
            for w, need in zip(ws, need_w, strict=True)
        ]
        chunk_grads = fused(_chunk_grads, labels.device)
        # Rows with zero upstream gradient in every head (AUF's dead tail, padding) contribute nothing: skip
        # their logits. This is most of the head's backward under AUF, whose support is a fraction of the block.
        live = torch.nonzero(grad_ce.ne(0).any(dim=0)).flatten()
        for start in range(0, live.numel(), chunk_size):
            idx = live[start : start + chunk_size]
            x_rows = [x[idx] for x in xs]
            terms = [x @ w.t() for x, w in zip(x_rows, ws, strict=True)]
            g_terms = chunk_grads(terms, labels[idx], lse[:, idx], grad_ce[:, idx], ends)
            for i, g in enumerate(g_terms):
                # In the matmul dtype, as autocast would run these products; weight gradients add up in fp32.
                if grad_xs[i] is not None:
                    grad_xs[i][idx] = (g.to(ws[i].dtype) @ ws[i]).to(grad_xs[i].dtype)
                if grad_ws[i] is not None:
                    grad_ws[i] += g.t() @ x_rows[i].to(g.dtype)
        grad_ws = [None if gw is None else gw.to(w.dtype) for gw, w in zip(grad_ws, ws, strict=True)]
        return None, None, None, None, *grad_xs, *grad_ws


def nested_linear_cross_entropy(
    inputs: Sequence[Tensor],
    weights: Sequence[Tensor],
    labels: Tensor,
    prefixes: Sequence[int],
    chunk_size: int = 1024,
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """Several heads whose logits are nested sums of linear terms, in one chunked pass.

    Head k's logits are `Σ_{i < prefixes[k]} inputs[i] @ weights[i].T` (prefixes increasing, the last one all
    the terms). Domino's base head is `z @ W.T` and its final head `z @ W.T + c @ W2.T`: computed together, the
    150k-wide `z @ W.T` runs once per chunk instead of once per head, forward and backward.
    Returns one (ce, argmax, rank) per head, as `linear_cross_entropy` does.
    """
    prefixes = tuple(int(p) for p in prefixes)
    if len(inputs) != len(weights) or not inputs:
        raise ValueError("linear_cross_entropy needs one weight per input and at least one pair")
    if (
        not prefixes
        or list(prefixes) != sorted(set(prefixes))
        or prefixes[0] < 1
        or prefixes[-1] != len(inputs)
    ):
        raise ValueError(
            f"prefixes must increase from >= 1 to {len(inputs)} (the number of terms), got {prefixes}"
        )
    if labels.numel() == 0:
        empty = labels.new_zeros(0)
        return [(inputs[0][:0].sum(dim=1).float(), empty, empty) for _ in prefixes]
    if torch.is_autocast_enabled(labels.device.type):
        dtype = torch.get_autocast_dtype(labels.device.type)
        inputs = [x.to(dtype) for x in inputs]
        weights = [w.to(dtype) for w in weights]
    with torch.autocast(labels.device.type, enabled=False):
        out = _LinearCrossEntropy.apply(
            labels, chunk_size, len(inputs), _ends(prefixes, len(inputs)), *inputs, *weights
        )
    heads = len(prefixes)
    return [(out[k], out[heads + k], out[2 * heads + k]) for k in range(heads)]


def linear_cross_entropy(
    inputs: Sequence[Tensor], weights: Sequence[Tensor], labels: Tensor, chunk_size: int = 1024
) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy of `labels` under logits `Σ_i inputs[i] @ weights[i].T`, chunked over rows.

    inputs: tensors [M, H_i]; weights: tensors [V, H_i]; labels: [M] in [0, V).
    Returns (ce [M] in at least fp32, with grad, argmax [M], rank [M]) where rank counts logits strictly above the label's.
    """
    (head,) = nested_linear_cross_entropy(inputs, weights, labels, (len(inputs),), chunk_size)
    return head
