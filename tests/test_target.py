"""Target loading, context features and the KV-cache step, on a tiny random Llama (plus one slow SmolLM2 run)."""

from __future__ import annotations

import re
import time

import pytest
import torch
from torch.testing import assert_close

from specauf.target import Target, default_layer_ids, from_pretrained, smollm2_135m, tiny_random

# Cached vs uncached (and padded vs unpadded) attention sums in a different order: fp32 noise of ~2e-5 on
# hidden states of magnitude ~30. Far below the smallest top-2 logit gap of the tiny target (~3e-3).
TOL = {"rtol": 1e-4, "atol": 1e-4}


@pytest.fixture(scope="module")
def target() -> Target:
    return tiny_random(num_layers=6, num_feature_layers=3, seed=0)


def full_forward(target: Target, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: one uncached forward of the whole LM, features built from HF's own hidden_states."""
    with torch.no_grad():
        out = target.model(ids, output_hidden_states=True, use_cache=False)
    feats = torch.cat([out.hidden_states[i + 1] for i in target.layer_ids], dim=-1)
    return out.logits, feats


def random_ids(b: int, s: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, 259, (b, s), generator=torch.Generator().manual_seed(seed))


# --- layer ids -------------------------------------------------------------------------------------------


def test_default_layer_ids_paper_rule():
    assert default_layer_ids(36) == [1, 9, 17, 25, 33]
    assert default_layer_ids(30) == [1, 8, 14, 21, 27]  # 7.5 and 20.5 round half up
    assert default_layer_ids(28, 5) == [1, 7, 13, 19, 25]
    assert default_layer_ids(6, 2) == [1, 3]


@pytest.mark.parametrize("num_layers", range(1, 12))
@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_default_layer_ids_tiny_models_stay_in_range(num_layers, n):
    ids = default_layer_ids(num_layers, n)
    assert ids == sorted(set(ids))
    assert 1 <= len(ids) <= n
    assert all(0 <= i < num_layers for i in ids)


def test_default_layer_ids_rejects_nonsense():
    with pytest.raises(ValueError):
        default_layer_ids(0)
    with pytest.raises(ValueError):
        default_layer_ids(10, 0)


# --- description -----------------------------------------------------------------------------------------


def test_tiny_target_description(target):
    assert target.num_layers == 6 and target.hidden_size == 64
    assert target.layer_ids == default_layer_ids(6, 3) and target.num_feature_layers == 3
    assert target.vocab_size == 260 and target.mask_token_id == 259  # spare row after the 259 tokens
    assert target.eos_token_ids == [target.tokenizer.convert_tokens_to_ids("<|im_end|>")]
    assert target.name.startswith("tiny_random-seed0-")
    assert target.config is target.model.config


def test_frozen_and_eval(target):
    assert all(not p.requires_grad for p in target.parameters())
    target.train()
    assert not target.training and not target.model.training


def test_embed_and_lm_head_shapes(target):
    ids = random_ids(2, 7)
    assert target.embed(ids).shape == (2, 7, 64)
    assert target.lm_head_weight.shape == (260, 64)
    assert not target.lm_head_weight.requires_grad


def test_tiny_random_is_deterministic_and_leaves_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = tiny_random(seed=3), tiny_random(seed=3), tiny_random(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.name == b.name != c.name
    for (k, pa), pb in zip(a.model.state_dict().items(), b.model.state_dict().values(), strict=True):
        assert torch.equal(pa, pb), k
    assert not torch.equal(a.lm_head_weight, c.lm_head_weight)


def test_tiny_random_without_mask_row():
    t = tiny_random(with_mask_token=False, tie_word_embeddings=True)
    assert t.mask_token_id is None and t.vocab_size == 259
    assert t.lm_head_weight is t.model.get_input_embeddings().weight


# --- features --------------------------------------------------------------------------------------------


def test_features_match_hf_hidden_states(target):
    ids = random_ids(2, 20)
    feats = target.features(ids)
    assert feats.shape == (2, 20, 3 * 64)
    assert_close(feats, full_forward(target, ids)[1])


def test_features_right_padding(target):
    lengths = [20, 13, 5]
    batch = torch.full((3, 20), target.tokenizer.pad_token_id)
    mask = torch.zeros(3, 20, dtype=torch.long)
    seqs = [random_ids(1, n, seed=10 + j)[0] for j, n in enumerate(lengths)]
    for j, seq in enumerate(seqs):
        batch[j, : len(seq)] = seq
        mask[j, : len(seq)] = 1
    feats = target.features(batch, attention_mask=mask)
    for j, seq in enumerate(seqs):
        assert_close(feats[j, : len(seq)], target.features(seq[None])[0], **TOL)


# --- decoding: step / crop -------------------------------------------------------------------------------


def test_step_incremental_equals_full_forward(target):
    ids = random_ids(1, 24)
    ref_logits, ref_feats = full_forward(target, ids)

    logits, feats, cache = target.step(ids[:, :10])  # prefill
    assert logits.shape == (1, 10, 260) and feats.shape == (1, 10, 192)
    assert target.cache_length(cache) == 10
    got_logits, got_feats = [logits], [feats]
    for t in range(10, 24):  # then one token at a time
        logits, feats, cache = target.step(ids[:, t : t + 1], cache)
        got_logits.append(logits)
        got_feats.append(feats)
    assert target.cache_length(cache) == 24
    assert_close(torch.cat(got_logits, 1), ref_logits, **TOL)
    assert_close(torch.cat(got_feats, 1), ref_feats, **TOL)


def new_cache(target: Target, kind: str):
    """None lets `step` make the growing cache; "static" is the decoder's preallocated one."""
    return target.new_cache(max_length=48) if kind == "static" else None


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_step_block_then_crop_and_restep(target, kind):
    """The decoder's cycle: verify a block, roll back the rejected tail, go on from the accepted prefix."""
    ids = random_ids(1, 30)
    ref_logits, ref_feats = full_forward(target, ids)
    _, _, cache = target.step(ids[:, :12], new_cache(target, kind))
    assert target.cache_is_static(cache) == (kind == "static")

    wrong = (ids[:, 12:20] + 7) % 259  # a block of 8 drafts of which only the first 3 are "accepted"
    wrong[:, :3] = ids[:, 12:15]
    logits, feats, cache = target.step(wrong, cache)
    assert logits.shape == (1, 8, 260) and target.cache_length(cache) == 20
    assert_close(logits[:, :3], ref_logits[:, 12:15], **TOL)
    assert_close(feats[:, :3], ref_feats[:, 12:15], **TOL)

    cache = target.crop_cache(cache, 15)
    assert target.cache_length(cache) == 15
    logits, feats, cache = target.step(ids[:, 15:30], cache)
    assert_close(logits, ref_logits[:, 15:30], **TOL)
    assert_close(feats, ref_feats[:, 15:30], **TOL)


def test_static_cache_overflow_names_the_fix(target):
    _, _, cache = target.step(random_ids(1, 40), target.new_cache(max_length=48))
    with pytest.raises(ValueError, match="max_length"):
        target.step(random_ids(1, 9), cache)
    assert target.cache_length(cache) == 40  # the failed step wrote nothing


def test_compiled_step_needs_a_static_cache(target):
    with pytest.raises(ValueError, match="static cache"):
        target.step(random_ids(1, 4), compiled=True)


def test_step_logits_to_keep_and_batch(target):
    ids = random_ids(3, 9)
    ref_logits, ref_feats = full_forward(target, ids)
    logits, feats, _ = target.step(ids, target.new_cache(), logits_to_keep=1)
    assert logits.shape == (3, 1, 260)
    assert_close(logits, ref_logits[:, -1:], **TOL)
    assert_close(feats, ref_feats, **TOL)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_crop_cache_edges(target, kind):
    ids = random_ids(1, 6)
    ref_logits, _ = full_forward(target, ids)
    _, _, cache = target.step(ids[:, :4], new_cache(target, kind))
    assert target.cache_length(target.crop_cache(cache, 4)) == 4  # nothing to remove: a no-op
    assert target.cache_length(target.crop_cache(cache, 0)) == 0  # everything: starts over
    logits, _, cache = target.step(ids, cache)
    assert_close(logits, ref_logits, **TOL)


@pytest.mark.parametrize("kind", ["dynamic", "static"])
def test_crop_cache_rejects_bad_length(target, kind):
    _, _, cache = target.step(random_ids(1, 4), new_cache(target, kind))
    with pytest.raises(ValueError):
        target.crop_cache(cache, 5)
    with pytest.raises(ValueError):
        target.crop_cache(cache, -1)


def test_greedy_via_step_equals_generate(target):
    prompt = target.tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )["input_ids"]
    with torch.no_grad():
        ref = target.model.generate(prompt, max_new_tokens=12, do_sample=False, eos_token_id=None)
    logits, _, cache = target.step(prompt, logits_to_keep=1)
    out = prompt
    for _ in range(12):
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], 1)
        logits, _, cache = target.step(nxt, cache)
    assert torch.equal(out, ref)


