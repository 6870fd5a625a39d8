"""Helpers of the data tests: a private cache, the tiny tokenizer, small chat files, masked-run decoding."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from specauf.tiny import tiny_tokenizer
from tests.conftest import REPO

CHAT_FIXTURES = REPO / "tests" / "fixtures" / "chat"
BENCH_FIXTURES = REPO / "tests" / "fixtures" / "benchmarks"
END = "<|im_end|>"

_ORIGINAL_CACHE = os.environ.get("SPECAUF_CACHE")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Fast tests never touch the user's cache.
    monkeypatch.setenv("SPECAUF_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def real_cache(monkeypatch):
    """The slow tests share the user's cache (the ShareGPT file is 125 MB): undoes `_private_cache`."""
    if _ORIGINAL_CACHE is None:
        monkeypatch.delenv("SPECAUF_CACHE", raising=False)
    else:
        monkeypatch.setenv("SPECAUF_CACHE", _ORIGINAL_CACHE)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def conversation(i: int, answer_len: int = 30) -> dict:
    """A ShareGPT-form record: one question, one answer of `answer_len` + a few characters."""
    return {
        "conversations": [
            {"from": "human", "value": f"question {i}"},
            {"from": "gpt", "value": f"answer {i} " + "x" * answer_len},
        ]
    }


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def masked_runs(tokenizer, ids: list[int], mask: list[int]) -> list[str]:
    """Decoded text of each maximal run of masked tokens."""
    runs, current = [], []
    for token, m in zip(ids, mask, strict=True):
        if m:
            current.append(token)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(r) for r in runs]
