"""The KV caches `Target.step` runs on: growing or static, cropped back to an accepted prefix."""

from __future__ import annotations

import pytest
from torch.testing import assert_close

from specauf.target import StaticKVCache, Target
from tests.target.helpers import TOL, full_forward, random_ids


def new_cache(target: Target, kind: str):
    """None lets `step` make the growing cache; "static" is the decoder's preallocated one."""
    return target.new_cache(max_length=48) if kind == "static" else None


def test_new_cache_kinds(target):
    static = target.new_cache(max_length=48)
    assert isinstance(static, StaticKVCache) and target.cache_is_static(static)
    assert (static.max_length, static.length, target.cache_length(static)) == (48, 0, 0)
    assert not target.cache_is_static(target.new_cache())
    assert target.cache_length(None) == 0


def test_static_cache_needs_a_position(target):
    with pytest.raises(ValueError, match="max_length"):
        StaticKVCache(target.config, 0)


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
