"""The verdict on each regenerated reply: empty, a repetition loop, cut at the limit, or ok."""

from __future__ import annotations

import pytest

from specauf.errors import ConfigError
from specauf.regeneration import ReplyFilter, loop_period

LOOSE = {"max_period": 8, "min_repeats": 4, "min_tokens": 12}


def test_a_reply_ending_in_a_loop_is_found_with_its_period():
    assert loop_period([9, 8, 7] + [1, 2, 3] * 5, **LOOSE) == 3
    assert loop_period([5] * 12, **LOOSE) == 1
    # A loop cut mid-period (at the token limit) is still a loop.
    assert loop_period([9, 8] + [1, 2, 3, 4] * 4 + [1, 2], **LOOSE) == 4


def test_text_that_is_not_a_loop_at_its_end_passes():
    assert loop_period(list(range(40)), **LOOSE) == 0
    assert loop_period([1, 2, 3] * 6 + list(range(10, 30)), **LOOSE) == 0  # climbed out of the loop
    assert loop_period([1, 2] * 5, **LOOSE) == 0  # 10 tokens: under min_tokens
    assert loop_period([1, 2, 3, 4, 5, 6, 7, 8] * 3, **LOOSE) == 0  # 3 repeats: under min_repeats
    assert loop_period([1, 2, 3] * 6, max_period=2, min_repeats=4, min_tokens=12) == 0  # period over the max


def test_each_reply_gets_one_verdict_empty_first_then_loop_then_cut():
    f = ReplyFilter(max_period=8, min_repeats=4, min_loop_tokens=12)
    loop = [7] * 20
    assert f.verdict([1, 2], "  \n", finished=False) == "empty"
    assert f.verdict(loop, "aaaaaaaaaaaaaaaaaaaa", finished=False) == "repetition"
    assert f.verdict(loop, "aaaaaaaaaaaaaaaaaaaa", finished=True) == "repetition"
    assert f.verdict([1, 2, 3], "abc", finished=False) == "cut"
    assert f.verdict([1, 2, 3], "abc", finished=True) == "ok"
    assert ReplyFilter(max_period=0).verdict(loop, "a" * 20, finished=True) == "ok"  # loop check off


def test_cut_replies_are_kept_unless_drop_cut_and_empty_or_looping_never():
    keep, drop = ReplyFilter(), ReplyFilter(drop_cut=True)
    assert keep.keeps("ok") and keep.keeps("cut") and drop.keeps("ok") and not drop.keeps("cut")
    assert not any(f.keeps(v) for f in (keep, drop) for v in ("empty", "repetition"))


@pytest.mark.parametrize("bad", [{"max_period": -1}, {"min_repeats": 1}, {"min_loop_tokens": 0}])
def test_bad_filter_settings_are_config_errors(bad):
    with pytest.raises(ConfigError, match="filters need"):
        ReplyFilter(**bad)
