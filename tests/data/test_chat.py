"""The loss mask: chat-template rendering, assistant spans and `tokenize_chat`."""

from __future__ import annotations

import pytest

from specauf.data.chat import tokenize_chat
from specauf.data.conversations import load_conversations
from specauf.errors import ConfigError, DataError
from specauf.tiny import tiny_tokenizer
from tests.data.conftest import END, masked_runs

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
    assert masked_runs(tok, ids, mask) == ["ok" + END, "More: ünïcode ✓ and\nnew lines." + END]
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
    assert masked_runs(tokenizer, ids, mask) == ["ok" + END, "More: ünïcode ✓ and\nnew lines." + END]


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
    assert masked_runs(tokenizer, ids, mask) == ["ok" + END, last]
    # Without it the empty think block is part of the final answer the drafter has to produce.
    ids, mask = tokenize_chat(tokenizer, MULTI_TURN, max_length=10_000)
    assert masked_runs(tokenizer, ids, mask) == ["ok" + END, "<think>\n\n</think>\n\n" + last]


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
    assert masked_runs(tokenizer, ids, mask) == ["a" + END, "<think>\n\n</think>\n\nt" + END]


def test_truncation_keeps_a_prefix(tok):
    full_ids, full_mask = tokenize_chat(tok, MULTI_TURN, max_length=10_000)
    ids, mask = tokenize_chat(tok, MULTI_TURN, max_length=60)
    assert len(ids) == len(mask) == 60
    assert ids == full_ids[:60] and mask == full_mask[:60]


def test_tokenizer_without_template_is_refused():
    tokenizer = tiny_tokenizer()
    tokenizer.chat_template = None
    with pytest.raises(ConfigError, match=r"no chat template.*instruct"):
        tokenize_chat(tokenizer, MULTI_TURN, max_length=100)


def test_empty_conversation_is_refused(tok):
    with pytest.raises(DataError, match="empty conversation"):
        tokenize_chat(tok, [], max_length=100)


def test_slow_tokenizer_is_refused(tok):
    class Slow:
        chat_template = tok.chat_template
        is_fast = False

    with pytest.raises(ConfigError, match=r"fast \(Rust\) tokenizers.*use_fast=True"):
        tokenize_chat(Slow(), MULTI_TURN, max_length=100)


# ---------------------------------------------------------------------------------------------------------
# Real data (slow): SmolLM2's tokenizer on ShareGPT


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
    assert masked_runs(tokenizer, ids, mask) == answers
    # SmolLM2's template adds its default system prompt; none of it is supervised.
    text = tokenizer.apply_chat_template(conversation, tokenize=False)
    assert tokenizer.decode(ids) == text
