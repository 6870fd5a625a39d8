"""The tiny random target most target tests run on."""

from __future__ import annotations

import pytest

from specauf.target import Target, tiny_random


@pytest.fixture(scope="module")
def target() -> Target:
    return tiny_random(num_layers=6, num_feature_layers=3, seed=0)
