"""CUDA paths: the flex_attention block mask equals the dense one, and a bf16 training step runs.

Skipped without a GPU; run on one with `pytest -m gpu`.
"""

import pytest
import torch
from torch.testing import assert_close

from specauf.data.blocks import collate_blocks, dense_block_mask, flex_block_mask, pad_blocks, sample_anchors
from specauf.drafters.dflash import DFlashDrafter
from specauf.drafters.head import linear_cross_entropy
from specauf.losses import AUF
from specauf.module import DrafterModule
from specauf.target import tiny_random

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def make_batch(block_size=16, seed=0, vocab=200):
    g = torch.Generator().manual_seed(seed)
    items = []
    for length in (300, 517):
        ids = torch.randint(0, vocab, (length,), generator=g)
        mask = torch.rand(length, generator=g) < 0.8
        items.append({"input_ids": ids, "loss_mask": mask, "anchors": sample_anchors(mask, 24, g)})
    return {k: v.cuda() for k, v in collate_blocks(items, block_size, 0, pad_id=0).items()}


def test_flex_mask_equals_dense_mask():
    torch.manual_seed(0)
    h, nf = 128, 2
    drafter = DFlashDrafter(hidden_size=h, num_heads=4, num_kv_heads=2, head_dim=32, intermediate_size=256,
                            num_feature_layers=nf, num_layers=2, block_size=16).cuda()  # fmt: skip
    emb = torch.nn.Embedding(200, h).cuda()
    batch = make_batch()
    b, s = batch["input_ids"].shape
    feats = torch.randn(b, s, nf * h, device="cuda")
    kv = drafter.context_kv(feats, torch.arange(s, device="cuda").expand(b, s))
    x = drafter.block_embeddings(batch["block_ids"], emb)
    pos = batch["block_pos"].flatten(1)
    dense = drafter(x, pos, kv, dense_block_mask(batch["anchors"], s, 16))
    flex = drafter(x, pos, kv, flex_block_mask(batch["anchors"], s, 16))
    assert_close(flex, dense, rtol=2e-3, atol=2e-3)


def test_linear_cross_entropy_bf16_close_to_fp32_reference():
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(3000, 256, device="cuda", generator=g)
    w = torch.randn(32000, 256, device="cuda", generator=g) * 0.05
    labels = torch.randint(0, 32000, (3000,), device="cuda", generator=g)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        ce, argmax, _ = linear_cross_entropy([x], [w], labels, chunk_size=1024)
    ref = torch.nn.functional.cross_entropy(x @ w.t(), labels, reduction="none")
    assert_close(ce, ref, rtol=3e-2, atol=3e-2)
    assert (argmax == (x @ w.t()).argmax(1)).float().mean() > 0.95


def test_bf16_training_step_on_cuda():
    target = tiny_random().cuda()
    drafter = DFlashDrafter.from_target(target, num_layers=2, block_size=16).cuda()
    module = DrafterModule(drafter, target, AUF(), optimizer=lambda p: torch.optim.AdamW(p, lr=1e-3)).cuda()
    batch = make_batch(vocab=250)
    opt = module.optimizer_factory(list(drafter.parameters()))
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss, metrics = module.objective(module.predictions(batch))
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert metrics["tf_tau"][1] > 0


def test_small_batches_compile_under_no_grad():
    """A validation-sized batch (few anchors: N·B below one 128-row tile) goes through flex_attention."""
    target = tiny_random().cuda()
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=16).cuda()
    module = DrafterModule(drafter, target, AUF(), optimizer=torch.optim.AdamW).cuda()
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 250, (80,), generator=g)
    mask = torch.ones(80, dtype=torch.bool)
    items = [{"input_ids": ids, "loss_mask": mask, "anchors": sample_anchors(mask, 5, g)}]
    batch = {k: v.cuda() for k, v in collate_blocks(items, 16, 0, pad_id=0).items()}
    with torch.no_grad():
        loss, _ = module.objective(module.predictions(batch))
    assert torch.isfinite(loss)