# --- validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/no/such/model_dir", "./missing_model", "~/definitely-missing-specauf"])
def test_missing_local_path(path):
    with pytest.raises(FileNotFoundError, match=re.escape(path)) as err:
        from_pretrained(path)
    assert "target.path=" in str(err.value)


def test_local_dir_without_config(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        from_pretrained(str(tmp_path))


def test_from_pretrained_local_roundtrip(tmp_path, target):
    target.model.save_pretrained(tmp_path)
    target.tokenizer.save_pretrained(tmp_path)
    loaded = from_pretrained(str(tmp_path), num_feature_layers=2, mask_token_id=259, name="tiny")
    assert loaded.name == "tiny" and loaded.layer_ids == default_layer_ids(6, 2)
    assert loaded.mask_token_id == 259
    assert all(not p.requires_grad for p in loaded.parameters())
    ids = random_ids(1, 8)
    assert_close(loaded.step(ids)[0], target.step(ids)[0], **TOL)
    with pytest.raises(ValueError, match="mask_token_id"):
        from_pretrained(str(tmp_path), mask_token_id=260)
    with pytest.raises(ValueError, match="dtype"):
        from_pretrained(str(tmp_path), dtype="fp8")


@pytest.mark.parametrize("kwargs", [{"mask_token_id": 260}, {"mask_token_id": -1}])
def test_bad_mask_token_id(target, kwargs):
    with pytest.raises(ValueError, match="mask_token_id"):
        Target(target.model, target.tokenizer, **kwargs)


@pytest.mark.parametrize("layer_ids", [[6], [-1], [0, 6], [], [2, 2]])
def test_bad_layer_ids(layer_ids):
    with pytest.raises(ValueError, match="layer_ids"):
        tiny_random(num_layers=6, layer_ids=layer_ids)


# --- the real default target -----------------------------------------------------------------------------


@pytest.mark.slow
def test_smollm2_135m():
    start = time.perf_counter()
    target = smollm2_135m()
    first = time.perf_counter() - start
    assert (target.num_layers, target.hidden_size, target.vocab_size) == (30, 576, 49152)
    assert target.mask_token_id is None
    assert target.layer_ids == default_layer_ids(30, 5) == [1, 8, 14, 21, 27]
    assert target.eos_token_ids == [2]
    assert target.lm_head_weight is target.model.get_input_embeddings().weight  # tied

    tok = target.tokenizer
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )["input_ids"]
    with torch.no_grad():
        ref = target.model.generate(prompt, max_new_tokens=24, do_sample=False)
    answer = tok.decode(ref[0, prompt.shape[1] :], skip_special_tokens=True)
    assert "4" in answer, answer

    # The decoder's path (step + cache) reproduces plain greedy decoding on the real model too.
    logits, feats, cache = target.step(prompt, logits_to_keep=1)
    assert feats.shape == (1, prompt.shape[1], 5 * 576)
    out = prompt
    while out.shape[1] < ref.shape[1]:
        nxt = logits[:, -1].argmax(-1, keepdim=True)
        out = torch.cat([out, nxt], 1)
        if nxt.item() in target.eos_token_ids:
            break
        logits, _, cache = target.step(nxt, cache)
    assert torch.equal(out, ref)

    start = time.perf_counter()
    smollm2_135m()
    print(f"\nsmollm2_135m: first load {first:.1f} s, second {time.perf_counter() - start:.2f} s; {answer!r}")
