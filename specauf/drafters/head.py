"""The LM head and its cross-entropy, computed in chunks of rows so the [rows × vocab] logits never exist.

With a 150k vocabulary the logits of a few thousand block positions are gigabytes; the head dominates both
time and memory of a drafter step (DESIGN.md §3). `linear_cross_entropy` returns what the losses need per
row — the cross-entropy, the argmax and the label's rank — and its backward recomputes each chunk's logits
instead of storing them. The logits are a sum of linear terms, `Σ_i x_i @ W_i.T`, so the same op serves the
frozen target head (DFlash) and base + low-rank correction (Domino). Gradients flow to every input and to
every weight that requires them.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def _chunk_logits(xs: Sequence[Tensor], ws: Sequence[Tensor], rows: slice | Tensor) -> Tensor:
    logits = None
    for x, w in zip(xs, ws, strict=True):
        term = x[rows] @ w.t()
        logits = term if logits is None else logits + term
    # Softmax statistics in fp32 even under bf16 autocast: a 150k-way logsumexp in bf16 is too coarse.
    return logits.to(_stat_dtype(logits.dtype))


def _stat_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.promote_types(dtype, torch.float32)


class _LinearCrossEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, labels: Tensor, chunk_size: int, n: int, *tensors: Tensor):
        xs, ws = tensors[:n], tensors[n:]
        rows = labels.shape[0]
        stat = _stat_dtype(xs[0].dtype)
        ce = torch.empty(rows, dtype=stat, device=labels.device)
        argmax = torch.empty(rows, dtype=torch.long, device=labels.device)
        rank = torch.empty(rows, dtype=torch.long, device=labels.device)
        lse = torch.empty(rows, dtype=stat, device=labels.device)
        for start in range(0, rows, chunk_size):
            sl = slice(start, min(start + chunk_size, rows))
            logits = _chunk_logits(xs, ws, sl)
            label_logit = logits.gather(1, labels[sl, None]).squeeze(1)
            lse[sl] = torch.logsumexp(logits, dim=1)
            ce[sl] = lse[sl] - label_logit
            argmax[sl] = logits.argmax(dim=1)
            rank[sl] = (logits > label_logit[:, None]).sum(dim=1)
        ctx.save_for_backward(labels, lse, *tensors)
        ctx.chunk_size, ctx.n = chunk_size, n
        ctx.mark_non_differentiable(argmax, rank)
        return ce, argmax, rank

    @staticmethod
    def backward(ctx, grad_ce: Tensor, _grad_argmax, _grad_rank):
        labels, lse, *tensors = ctx.saved_tensors
        n, chunk_size = ctx.n, ctx.chunk_size
        xs, ws = tensors[:n], tensors[n:]
        need_x = ctx.needs_input_grad[3 : 3 + n]
        need_w = ctx.needs_input_grad[3 + n :]
        grad_xs = [torch.zeros_like(x) if need else None for x, need in zip(xs, need_x, strict=True)]
        grad_ws = [
            torch.zeros(w.shape, dtype=_stat_dtype(w.dtype), device=w.device) if need else None
            for w, need in zip(ws, need_w, strict=True)
        ]
        # Rows with zero upstream gradient (AUF's dead tail, padding) contribute nothing: skip their logits.
        # This is most of the head's backward under AUF, whose support is a fraction of the block.
        live = torch.nonzero(grad_ce).flatten()
        for start in range(0, live.numel(), chunk_size):
            idx = live[start : start + chunk_size]
            # d ce / d logits = softmax - onehot(label)
            g = torch.exp(_chunk_logits(xs, ws, idx) - lse[idx, None])
            g[torch.arange(g.shape[0], device=g.device), labels[idx]] -= 1.0
            g = g * grad_ce[idx, None].to(g.dtype)
            for i in range(n):
                if grad_xs[i] is not None:
                    grad_xs[i][idx] = (g.to(ws[i].dtype) @ ws[i]).to(grad_xs[i].dtype)
                if grad_ws[i] is not None:
                    grad_ws[i] += g.t() @ xs[i][idx].to(g.dtype)
        grad_ws = [None if gw is None else gw.to(w.dtype) for gw, w in zip(grad_ws, ws, strict=True)]
        return None, None, None, *grad_xs, *grad_ws


def linear_cross_entropy(
    inputs: Sequence[Tensor], weights: Sequence[Tensor], labels: Tensor, chunk_size: int = 1024
) -> tuple[Tensor, Tensor, Tensor]:
    """Cross-entropy of `labels` under logits `Σ_i inputs[i] @ weights[i].T`, chunked over rows.

    inputs: tensors [M, H_i]; weights: tensors [V, H_i]; labels: [M] in [0, V).
    Returns (ce [M] in at least fp32, with grad, argmax [M], rank [M]) where rank counts logits strictly above the label's.
    """
    if len(inputs) != len(weights) or not inputs:
        raise ValueError("linear_cross_entropy needs one weight per input and at least one pair")
    if labels.numel() == 0:
        empty = labels.new_zeros(0)
        return inputs[0][:0].sum(dim=1).float(), empty, empty
    if torch.is_autocast_enabled(labels.device.type):
        dtype = torch.get_autocast_dtype(labels.device.type)
        inputs = [x.to(dtype) for x in inputs]
        weights = [w.to(dtype) for w in weights]
    with torch.autocast(labels.device.type, enabled=False):
        return _LinearCrossEntropy.apply(labels, chunk_size, len(inputs), *inputs, *weights)
