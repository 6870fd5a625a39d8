"""Speculative sampling as the field does it (Leviathan et al. 2023, Chen et al. 2023; docs/method.md §6).

    p = sampling_probs(target_logits, T, top_p, top_k)        [m + 1, V]: the target at each verified slot
    q = sampling_probs(draft_logits, T, top_p, top_k)         [m, V]: what each draft was sampled from
    accepted, token = rejection_sample(drafts, p, q, generator)

Draft i is accepted with probability min(1, p_i(d_i) / q_i(d_i)), in order; at the first rejection the
emitted token is drawn from the normalised residual max(p − q, 0), and when every draft is accepted the
bonus token is drawn from p_m. The emitted tokens are then distributed exactly as sampling the target
alone (tests/test_sampling.py measures it). Temperature, top-k and top-p shape p and q the same way, as
z-lab's `dflash_generate` does: divide by T, keep the top k, softmax, keep the nucleus, renormalise.
"""

from __future__ import annotations

import torch
from torch import Tensor


def top_p_filter(probs: Tensor, top_p: float) -> Tensor:
    """Zero every token outside the smallest set whose probability reaches `top_p` (nucleus), per row."""
    sorted_probs, order = probs.sort(dim=-1, descending=True)
    # A token stays if the mass strictly before it is below top_p: the top token always stays.
    keep_sorted = (sorted_probs.cumsum(dim=-1) - sorted_probs) < top_p
    keep = torch.zeros_like(keep_sorted).scatter(-1, order, keep_sorted)
    return probs * keep


def sampling_probs(logits: Tensor, temperature: float, top_p: float = 1.0, top_k: int = 0) -> Tensor:
    """The distribution sampled from at `temperature` > 0: fp32 rows [..., V] summing to 1."""
    scores = logits.float() / temperature
    if 0 < top_k < scores.shape[-1]:
        kth = scores.topk(top_k, dim=-1).values[..., -1:]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if top_p < 1.0:
        probs = top_p_filter(probs, top_p)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return probs


def sample(probs: Tensor, generator: torch.Generator | None) -> Tensor:
    """One token per row of `probs` [..., V]."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


def rejection_sample(
    drafts: Tensor, p: Tensor, q: Tensor, generator: torch.Generator | None
) -> tuple[Tensor, Tensor]:
    """Accept a prefix of `drafts` [..., m] (sampled from `q` [..., m, V]) against the target's `p`
    [..., m + 1, V], row by row for any leading batch shape.

    Returns (number accepted [...], the token emitted after them [...]) as tensors on the device, so the
    caller syncs with the host once per cycle.
    """
    m, vocab = drafts.shape[-1], p.shape[-1]
    if m == 0:
        return torch.zeros(drafts.shape[:-1], dtype=torch.long, device=p.device), sample(
            p[..., 0, :], generator
        )
    p_d = p[..., :m, :].gather(-1, drafts[..., None])[..., 0]
    q_d = q.gather(-1, drafts[..., None])[..., 0]
    u = torch.rand(drafts.shape, generator=generator, device=p.device, dtype=p_d.dtype)
    # u < p/q, written without the division (q_d > 0: d was sampled from q).
    accepted = (u * q_d < p_d).long().cumprod(-1).sum(-1)
    # At the first rejection the residual; after all m accepted, p_m itself (q is zero past the drafts).
    q = torch.cat([q, torch.zeros_like(q[..., :1, :])], dim=-2)
    at = accepted[..., None, None].expand(*accepted.shape, 1, vocab)
    p_next, q_next = p.gather(-2, at)[..., 0, :], q.gather(-2, at)[..., 0, :]
    residual = (p_next - q_next).clamp_min(0)
    total = residual.sum(-1, keepdim=True)
    # p == q leaves no residual mass, and then no rejection can happen: fall back to p for safety.
    residual = torch.where(total > 0, residual / total.clamp_min(torch.finfo(total.dtype).tiny), p_next)
    return accepted, sample(residual, generator)
