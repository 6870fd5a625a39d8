"""Reference computations shared by the target tests."""

from __future__ import annotations

import torch

from specauf.target import Target

# Cached vs uncached (and padded vs unpadded) attention sums in a different order: fp32 noise of ~2e-5 on
# hidden states of magnitude ~30. Far below the smallest top-2 logit gap of the tiny target (~3e-3).
TOL = {"rtol": 1e-4, "atol": 1e-4}


def full_forward(target: Target, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: one uncached forward of the whole LM, features built from HF's own hidden_states."""
    with torch.no_grad():
        out = target.model(ids, output_hidden_states=True, use_cache=False)
    feats = torch.cat([out.hidden_states[i + 1] for i in target.layer_ids], dim=-1)
    return out.logits, feats


def random_ids(b: int, s: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 259, (b, s), generator=torch.Generator().manual_seed(seed))
