"""Where two decodes of the same prompt part, and whether rounding alone can explain it (docs/method.md §6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from specauf.decoding import as_ids


def first_divergence(a: Sequence[int], b: Sequence[int]) -> int | None:
    """Index of the first position where `a` and `b` differ (or where the shorter one ends); None if equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


@torch.no_grad()
def top2_gap(target: Any, prefix_ids: Sequence[int] | Tensor, position: int) -> float:
    """The target's top-1 minus top-2 logit where it chooses token `position` of `prefix_ids`.

    One uncached forward over `prefix_ids[:position]`; the last logits are the ones that picked the token at
    `position`. A gap near the dtype's resolution means two decodes can disagree through rounding alone
    (docs/method.md §6); a clear gap with a disagreement means a logic bug.
    """
    ids = as_ids(prefix_ids, target.device)[:, :position]
    logits = target.model(input_ids=ids, use_cache=False, logits_to_keep=1).logits[0, -1].float()
    top = logits.topk(2).values
    return float(top[0] - top[1])


def describe_mismatch(
    target: Any, prompt_ids: Sequence[int] | Tensor, got: Sequence[int], want: Sequence[int]
) -> str | None:
    """None if `got == want`, else where they first differ and the target's top-2 logit gap there."""
    i = first_divergence(got, want)
    if i is None:
        return None
    prompt = torch.as_tensor(prompt_ids, dtype=torch.long).flatten().tolist()
    where = (
        f"first difference at new token {i} (got {got[i] if i < len(got) else 'end'}, "
        f"want {want[i] if i < len(want) else 'end'}; lengths {len(got)} vs {len(want)})"
    )
    if i >= min(len(got), len(want)):
        return where  # one stopped early: the shared prefix agrees, so there is no choice to inspect
    gap = top2_gap(target, prompt + list(want[:i]) + [want[i]], len(prompt) + i)
    return f"{where}; target top-2 logit gap there: {gap:.3g}"
