"""Anchors, labels and the packed attention mask against a naive per-block loop (docs/method.md §3)."""

import pytest
import torch

from specauf.data.blocks import (
    PAD_ANCHOR,
    anchor_candidates,
    collate_blocks,
    dense_block_mask,
    drafted_slots,
    sample_anchors,
)


def make_items(seed=0, n_seqs=3, block_size=4, num_anchors=5):
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n_seqs):
        length = 12 + 5 * i
        ids = torch.randint(3, 50, (length,), generator=g)
        mask = torch.rand(length, generator=g) < 0.7
        anchors = sample_anchors(mask, num_anchors, g)
        items.append({"input_ids": ids, "loss_mask": mask, "anchors": anchors})
    return items


def test_anchor_candidates_need_two_supervised_tokens():
    mask = torch.tensor([0, 1, 1, 1, 0, 1, 0, 1, 1], dtype=torch.bool)
    assert anchor_candidates(mask).tolist() == [1, 2, 7]


def test_sample_anchors_without_replacement_and_sorted():
    mask = torch.ones(100, dtype=torch.bool)
    a = sample_anchors(mask, 30, torch.Generator().manual_seed(0))
    assert a.numel() == 30 and a.unique().numel() == 30
    assert torch.equal(a, a.sort().values)
    assert sample_anchors(mask[:5], 30).tolist() == [0, 1, 2, 3]
    b = sample_anchors(mask, 30, torch.Generator().manual_seed(1))
    assert not torch.equal(a, b)


@pytest.mark.parametrize("label_offset", [0, 1])
def test_labels_match_naive_loop(label_offset):
    bs = 4
    items = make_items(block_size=bs)
    batch = collate_blocks(items, bs, label_offset, pad_id=0)
    slots = list(drafted_slots(bs, label_offset))
    for i, it in enumerate(items):
        ids, mask = it["input_ids"], it["loss_mask"]
        for n in range(batch["anchors"].shape[1]):
            anchor = batch["anchors"][i, n].item()
            if n >= it["anchors"].numel():
                assert anchor == PAD_ANCHOR and not batch["valid"][i, n].any()
                continue
            assert batch["block_ids"][i, n, 0] == ids[anchor]
            assert batch["block_pos"][i, n].tolist() == [anchor + k for k in range(bs)]
            for d, k in enumerate(slots):
                pos = anchor + k + label_offset
                ok = pos < len(ids) and bool(mask[pos])
                assert bool(batch["valid"][i, n, d]) == ok, (i, n, k)
                if ok:
                    assert batch["labels"][i, n, d] == ids[pos]


def test_first_label_of_every_real_block_is_valid():
    batch = collate_blocks(make_items(), 4, 0, pad_id=0)
    real = batch["anchors"] >= 0
    assert batch["valid"][..., 0][real].all()


def test_dense_mask_matches_naive_loop():
    bs = 4
    items = make_items(block_size=bs)
    batch = collate_blocks(items, bs, 0, pad_id=0)
    anchors = batch["anchors"]
    seq_len = batch["input_ids"].shape[1]
    mask = dense_block_mask(anchors, seq_len, bs)
    b, n = anchors.shape
    assert mask.shape == (b, 1, n * bs, seq_len + n * bs)
    for i in range(b):
        for q in range(n * bs):
            qn = q // bs
            for kv in range(seq_len + n * bs):
                # context: strictly before the anchor (never its own feature); blocks: only its own
                expect = kv < anchors[i, qn].item() if kv < seq_len else (kv - seq_len) // bs == qn
                assert bool(mask[i, 0, q, kv]) == expect, (i, q, kv)


def test_every_row_attends_somewhere():
    batch = collate_blocks(make_items(), 4, 0, pad_id=0)
    mask = dense_block_mask(batch["anchors"], batch["input_ids"].shape[1], 4)
    assert mask.any(-1).all()


def test_pad_blocks_adds_empty_blocks_to_a_whole_tile():
    from specauf.data.blocks import pad_blocks

    batch = collate_blocks(make_items(num_anchors=5), 16, 0, pad_id=0)
    padded = pad_blocks(batch, 16, 128)
    n = padded["anchors"].shape[1]
    assert n * 16 % 128 == 0 and n >= batch["anchors"].shape[1]
    assert (padded["anchors"][:, batch["anchors"].shape[1] :] == PAD_ANCHOR).all()
    assert padded["valid"].sum() == batch["valid"].sum()
    assert pad_blocks(padded, 16, 128) is padded
