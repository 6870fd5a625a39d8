"""`specauf.progress`: a run written to a file says how it is going, in plain lines (the subprocess run that
checks them is tests/evaluation/test_callback.py's)."""

from __future__ import annotations

from specauf.progress import _clock


def test_clock():
    assert _clock(5) == "0:05" and _clock(125) == "2:05" and _clock(3725) == "1:02:05"
