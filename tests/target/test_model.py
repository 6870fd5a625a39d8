"""`Target`: layer choice, description, features, and the cached step against an uncached forward."""

from __future__ import annotations

import pytest
import torch
from torch.testing import assert_close

from specauf.errors import ConfigError
from specauf.target import Target, default_layer_ids, tiny_random
from tests.target.helpers import TOL, full_forward, random_ids

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
    with pytest.raises(ConfigError):
        default_layer_ids(0)
    with pytest.raises(ConfigError, match="num_feature_layers"):
        default_layer_ids(10, 0)


def test_zero_feature_layers_is_a_config_error():
    with pytest.raises(ConfigError, match=r"Fix: set target\.num_feature_layers >= 1"):
        tiny_random(num_feature_layers=0)


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


# --- step ------------------------------------------------------------------------------------------------


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


@pytest.mark.parametrize("kwargs", [{"mask_token_id": 260}, {"mask_token_id": -1}])
def test_bad_mask_token_id(target, kwargs):
    with pytest.raises(ConfigError, match=r"mask_token_id .*Fix: .*mask_token_id=null"):
        Target(target.model, target.tokenizer, **kwargs)


@pytest.mark.parametrize(
    ("layer_ids", "problem"),
    [([6], "out of range"), ([-1], "out of range"), ([0, 6], "out of range"), ([], "empty"), ([2, 2], "dup")],
)
def test_bad_layer_ids(layer_ids, problem):
    with pytest.raises(ConfigError, match="layer_ids") as err:
        tiny_random(num_layers=6, layer_ids=layer_ids)
    assert problem in str(err.value) and "Fix:" in str(err.value)
    assert isinstance(err.value, ValueError)  # callers catching the built-in type still catch it


def test_out_of_range_layer_ids_suggest_the_default_rule():
    with pytest.raises(ConfigError, match=r"valid: 0\.\.5.*\[1, 3\]"):
        tiny_random(num_layers=6, layer_ids=[1, 9])
