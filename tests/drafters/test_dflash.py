"""The DFlash drafter: a packed forward over many blocks equals drafting each block alone."""

import pytest
import torch
from torch.testing import assert_close

from specauf.data.blocks import collate_blocks, dense_block_mask, sample_anchors
from specauf.drafters.dflash import DFlashDrafter

H, V, NF = 32, 40, 2


def tiny_drafter(**kw):
    torch.manual_seed(0)
    cfg = dict(
        hidden_size=H,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        intermediate_size=64,
        num_feature_layers=NF,
        num_layers=2,
        block_size=4,
        init_std=0.2,
    )
    cfg.update(kw)
    return DFlashDrafter(**cfg).double()


def batch_and_features(block_size=4, label_offset=0, seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for length in (14, 20):
        ids = torch.randint(0, V, (length,), generator=g)
        mask = torch.rand(length, generator=g) < 0.8
        items.append({"input_ids": ids, "loss_mask": mask, "anchors": sample_anchors(mask, 4, g)})
    batch = collate_blocks(items, block_size, label_offset, pad_id=0)
    feats = torch.randn(2, batch["input_ids"].shape[1], NF * H, generator=g, dtype=torch.float64)
    return batch, feats


def run_packed(drafter, batch, feats, embed):
    b, s = batch["input_ids"].shape
    ctx_kv = drafter.context_kv(feats, torch.arange(s).expand(b, s))
    mask = dense_block_mask(batch["anchors"], s, drafter.block_size)
    x = drafter.block_embeddings(batch["block_ids"], embed)
    return drafter(x, batch["block_pos"].flatten(1), ctx_kv, mask)


@pytest.mark.parametrize("mask_token_id", [None, 7])
def test_packed_equals_each_block_alone(mask_token_id):
    drafter = tiny_drafter(mask_token_id=mask_token_id)
    emb = torch.nn.Embedding(V, H).double()
    batch, feats = batch_and_features()
    packed = run_packed(drafter, batch, feats, emb)
    bs = drafter.block_size
    for i in range(2):
        for n, anchor in enumerate(batch["anchors"][i].tolist()):
            if anchor < 0:
                continue
            ctx = feats[i : i + 1, :anchor]  # only the context strictly before the anchor
            kv = drafter.context_kv(ctx, torch.arange(anchor)[None])
            x = drafter.block_embeddings(batch["block_ids"][i : i + 1, n : n + 1], emb)
            alone = drafter(x, batch["block_pos"][i : i + 1, n], kv, None)
            assert_close(packed[i, n * bs : (n + 1) * bs], alone[0])


def test_future_context_does_not_leak():
    drafter = tiny_drafter()
    emb = torch.nn.Embedding(V, H).double()
    batch, feats = batch_and_features()
    before = run_packed(drafter, batch, feats, emb)
    a = batch["anchors"][0, 0].item()
    feats2 = feats.clone()
    feats2[0, a:] += 10.0  # perturb the anchor's own feature and everything after it
    after = run_packed(drafter, batch, feats2, emb)
    assert_close(before[0, :4], after[0, :4])


def test_predict_shapes_and_gradients():
    drafter = tiny_drafter()
    emb = torch.nn.Embedding(V, H).double().requires_grad_(False)
    batch, feats = batch_and_features()
    hidden = run_packed(drafter, batch, feats, emb)
    preds = drafter.predict(hidden, batch["labels"], batch["valid"], emb.weight, batch["block_ids"])
    p = preds["final"]
    b, n, d = batch["labels"].shape
    assert d == drafter.num_drafted == 3
    assert p.ce.shape == (b * n, d)
    assert (p.ce[~p.valid] == 0).all() and (p.ce[p.valid] > 0).all()
    (p.ce * p.valid).sum().backward()
    assert drafter.fc.weight.grad.abs().sum() > 0
    assert drafter.layers[0].self_attn.q_proj.weight.grad.abs().sum() > 0
    assert drafter.mask_embedding.grad.abs().sum() > 0
    assert emb.weight.grad is None


def test_next_token_alignment_drafts_every_slot():
    drafter = tiny_drafter(label_offset=1)
    assert drafter.num_drafted == 4
    with pytest.raises(ValueError, match="label_offset"):
        tiny_drafter(label_offset=2)


@pytest.mark.parametrize("mask_token_id", [None, 5])
def test_masked_static_context_equals_exact_context(mask_token_id):
    """The decoder's preallocated context cache: rows past the length hold stale keys/values that
    `context_mask` hides; the draft equals one over a cache holding exactly the visible rows."""
    drafter = tiny_drafter(mask_token_id=mask_token_id)
    emb = torch.nn.Embedding(V, H).double()
    s, room = 13, 40
    kv = drafter.context_kv(torch.randn(1, s, NF * H, dtype=torch.float64), torch.arange(s)[None])
    padded = []
    for k, v in kv:
        stale = torch.randn(1, k.shape[1], room, k.shape[3], dtype=torch.float64) * 5
        k_buf, v_buf = stale.clone(), stale.clone()
        k_buf[:, :, :s], v_buf[:, :, :s] = k, v
        padded.append((k_buf, v_buf))
    anchor, pos = torch.tensor([7]), torch.tensor([s])
    visible = torch.arange(room) < s
    exact = drafter.draft_hidden(anchor, pos, kv, emb)
    masked = drafter.draft_hidden(anchor, pos, padded, emb, context_mask=visible)
    assert_close(masked, exact)
    assert torch.equal(
        drafter.draft(anchor, pos, padded, emb, emb.weight, context_mask=visible),
        drafter.draft(anchor, pos, kv, emb, emb.weight),
    )
