"""Domino: the correction head on top of the DFlash backbone and its AUF placements (the curriculum that
combines the branches is tested in tests/test_losses.py)."""

import pytest
import torch
from torch.testing import assert_close

from specauf.data.blocks import collate_blocks, dense_block_mask, sample_anchors
from specauf.drafters.dflash import DFlashDrafter
from specauf.drafters.domino import DominoDrafter
from specauf.losses import AUF, BranchPlacement, CrossEntropy, Predictions

H, V, NF, B = 32, 40, 2, 4
SHAPE = dict(hidden_size=H, num_heads=4, num_kv_heads=2, head_dim=8, intermediate_size=64, num_feature_layers=NF,
             num_layers=2, block_size=B, init_std=0.2)  # fmt: skip


def domino(**kw):
    torch.manual_seed(0)
    return DominoDrafter(vocab_size=V, gru_size=16, rank=8, **SHAPE, **kw).double()


def batch_and_features(seed=0):
    g = torch.Generator().manual_seed(seed)
    items = []
    for length in (14, 20):
        ids = torch.randint(0, V, (length,), generator=g)
        mask = torch.rand(length, generator=g) < 0.8
        items.append({"input_ids": ids, "loss_mask": mask, "anchors": sample_anchors(mask, 4, g)})
    batch = collate_blocks(items, B, 1, pad_id=0)
    feats = torch.randn(2, batch["input_ids"].shape[1], NF * H, generator=g, dtype=torch.float64)
    return batch, feats


def forward(drafter, batch, feats, emb):
    b, s = batch["input_ids"].shape
    kv = drafter.context_kv(feats, torch.arange(s).expand(b, s))
    x = drafter.block_embeddings(batch["block_ids"], emb)
    hidden = drafter(x, batch["block_pos"].flatten(1), kv, dense_block_mask(batch["anchors"], s, B))
    return drafter.predict(hidden, batch["labels"], batch["valid"], emb.weight, batch["block_ids"], emb)


@pytest.fixture
def emb():
    torch.manual_seed(1)
    return torch.nn.Embedding(V, H).double().requires_grad_(False)


def test_zero_correction_equals_the_dflash_backbone(emb):
    dom = domino()
    assert (dom.w2.weight == 0).all()  # zero-initialised: training starts from the backbone
    dfl = DFlashDrafter(label_offset=1, **SHAPE).double()
    dfl.load_state_dict(dom.state_dict(), strict=False)
    batch, feats = batch_and_features()
    p_dom, p_dfl = forward(dom, batch, feats, emb), forward(dfl, batch, feats, emb)
    assert_close(p_dom["final"].ce, p_dfl["final"].ce)
    assert_close(p_dom["base"].ce, p_dfl["final"].ce)
    assert torch.equal(p_dom["final"].hit, p_dfl["final"].hit)


def test_gradients_reach_the_gru_and_the_bottleneck(emb):
    dom = domino()
    torch.nn.init.normal_(dom.w2.weight, std=0.5)
    batch, feats = batch_and_features()
    p = forward(dom, batch, feats, emb)["final"]
    (p.ce * p.valid).sum().backward()
    for name in ("gru.weight_ih_l0", "gru.weight_hh_l0", "w1.weight", "w2.weight", "fc.weight"):
        grad = dict(dom.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert not any("bias" in n for n, _ in dom.gru.named_parameters())


def test_first_slot_uses_base_logits_only(emb):
    dom = domino()
    torch.nn.init.normal_(dom.w2.weight, std=0.5)
    batch, feats = batch_and_features()
    p = forward(dom, batch, feats, emb)
    assert_close(p["final"].ce[:, 0], p["base"].ce[:, 0])
    assert not torch.allclose(p["final"].ce[:, 1:], p["base"].ce[:, 1:])


def test_sequential_draft_matches_teacher_forced_head(emb):
    """The decoding loop and the training head compute the same logits when the GRU reads the draft."""
    dom = domino()
    torch.nn.init.normal_(dom.w2.weight, std=2.0)
    g = torch.Generator().manual_seed(3)
    s = 9
    feats = torch.randn(1, s, NF * H, generator=g, dtype=torch.float64)
    anchor = torch.tensor([5])
    kv = dom.context_kv(feats, torch.arange(s)[None])
    drafted = dom.draft(anchor, torch.tensor([s]), kv, emb, emb.weight)  # [1, B]
    assert drafted.shape == (1, B)
    # teacher-force the same tokens through the training path: every argmax must reproduce the draft
    block_ids = torch.zeros(1, 1, B, dtype=torch.long)
    block_ids[0, 0, 0] = anchor
    hidden = dom(dom.block_embeddings(block_ids, emb), (s + torch.arange(B))[None], kv, None)
    labels = drafted.view(1, 1, B)
    p = dom.predict(hidden, labels, torch.ones_like(labels, dtype=torch.bool), emb.weight, block_ids, emb)
    assert p["final"].hit.all()


def test_placements_take_support_from_the_named_branch():
    ones = torch.ones(1, 4, dtype=torch.bool)
    base = Predictions(ce=torch.ones(1, 4), valid=ones, hit=torch.tensor([[1, 0, 1, 1]], dtype=torch.bool))
    final = Predictions(ce=torch.ones(1, 4), valid=ones, hit=torch.tensor([[1, 1, 1, 0]], dtype=torch.bool))
    preds = {"base": base, "final": final}

    def active(loss):
        return {
            k: (m["active_ratio"][0] / m["active_ratio"][1]).item()
            for k, (_, m) in loss.per_branch(preds).items()
        }

    assert active(BranchPlacement(AUF(), CrossEntropy())) == {"base": 0.5, "final": 1.0}  # B-AUF
    assert active(BranchPlacement(AUF(), AUF(), {"final": "base"})) == {"base": 0.5, "final": 0.5}  # S-AUF
    assert active(BranchPlacement(AUF(), AUF())) == {
        "base": 0.5,
        "final": 1.0,
    }  # F-AUF: final hits 3 then misses
    assert active(AUF()) == active(BranchPlacement(AUF(), AUF()))
    with pytest.raises(ValueError, match="support_from"):
        BranchPlacement(AUF(), AUF(), {"final": "other"})


def test_domino_speculative_greedy_equals_plain_greedy():
    from specauf.decoding import SpeculativeDecoder, plain_greedy
    from specauf.target import tiny_random

    target = tiny_random()
    torch.manual_seed(0)
    dom = DominoDrafter.from_target(target, num_layers=1, block_size=6, gru_size=16, rank=8, init_std=0.2)
    torch.nn.init.normal_(dom.w2.weight, std=1.0)  # a live correction head, not the zero init
    decoder = SpeculativeDecoder(target, dom)
    assert decoder.max_tau == 7  # next-token drafter: B drafts + the bonus
    for text in ("hello there", "count to five", "the quick brown fox"):
        prompt = target.tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
        )
        prompt = prompt["input_ids"] if isinstance(prompt, dict) or hasattr(prompt, "keys") else prompt
        out = decoder.generate(prompt, 40, eos_ids=[])
        assert out.tokens == plain_greedy(target, prompt, 40, eos_ids=[])
        assert 1.0 <= out.tau <= 7.0
