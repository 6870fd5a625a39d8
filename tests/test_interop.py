"""Exports load in the field's own classes and compute what specauf computes (docs/method.md §10).

DFlash: z-lab's `dflash.DFlashDraftModel` (PyPI `dflash` 0.1.0) and its `dflash_generate` loop. Domino:
SpecForge's `DominoDraftModel` (PyPI `specforge` 0.2.0, the class SGLang's Domino loader mirrors). Each with
a spare mask row and with a learned mask. These packages pin their own transformers, so the tests run in
the interop environment (`make setup` builds it, `make test-interop` runs them) and skip elsewhere.
"""

from __future__ import annotations

import pytest
import torch

from specauf.decoding import SpeculativeDecoder
from specauf.drafters.dflash import DFlashDrafter
from specauf.drafters.domino import DominoDrafter
from specauf.export_layout import export_checkpoint
from specauf.interop import (
    load_exactly,
    load_zlab,
    serve_mask_in_target,
    served_mask_embedding,
    zlab_generate,
)
from specauf.target import Target, tiny_random
from tests.checkpoints import save_checkpoint, trained_like

pytestmark = pytest.mark.interop

zlab = pytest.importorskip("dflash.model", reason="z-lab's dflash is in the interop environment (make setup)")
specforge = pytest.importorskip(
    "specforge.modeling.draft.domino", reason="SpecForge is in the interop environment (make setup)"
)

TINY = {"num_layers": 4, "hidden_size": 32, "intermediate_size": 64, "num_feature_layers": 2, "seed": 0}
SERVED_AS = 17  # a learned mask is served under an id that never occurs in the sequences below
ATOL = 1e-5


def exported(
    tmp_path, kind: str, learned: bool, served_as: int = SERVED_AS
) -> tuple[torch.nn.Module, Target, object]:
    kwargs = {**TINY, "with_mask_token": not learned}
    target = tiny_random(**kwargs)
    cls = {"dflash": DFlashDrafter, "domino": DominoDrafter}[kind]
    extra = {"gru_size": 16, "rank": 8} if kind == "domino" else {}
    drafter = trained_like(cls.from_target(target, num_layers=2, block_size=6, **extra))
    assert (drafter.mask_token_id is None) == learned
    ckpt = save_checkpoint(tmp_path / "last.ckpt", target, drafter, target_kwargs=kwargs)
    out = export_checkpoint(ckpt, tmp_path / "export", mask_token_id=served_as if learned else None)
    return drafter, target, out


def block_inputs(drafter, target: Target, served_embedding: torch.Tensor | None):
    """One context of 7 tokens and the block drafted after it, as both sides take them."""
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, 11]])
    features = target.features(ids)  # [1, 7, n·H]: HF hidden_states[i + 1] of the feature layers
    block = torch.full((1, 1, drafter.block_size), 11)
    ours_embeds = drafter.block_embeddings(block, target.embed)
    # What a loader feeds: the anchor's embedding, then the mask id's row, replaced by the shipped mask
    # embedding when there is one (vLLM's mask_embedding.pt rule).
    mask_id = drafter.mask_token_id if served_embedding is None else SERVED_AS
    noise = target.embed(torch.tensor([[11] + [mask_id] * (drafter.block_size - 1)]))
    if served_embedding is not None:
        noise[0, 1:] = served_embedding
    assert torch.allclose(noise, ours_embeds, atol=0)
    positions = torch.arange(7 + drafter.block_size)[None]
    return features, ours_embeds, noise, positions


def our_hidden(drafter, features, embeds, positions) -> torch.Tensor:
    ctx = drafter.context_kv(features, positions[:, :7])
    return drafter(embeds, positions[:, 7:], ctx, None)  # [1, B, H], after the final norm


def served_embedding(out) -> torch.Tensor | None:
    served = served_mask_embedding(out)
    return None if served is None else served[1]


@pytest.mark.parametrize("learned", [False, True], ids=["spare-row", "learned-mask"])
def test_zlab_dflash_loads_the_export_and_computes_the_same_hidden_states(tmp_path, learned):
    drafter, target, out = exported(tmp_path, "dflash", learned)
    theirs = load_zlab(out)
    assert theirs.target_layer_ids == target.layer_ids and theirs.block_size == drafter.block_size
    assert theirs.mask_token_id == (SERVED_AS if learned else target.mask_token_id)
    features, embeds, noise, positions = block_inputs(drafter, target, served_embedding(out))
    with torch.no_grad():
        want = our_hidden(drafter, features, embeds, positions)
        got = theirs(position_ids=positions, noise_embedding=noise, target_hidden=features)
        torch.testing.assert_close(got, want, atol=ATOL, rtol=0)
        logits = theirs.compute_logits(got[:, 1:], target.model.lm_head)
    assert torch.equal(
        logits.argmax(-1), (drafter.drafted_hidden(want)[:, 0] @ target.lm_head_weight.t()).argmax(-1)
    )


