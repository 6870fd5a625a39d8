"""Training blocks: anchors, block inputs, labels and the packed attention mask (docs/method.md §3).

One sequence of S committed tokens yields N blocks. Block n starts at anchor a_n and holds
`[token a_n, MASK × (B−1)]` at positions a_n .. a_n+B−1. All blocks of a sequence are drafted in one packed
forward whose keys/values are [S context vectors | N·B block tokens]:

    query in block n may see  context position j  iff  j < a_n      (strict: at inference the anchor is the
                                                                      bonus token, whose target feature does
                                                                      not exist yet)
                              block token m        iff  m is in block n (bidirectional inside, blind across)

Labels: the drafted slots are k = 1−o .. B−1, slot k predicts token a_n + k + o, where the label offset o is 0
for DFlash (same position: slot k predicts the token at its own position) and 1 for Domino (next token).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

PAD_ANCHOR = -1


def anchor_candidates(loss_mask: Tensor) -> Tensor:
    """Positions a with loss_mask[a] = loss_mask[a+1] = 1: the anchor and the first label are supervised."""
    mask = loss_mask.bool()
    return torch.nonzero(mask[:-1] & mask[1:], as_tuple=False).flatten()


def sample_anchors(loss_mask: Tensor, num_anchors: int, generator: torch.Generator | None = None) -> Tensor:
    """Up to `num_anchors` candidates drawn uniformly without replacement, sorted."""
    candidates = anchor_candidates(loss_mask)
    if candidates.numel() > num_anchors:
        pick = torch.randperm(candidates.numel(), generator=generator)[:num_anchors]
        candidates = candidates[pick]
    return torch.sort(candidates).values


def drafted_slots(block_size: int, label_offset: int) -> range:
    """Block slots whose output is a drafted token: 1..B−1 (DFlash) or 0..B−1 (Domino)."""
    if label_offset not in (0, 1):
        raise ValueError(f"label_offset must be 0 (same position) or 1 (next token), got {label_offset}")
    return range(1 - label_offset, block_size)


def collate_blocks(
    items: Sequence[dict[str, Tensor]], block_size: int, label_offset: int, pad_id: int
) -> dict[str, Tensor]:
    """Pad a list of `{input_ids, loss_mask, anchors}` into one batch of packed blocks.

    Returns input_ids/attention_mask [b, S], anchors [b, N] (PAD_ANCHOR where a sequence has fewer),
    block_ids [b, N, B] (the anchor token at slot 0, the other slots are masks and hold pad_id),
    block_pos [b, N, B], labels/valid [b, N, D] with D = len(drafted_slots). `labels` hold the sequence's
    token wherever the position exists (train only where `valid`), pad_id past the end.
    """
    b = len(items)
    seq_len = max(int(it["input_ids"].numel()) for it in items)
    num_blocks = max(1, max(int(it["anchors"].numel()) for it in items))
    input_ids = torch.full((b, seq_len), pad_id, dtype=torch.long)
    loss_mask = torch.zeros((b, seq_len), dtype=torch.bool)
    attention_mask = torch.zeros((b, seq_len), dtype=torch.bool)
    anchors = torch.full((b, num_blocks), PAD_ANCHOR, dtype=torch.long)
    for i, it in enumerate(items):
        n = it["input_ids"].numel()
        input_ids[i, :n] = it["input_ids"]
        loss_mask[i, :n] = it["loss_mask"].bool()
        attention_mask[i, :n] = True
        anchors[i, : it["anchors"].numel()] = it["anchors"]

    slots = torch.arange(block_size)
    has_block = anchors >= 0
    block_pos = anchors.clamp_min(0)[:, :, None] + slots  # [b, N, B]
    block_ids = torch.full((b, num_blocks, block_size), pad_id, dtype=torch.long)
    block_ids[:, :, 0] = torch.where(has_block, input_ids.gather(1, anchors.clamp_min(0)), pad_id)

    drafted = torch.tensor(list(drafted_slots(block_size, label_offset)))
    label_pos = anchors.clamp_min(0)[:, :, None] + drafted + label_offset  # [b, N, D]
    inside = label_pos < seq_len
    flat_pos = label_pos.clamp_max(seq_len - 1).flatten(1)
    labels = input_ids.gather(1, flat_pos).view_as(label_pos)
    valid = has_block[:, :, None] & inside & loss_mask.gather(1, flat_pos).view_as(label_pos)
    # Keep the real token wherever it exists, valid or not: a teacher-forced head (Domino's GRU) reads it.
    labels = torch.where(inside, labels, pad_id)
    out = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "loss_mask": loss_mask,
        "anchors": anchors,
        "block_ids": block_ids,
        "block_pos": block_pos,
        "labels": labels,
        "valid": valid,
    }
    if all("index" in it for it in items):  # which dataset samples these are (the target-feature cache's key)
        out["sample_index"] = torch.tensor([int(it["index"]) for it in items], dtype=torch.long)
    return out


def pad_blocks(batch: dict[str, Tensor], block_size: int, multiple: int) -> dict[str, Tensor]:
    """Add empty blocks (PAD_ANCHOR, no valid label) until N·B is a multiple of `multiple`.

    flex_attention's compiled kernels need whole query tiles: some query lengths below 128 that are not a
    multiple of it fail to compile (seen on H100 with torch 2.11), and partial tiles waste work anyway.
    """
    b, n = batch["anchors"].shape
    per_tile = max(1, multiple // math.gcd(multiple, block_size))
    extra = -n % per_tile
    if extra == 0:
        return batch
    out = dict(batch)
    pad = {"anchors": PAD_ANCHOR, "block_ids": 0, "block_pos": 0, "labels": 0, "valid": False}
    for key, value in pad.items():
        t = batch[key]
        filler = torch.full((b, extra, *t.shape[2:]), value, dtype=t.dtype, device=t.device)
        out[key] = torch.cat([t, filler], dim=1)
    return out


def block_mask_mod(anchors: Tensor, seq_len: int | Tensor, block_size: int) -> Callable[..., Tensor]:
    """The mask as a function of (batch, head, query, kv) indices, usable by flex_attention and densely."""

    def mask_mod(b: Tensor, h: Tensor, q: Tensor, kv: Tensor) -> Tensor:
        block = q // block_size
        anchor = anchors[b, block]
        # strict <: the anchor (the bonus token at inference) has no target feature yet
        sees_context = (kv < seq_len) & (kv < anchor)
        same_block = (kv >= seq_len) & ((kv - seq_len) // block_size == block)
        return sees_context | same_block

    return mask_mod


def dense_block_mask(anchors: Tensor, seq_len: int, block_size: int) -> Tensor:
    """Boolean mask [b, 1, N·B, S + N·B] (True = may attend), for SDPA on CPU."""
    b, n = anchors.shape
    dev = anchors.device
    mask_mod = block_mask_mod(anchors, seq_len, block_size)
    bi = torch.arange(b, device=dev)[:, None, None]
    q = torch.arange(n * block_size, device=dev)[None, :, None]
    kv = torch.arange(seq_len + n * block_size, device=dev)[None, None, :]
    return mask_mod(bi, None, q, kv)[:, None]


def flex_block_mask(anchors: Tensor, seq_len: int, block_size: int):
    """The same mask as a flex_attention BlockMask (sparse tiles: most context tiles are skipped)."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, n = anchors.shape
    # The context length as a tensor, not a Python int the compiled kernel would specialise on (a
    # recompile for every new length).
    length = torch.tensor(seq_len, device=anchors.device)
    return create_block_mask(
        block_mask_mod(anchors, length, block_size),
        B=b,
        H=None,
        Q_LEN=n * block_size,
        KV_LEN=seq_len + n * block_size,
        device=anchors.device,
    )