def test_varying_shapes_do_not_recompile_flex_each_step():
    """Real batches differ in context length and block count: flex_attention must not compile once per
    shape (dynamo's recompile limit would then drop it to the eager kernel, which materialises all scores)."""
    from torch._dynamo.utils import counters

    torch.manual_seed(0)
    h, nf = 128, 2
    drafter = DFlashDrafter(hidden_size=h, num_heads=4, num_kv_heads=2, head_dim=32, intermediate_size=256,
                            num_feature_layers=nf, num_layers=1, block_size=16).cuda()  # fmt: skip
    emb = torch.nn.Embedding(200, h).cuda()
    g = torch.Generator().manual_seed(0)
    graphs = []
    for step in range(10):
        items = []
        for length in (200 + 37 * step, 150 + 23 * step):
            ids = torch.randint(0, 200, (length,), generator=g)
            mask = torch.rand(length, generator=g) < 0.8
            items.append({"input_ids": ids, "loss_mask": mask, "anchors": sample_anchors(mask, 8 + step, g)})
        batch = pad_blocks(collate_blocks(items, 16, 0, pad_id=0), 16, 128)
        batch = {k: v.cuda() for k, v in batch.items()}
        b, s = batch["input_ids"].shape
        kv = drafter.context_kv(
            torch.randn(b, s, nf * h, device="cuda"), torch.arange(s, device="cuda").expand(b, s)
        )
        x = drafter.block_embeddings(batch["block_ids"], emb)
        pos = batch["block_pos"].flatten(1)
        flex = drafter(x, pos, kv, flex_block_mask(batch["anchors"], s, 16))
        dense = drafter(x, pos, kv, dense_block_mask(batch["anchors"], s, 16))
        assert_close(flex, dense, rtol=2e-3, atol=2e-3)
        graphs.append(counters["stats"]["unique_graphs"])
    # the first shapes may compile (static, then dynamic); the last several reuse what was compiled
    assert graphs[-1] == graphs[4], graphs


def test_compiled_nested_head_matches_fp32_reference_values_and_grads():
    """The compiled head kernels (bf16 matmuls, fp32 statistics) against full fp32 logits, both Domino heads."""
    from specauf.drafters.head import nested_linear_cross_entropy

    g = torch.Generator(device="cuda").manual_seed(0)
    m, h, r, v = 2500, 256, 32, 32000
    z = torch.randn(m, h, device="cuda", generator=g, requires_grad=True)
    c = torch.randn(m, r, device="cuda", generator=g, requires_grad=True)
    w = torch.randn(v, h, device="cuda", generator=g) * 0.05
    w2 = (torch.randn(v, r, device="cuda", generator=g) * 0.05).requires_grad_(True)
    labels = torch.randint(0, v, (m,), device="cuda", generator=g)
    up = torch.rand(2, m, device="cuda", generator=g)
    up[:, :700] = 0  # dead rows, skipped by the backward
    with torch.autocast("cuda", dtype=torch.bfloat16):
        (ce_b, arg_b, _), (ce_f, arg_f, _) = nested_linear_cross_entropy(
            [z, c], [w, w2], labels, (1, 2), 1024
        )
    ((ce_b * up[0]).sum() + (ce_f * up[1]).sum()).backward()
    got = [t.grad.clone() for t in (z, c, w2)]
    for t in (z, c, w2):
        t.grad = None
    base, final = z @ w.t(), z @ w.t() + c @ w2.t()
    ref_b = torch.nn.functional.cross_entropy(base, labels, reduction="none")
    ref_f = torch.nn.functional.cross_entropy(final, labels, reduction="none")
    ((ref_b * up[0]).sum() + (ref_f * up[1]).sum()).backward()
    assert_close(ce_b, ref_b, rtol=3e-2, atol=3e-2)
    assert_close(ce_f, ref_f, rtol=3e-2, atol=3e-2)
    assert (arg_b == base.argmax(1)).float().mean() > 0.95
    assert (arg_f == final.argmax(1)).float().mean() > 0.95
    for a, b in zip(got, (z.grad, c.grad, w2.grad), strict=True):
        # bf16 matmuls: compare as a whole (relative Frobenius error), not element by element
        assert (a - b).norm() / b.norm() < 2e-2