@pytest.mark.parametrize("learned", [False, True], ids=["spare-row", "learned-mask"])
def test_specforge_domino_loads_the_export_and_computes_the_same_logits(tmp_path, learned):
    drafter, target, out = exported(tmp_path, "domino", learned)
    theirs = load_exactly(specforge.DominoDraftModel, out)
    assert (theirs.shift_label, theirs.pure_draft_prefix_len) == (True, drafter.base_slots)
    features, embeds, noise, positions = block_inputs(drafter, target, served_embedding(out))
    gold = torch.tensor([[3, 14, 15, 92, 65, 35]])  # the block's tokens t1..tB, teacher-forced
    with torch.no_grad():
        hidden = our_hidden(drafter, features, embeds, positions)
        z = drafter.drafted_hidden(hidden)[:, 0]  # [1, D, H], D = B (next-token labels)
        realised = target.embed(torch.cat([torch.tensor([[11]]), gold[:, :-1]], dim=1))
        want = z @ target.lm_head_weight.t() + drafter.w2(drafter.correction_input(z, realised))
        their_hidden = theirs(position_ids=positions, noise_embedding=noise, target_hidden=features)
        torch.testing.assert_close(their_hidden, hidden, atol=ATOL, rtol=0)
        base = target.model.lm_head(their_hidden)[:, None]  # [1, 1, B, V]
        got = theirs.apply_logits_head(
            base, prev_token_embeddings=realised[:, None], hidden_states=their_hidden[:, None]
        )
    torch.testing.assert_close(got[:, 0], want, atol=ATOL, rtol=0)


@pytest.mark.parametrize("learned", [False, True], ids=["spare-row", "learned-mask"])
def test_zlab_generate_and_specauf_decode_the_same_tokens_with_the_same_acceptance(tmp_path, learned):
    prompts = [[5, 6, 7, 8, 9], [42, 18, 99, 3], list(range(30, 60))]
    # A random tiny target may emit any id: serve the mask under one these decodes never hold, so writing
    # it into the target's row leaves the target's own computation unchanged (checked after the export).
    drafter, target, out = exported(tmp_path / "probe", "dflash", learned)
    seen = {
        t for p in prompts for t in p + SpeculativeDecoder(target, drafter).generate(p, 40, eos_ids=[]).tokens
    }
    served_as = min(set(range(target.vocab_size)) - seen)
    drafter, target, out = exported(tmp_path, "dflash", learned, served_as)
    theirs = load_zlab(out)
    ours = SpeculativeDecoder(target, drafter)
    before = [ours.generate(p, 40, eos_ids=[]).tokens for p in prompts]
    assert served_as not in {t for p, b in zip(prompts, before, strict=True) for t in p + b}
    assert serve_mask_in_target(target, out) == (served_as if learned else None)
    for prompt in prompts:
        for stop in (None, list(target.eos_token_ids)):
            mine = ours.generate(prompt, 40, eos_ids=[] if stop is None else stop)
            tokens, accepted = zlab_generate(theirs, target, prompt, 40, stop)
            assert tokens == mine.tokens, prompt
            assert accepted == [a + 1 for a in mine.accepted], prompt  # z-lab counts the bonus token too


@pytest.mark.slow
def test_zlab_and_specauf_agree_on_smollm2(tmp_path):
    """The real target, a learned mask served as <empty_output>: experiments/parity_zlab.py's comparison."""
    from experiments.parity_zlab import compare, parse_args
    from specauf.target import smollm2_135m
    from tests.conftest import SHARED_DATA

    if not SHARED_DATA.is_dir():
        pytest.skip(f"needs the offline benchmark files in {SHARED_DATA}")
    target = smollm2_135m()
    torch.manual_seed(0)
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=16).eval()
    ckpt = save_checkpoint(
        tmp_path / "last.ckpt", target, drafter, target_config={"_target_": "specauf.target.smollm2_135m"}
    )
    out = export_checkpoint(ckpt, tmp_path / "export")
    args = parse_args([str(out), "--n", "2", "--max-new-tokens", "32", "--data-dir", str(SHARED_DATA)])
    rows = compare(out, args)
    assert len(rows) == 10
    assert all(r["tokens_equal"] and r["cycles_equal"] for r in rows), rows
