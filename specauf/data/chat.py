"""A conversation → token ids + a loss mask on its assistant turns (docs/method.md §3).

`tokenize_chat` renders through the tokenizer's own chat template and marks 1 on assistant content and its
end-of-turn marker (so the drafter learns to stop), never on the assistant header or user/system text. The
spans of the assistant turns are found from renders of conversation prefixes, or, for templates that rewrite
earlier turns, by searching the rendered text.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from specauf.errors import ConfigError, DataError

log = logging.getLogger(__name__)


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
    check_tokenizer(tokenizer)
    if max_length < 1:
        raise ConfigError(f"max_length must be >= 1, got {max_length}")
    text, spans = render_with_spans(tokenizer, messages, template_kwargs)
    enc = tokenizer(
        text, return_offsets_mapping=True, add_special_tokens=False, truncation=True, max_length=max_length
    )
    mask = mask_from_offsets(enc["offset_mapping"], spans)
    return list(enc["input_ids"]), mask.tolist()


def check_tokenizer(tokenizer: Any) -> None:
    """Refuse (ConfigError) a tokenizer the loss mask cannot work with: no chat template, or not fast."""
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or "unnamed"
        raise ConfigError(
            f"tokenizer {type(tokenizer).__name__} ({name}) has "
            "no chat template, so assistant turns cannot be located. Fix: use the instruct/chat variant of "
            "the model, or set tokenizer.chat_template to a Jinja chat template."
        )
    if not getattr(tokenizer, "is_fast", False):
        raise ConfigError(
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


def render_with_spans(
    tokenizer: Any, messages: Sequence[Mapping[str, str]], template_kwargs: Mapping[str, Any] | None = None
) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans [start, end) of its assistant turns."""
    if not messages:
        raise DataError("cannot tokenize an empty conversation (no messages)")
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


def mask_from_offsets(offsets: Sequence[Sequence[int]], spans: Sequence[tuple[int, int]]) -> np.ndarray:
    """1 for every token whose first character lies inside an assistant span."""
    starts = np.fromiter((o[0] for o in offsets), dtype=np.int64, count=len(offsets))
    if not spans:
        return np.zeros(len(starts), dtype=np.uint8)
    span_starts = np.array([s for s, _ in spans], dtype=np.int64)
    span_ends = np.array([e for _, e in spans], dtype=np.int64)
    k = np.searchsorted(span_starts, starts, side="right") - 1
    inside = (k >= 0) & (starts < span_ends[np.maximum(k, 0)])
    return inside.astype(np.uint8)
