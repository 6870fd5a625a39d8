"""Benchmark prompts as the target sees them: the chat template, the context limit, multi-turn decoding."""

from __future__ import annotations

from typing import Any

from specauf.data.benchmarks import BenchPrompt
from specauf.decoding import DecodeResult, SpeculativeDecoder


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of `messages` under the tokenizer's chat template, ready for the assistant's reply.

    Thinking off, as the benchmarks are run (docs/method.md §7): templates that know `enable_thinking`
    (Qwen3) get False; others never see the flag.
    """
    kwargs = {}
    if "enable_thinking" in str(getattr(tokenizer, "chat_template", None) or ""):
        kwargs["enable_thinking"] = False
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
    # The template already holds any BOS: the tokenizer must not add another.
    return tokenizer(text, add_special_tokens=False).input_ids


def context_limit(target: Any) -> int | None:
    """The target's longest supported sequence (max_position_embeddings), or None when it does not say."""
    limit = getattr(target.config.get_text_config(), "max_position_embeddings", None)
    return int(limit) if limit else None


class PromptTooLong(Exception):
    """A turn's prompt leaves no room for the new tokens inside the target's context (the prompt is skipped)."""

    def __init__(self, turn: int, length: int) -> None:
        super().__init__(f"turn {turn + 1} prompt has {length} tokens")


def run_conversation(
    decoder: SpeculativeDecoder, prompt: BenchPrompt, max_new_tokens: int, limit: int | None
) -> list[tuple[list[int], DecodeResult]]:
    """Decode every user turn of `prompt`; a later turn sees the model's own earlier answers (MT-Bench).

    Returns (prompt ids, result) per turn. Raises `PromptTooLong` when a turn's prompt leaves no room for
    `max_new_tokens` inside the target's context.
    """
    tokenizer = decoder.target.tokenizer
    messages: list[dict[str, str]] = []
    out = []
    for i, turn in enumerate(prompt.turns):
        messages.append({"role": "user", "content": turn})
        ids = chat_prompt_ids(tokenizer, messages)
        if limit is not None and len(ids) > limit - max_new_tokens:
            raise PromptTooLong(i, len(ids))
        result = decoder.generate(ids, max_new_tokens)
        out.append((ids, result))
        messages.append(
            {"role": "assistant", "content": tokenizer.decode(result.tokens, skip_special_tokens=True)}
        )
    return out
