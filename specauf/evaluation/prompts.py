"""Benchmark prompts as the target sees them: the chat template, the context limit, multi-turn decoding."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from specauf.batched import BatchedSpeculativeDecoder
from specauf.data.benchmarks import BenchPrompt
from specauf.decoding import DecodeResult, SpeculativeDecoder

Turns = list[tuple[list[int], DecodeResult]]


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


def run_conversations(
    decoder: SpeculativeDecoder | BatchedSpeculativeDecoder,
    prompts: list[BenchPrompt],
    max_new_tokens: int | list[int],
    limit: int | None,
    on_done: Callable[[int], None] | None = None,
) -> list[Turns | PromptTooLong]:
    """`run_conversation` for every prompt: its turns, or the `PromptTooLong` that skipped it.

    `max_new_tokens` is one budget for all or one per prompt (prompts of several benchmarks in one queue).
    A batched decoder decodes turn t of every prompt together, then turn t + 1 (which sees each prompt's
    own earlier answers); a batch-1 decoder takes the prompts one by one. `on_done(i)` is called when prompt
    i's last turn is decoded (or it is skipped).
    """
    budgets = [max_new_tokens] * len(prompts) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    done_with = on_done or (lambda i: None)
    if not isinstance(decoder, BatchedSpeculativeDecoder):
        out: list[Turns | PromptTooLong] = []
        for i, (prompt, budget) in enumerate(zip(prompts, budgets, strict=True)):
            try:
                out.append(run_conversation(decoder, prompt, budget, limit))
            except PromptTooLong as err:
                out.append(err)
            done_with(i)
        return out
    tokenizer = decoder.target.tokenizer
    done: list[Turns | PromptTooLong] = [[] for _ in prompts]
    histories: list[list[dict[str, str]]] = [[] for _ in prompts]
    for turn in range(max((len(p.turns) for p in prompts), default=0)):
        batch, batch_ids = [], []
        for i, prompt in enumerate(prompts):
            if turn >= len(prompt.turns) or isinstance(done[i], PromptTooLong):
                continue
            histories[i].append({"role": "user", "content": prompt.turns[turn]})
            ids = chat_prompt_ids(tokenizer, histories[i])
            if limit is not None and len(ids) > limit - budgets[i]:
                done[i] = PromptTooLong(turn, len(ids))
                done_with(i)
                continue
            batch.append(i)
            batch_ids.append(ids)

        # The prompt whose conversation ends with this row's turn (None: more turns follow).
        last = [i if turn == len(prompts[i].turns) - 1 else None for i in batch]
        results = decoder.generate_many(
            batch_ids, [budgets[i] for i in batch], on_finish=partial(_report_last, last, done_with)
        )
        for i, ids, result in zip(batch, batch_ids, results, strict=True):
            done[i].append((ids, result))
            reply = tokenizer.decode(result.tokens, skip_special_tokens=True)
            histories[i].append({"role": "assistant", "content": reply})
    return done


def _report_last(last: list[int | None], done_with: Callable[[int], None], row: int) -> None:
    if last[row] is not None:
        done_with(last[row])
