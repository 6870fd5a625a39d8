"""`specauf.evaluation.stats`: the acceptance histogram and α_k of a benchmark's cycles."""

from __future__ import annotations

import pytest

from specauf.evaluation import acceptance_stats


def test_acceptance_stats():
    hist, alpha = acceptance_stats([0, 1, 3, 3, 2], 3)
    assert hist == [1, 1, 1, 2]
    assert alpha == pytest.approx([4 / 5, 3 / 4, 2 / 3])
    assert acceptance_stats([0, 0], 2) == ([2, 0, 0], [0.0, None])  # nothing reached one accept
