"""Tokenised chats: the `TokenizedChats` dataset, `build_chat_splits` (filter, split) and its cache."""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pytest
import torch

from specauf.data import tokenized
from specauf.data.tokenized import TokenizedChats, build_chat_splits
from specauf.errors import ConfigError, DataError, UserError
from specauf.tiny import tiny_tokenizer
from tests.data.conftest import conversation, write_jsonl


def test_tokenized_chats_items_and_roundtrip(tmp_path):
    data = TokenizedChats.from_sequences([[1, 2, 3], [4, 5]], [[0, 1, 1], [1, 0]])
    assert len(data) == 2
    item = data[1]
    assert item["input_ids"].dtype == torch.long and item["loss_mask"].dtype == torch.bool
    assert item["input_ids"].tolist() == [4, 5] and item["loss_mask"].tolist() == [True, False]
    assert data[-1]["input_ids"].tolist() == [4, 5]
    with pytest.raises(IndexError):
        data[2]
    assert data.stats() == {"conversations": 2, "tokens": 5, "supervised_tokens": 3}
    data.save(tmp_path / "d.npz")
    back = TokenizedChats.load(tmp_path / "d.npz")
    for name in ("input_ids", "loss_mask", "offsets"):
        np.testing.assert_array_equal(getattr(back, name), getattr(data, name))
    assert [p.name for p in tmp_path.iterdir()] == ["d.npz"]  # no temporary left behind


def _decoded(tokenizer, data: TokenizedChats) -> list[str]:
    return [tokenizer.decode(data[i]["input_ids"].tolist()) for i in range(len(data))]


def test_splits_are_deterministic_disjoint_and_sized(tmp_path, tok):
    path = write_jsonl(tmp_path / "chats.jsonl", [conversation(i) for i in range(40)])
    train, val = build_chat_splits(tok, str(path), max_length=256, val_size=0.1, seed=3, cache=False)
    assert (len(train), len(val)) == (36, 4)
    train2, val2 = build_chat_splits(tok, str(path), max_length=256, val_size=0.1, seed=3, cache=False)
    np.testing.assert_array_equal(val.input_ids, val2.input_ids)
    np.testing.assert_array_equal(train.input_ids, train2.input_ids)
    texts_train, texts_val = set(_decoded(tok, train)), set(_decoded(tok, val))
    assert not texts_train & texts_val and len(texts_train | texts_val) == 40
    _, val_other = build_chat_splits(tok, str(path), max_length=256, val_size=0.1, seed=4, cache=False)
    assert set(_decoded(tok, val_other)) != texts_val
    train_n, val_n = build_chat_splits(tok, str(path), max_length=256, val_size=7, cache=False)
    assert (len(train_n), len(val_n)) == (33, 7)
    assert all(bool(train[i]["loss_mask"].any()) for i in range(len(train)))


def test_too_little_data_is_a_clear_error(tmp_path, tok):
    path = write_jsonl(tmp_path / "one.jsonl", [conversation(0)])
    with pytest.raises(DataError, match="1 usable conversations cannot give 1 for validation"):
        build_chat_splits(tok, str(path), max_length=256, cache=False)


def test_min_supervised_tokens_filter(tmp_path, tok, caplog):
    # Answer i has len("answer i ") + 3·i characters, plus the end marker: one token per byte.
    records = [conversation(i, answer_len=3 * i) for i in range(10)]
    path = write_jsonl(tmp_path / "short.jsonl", records)
    with caplog.at_level(logging.INFO, logger="specauf.data.tokenized"):
        train, val = build_chat_splits(
            tok, str(path), max_length=512, val_size=1, min_supervised_tokens=20, cache=False
        )
    supervised = [int(d["loss_mask"].sum()) for d in (*map(train.__getitem__, range(len(train))), val[0])]
    assert len(supervised) == 6 and min(supervised) >= 20  # answers 4..9 have 9 + 3·i + 1 >= 20 tokens
    assert "dropped 4 of 10 conversations with fewer than 20 supervised tokens" in caplog.text


def test_cache_is_written_then_used(tmp_path, tok, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPECAUF_CACHE", str(cache))
    path = write_jsonl(tmp_path / "chats.jsonl", [conversation(i) for i in range(30)])
    train, val = build_chat_splits(tok, str(path), max_length=128, val_size=3)
    files = list((cache / "tokenized").glob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith("chats-L128-")

    def no_loading(*args, **kwargs):
        raise AssertionError("a cache hit must not load or tokenize conversations again")

    monkeypatch.setattr(tokenized, "load_conversations", no_loading)
    start = time.perf_counter()
    train2, val2 = build_chat_splits(tok, str(path), max_length=128, val_size=3)
    assert time.perf_counter() - start < 1.0
    for a, b in ((train, train2), (val, val2)):
        for name in ("input_ids", "loss_mask", "offsets"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    # Any change to the inputs is a different key: other parameters, or the file edited.
    with pytest.raises(AssertionError, match="cache hit"):
        build_chat_splits(tok, str(path), max_length=64, val_size=3)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    with pytest.raises(AssertionError, match="cache hit"):
        build_chat_splits(tok, str(path), max_length=128, val_size=3)


@pytest.mark.parametrize(
    ("kwargs", "error", "text"),
    [
        ({"max_length": 1}, ConfigError, "max_length must be >= 2"),
        ({"val_size": 1.5}, ConfigError, r"val_size as a fraction must lie in \(0, 1\)"),
        ({"val_size": 0}, ConfigError, "val_size as a count must be >= 1"),
        ({"val_size": "10"}, ConfigError, "val_size must be a count"),
        ({"source": "/no/such/chats.jsonl"}, FileNotFoundError, "does not exist"),
    ],
)
def test_bad_settings_are_user_errors(tmp_path, tok, kwargs, error, text):
    path = write_jsonl(tmp_path / "chats.jsonl", [conversation(i) for i in range(10)])
    args = {"source": str(path), "max_length": 256, "cache": False, **kwargs}
    with pytest.raises(error, match=text) as info:
        build_chat_splits(tok, **args)
    assert isinstance(info.value, UserError)


def test_tokenizer_without_template_is_refused_before_loading(tmp_path, monkeypatch):
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    monkeypatch.setattr(tokenized, "load_conversations", lambda *a, **k: pytest.fail("data was loaded"))
    with pytest.raises(ConfigError, match="no chat template"):
        build_chat_splits(tokenizer, str(tmp_path / "chats.jsonl"), cache=False)