def test_compiled_decoding_equals_plain_greedy_on_cuda():
    """The verify step replayed as a CUDA graph, with rollbacks of the static cache between replays, emits
    exactly plain greedy decoding's tokens (an untrained drafter: rejections and rollbacks; and AR)."""
    from specauf.decoding import SpeculativeDecoder, plain_greedy

    target = tiny_random().cuda()
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=8).cuda().eval()
    ids = torch.randint(0, 250, (1, 21), generator=torch.Generator().manual_seed(3))
    want = plain_greedy(target, ids, 40, eos_ids=[])
    from specauf.drafters.domino import DominoDrafter
    from specauf.drafters.fused import eager

    domino = DominoDrafter.from_target(target, num_layers=1, block_size=8).cuda().eval()
    torch.nn.init.normal_(domino.w2.weight, std=0.02)  # a live correction head (it starts at zero)
    for decoder in (
        SpeculativeDecoder(target, drafter),
        SpeculativeDecoder(target, domino),
        SpeculativeDecoder(target, None),
    ):
        assert decoder.compile
        for _ in range(2):  # the second run replays the graphs recorded by the first
            assert decoder.generate(ids, 40, eos_ids=[]).tokens == want
    # the graphed draft (Domino: its GRU loop inside the graph) equals the eager one
    state = SpeculativeDecoder(target, domino)._caches(21 + 40 + domino.num_drafted + 1)[1]
    _, feats, _ = target.step(ids.cuda(), target.new_cache(max_length=1024))
    state.prefill(feats)
    graphed = state.first(ids[0, -1:].cuda(), 21)[0].clone()  # (drafts, no logits when greedy)
    state.graph_enabled, state.graph = False, None
    with eager():  # the same plain ops the graph captured
        assert torch.equal(graphed, state.first(ids[0, -1:].cuda(), 21)[0])


def test_batched_graph_decoding_equals_plain_greedy_on_cuda():
    """The whole batched greedy cycle replayed as a CUDA graph (rows joining freed slots, the batch halving
    at the tail) emits each prompt's plain greedy tokens, like the eager batched loop; no silent fallback."""
    from specauf.batched import BatchedSpeculativeDecoder
    from specauf.decoding import plain_greedy
    from specauf.drafters.domino import DominoDrafter

    target = tiny_random().cuda()
    g = torch.Generator().manual_seed(4)
    prompts = [torch.randint(0, 250, (n,), generator=g).tolist() for n in (21, 5, 40, 13, 9, 30, 2)]
    budgets = [40, 12, 33, 40, 7, 25, 40]
    want = [plain_greedy(target, p, b, eos_ids=[]) for p, b in zip(prompts, budgets, strict=True)]
    dflash = DFlashDrafter.from_target(target, num_layers=1, block_size=8).cuda().eval()
    domino = DominoDrafter.from_target(target, num_layers=1, block_size=8).cuda().eval()
    torch.nn.init.normal_(domino.w2.weight, std=0.02)
    for drafter in (dflash, domino, None):
        graphed = BatchedSpeculativeDecoder(target, drafter, 3)
        assert graphed.graphs
        out = graphed.generate_many(prompts, budgets, eos_ids=[])
        assert [r.tokens for r in out] == want
        assert graphed.graphs and graphed.graph_cycles > 0  # captured, not fallen back to eager
        plain = BatchedSpeculativeDecoder(target, drafter, 3, compile=False)
        assert [r.accepted for r in plain.generate_many(prompts, budgets, eos_ids=[])] == [
            r.accepted for r in out
        ]
