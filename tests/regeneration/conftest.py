"""The tiny random target, small chat files and a one-call regeneration for the regeneration tests."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest

from specauf.data.conversations import load_conversations
from specauf.regeneration import HFEngine, ReplyFilter, Sampling, regenerate_dataset
from specauf.target import Target, tiny_random
from tests.checkpoints import TINY_TARGET
from tests.conftest import write_chats

# Short random replies: the tiny target almost never ends a turn, so most are cut at 8 tokens.
SAMPLING = Sampling(temperature=0.9, top_p=0.95, top_k=0, max_new_tokens=8)


@pytest.fixture(scope="module")
def target() -> Target:
    return tiny_random(**TINY_TARGET)


@pytest.fixture(scope="module")
def chats(tmp_path_factory) -> list[list[dict[str, str]]]:
    """Ten two-turn conversations (tests/conftest.py `write_chats`), normalised by the data loader."""
    path = write_chats(tmp_path_factory.mktemp("chats") / "chats.jsonl", n=10)
    return load_conversations(str(path))


def regenerate(chats: list, target: Target, out: Path, engine: Any = None, **kwargs: Any) -> dict[str, Any]:
    """`regenerate_dataset` with the tests' defaults: 3 shards of ≤ 4 conversations, HF in batches of 3."""
    settings: dict[str, Any] = {
        "sampling": SAMPLING,
        "reply_filter": ReplyFilter(),
        "seed": 0,
        "shard_size": 4,
    }
    settings.update(kwargs)
    factory = engine or functools.partial(HFEngine, batch_size=3, device="cpu")
    return regenerate_dataset(chats, target, factory, out, **settings)
