"""One shard of conversations regenerated turn by turn: each reply is conditioned on the regenerated history.

Turn t of every conversation in the shard is generated in one engine call, then turn t + 1, as SpecForge's and
speculators' scripts do per conversation: the original assistant turns are never shown to the target, only the
user (and system) turns. A reply that is dropped (filters.py) or a prompt that leaves no room for
max_new_tokens in the target's context ends its conversation there: what came before is kept, as later turns
would be conditioned on a history the data no longer holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from specauf.evaluation.prompts import chat_prompt_ids
from specauf.regeneration.engines import Engine, Sampling, derive_seed
from specauf.regeneration.filters import ReplyFilter

Message = dict[str, str]


@dataclass
class _Chat:
    index: int
    users: list[str]
    messages: list[Message]  # regenerated so far: system, then user/assistant pairs
    replies: list[dict[str, Any]] = field(default_factory=list)
    ended: bool = False

    def end(self, counts: Counter, turn: int) -> None:
        if self.messages and self.messages[-1]["role"] == "user":
            self.messages.pop()
        self.ended = True
        counts["turns_not_asked"] += len(self.users) - turn - 1


def _chat(index: int, conversation: Sequence[Message]) -> _Chat:
    system = [dict(m) for m in conversation[:1] if m["role"] == "system"]
    users = [m["content"] for m in conversation if m["role"] == "user"]
    return _Chat(index, users, system)


def regenerate_shard(
    conversations: Sequence[tuple[int, Sequence[Message]]],
    engine: Engine,
    tokenizer: Any,
    sampling: Sampling,
    reply_filter: ReplyFilter,
    seed: int,
    context: int | None,
    on_turns: Callable[[int], None] = lambda n: None,
) -> tuple[list[dict[str, Any]], Counter]:
    """The regenerated records of `(index, conversation)` pairs and the shard's counts.

    `seed` is the shard's; turn t's engine call gets a seed derived from it. `context` is the target's longest
    sequence (None: unbounded). `on_turns(n)` reports n more user turns settled (answered or given up).
    A record is `{"index", "messages", "replies": [{"new_tokens", "finish"}]}` (OpenAI-form messages, so
    `data.source=` reads it); conversations left with no reply give no record.
    """
    chats = [_chat(i, c) for i, c in conversations]
    counts: Counter = Counter(conversations=len(chats), turns=sum(len(c.users) for c in chats))
    for turn in range(max((len(c.users) for c in chats), default=0)):
        asking: list[_Chat] = []
        prompts: list[list[int]] = []
        settled = 0
        for chat in chats:
            if chat.ended or turn >= len(chat.users):
                continue
            chat.messages.append({"role": "user", "content": chat.users[turn]})
            ids = chat_prompt_ids(tokenizer, chat.messages)
            if context is not None and len(ids) + sampling.max_new_tokens > context:
                counts["turns_over_context"] += 1
                chat.end(counts, turn)
                settled += len(chat.users) - turn
                continue
            asking.append(chat)
            prompts.append(ids)
        replies = engine.generate(prompts, sampling, derive_seed(seed, turn)) if prompts else []
        for chat, reply in zip(asking, replies, strict=True):
            text = tokenizer.decode(reply.tokens, skip_special_tokens=True)
            verdict = reply_filter.verdict(reply.tokens, text, reply.finished)
            counts["replies"] += 1
            counts[f"replies_{verdict}"] += 1
            counts["new_tokens"] += len(reply.tokens)
            if reply_filter.keeps(verdict):
                counts["replies_kept"] += 1
                chat.messages.append({"role": "assistant", "content": text})
                chat.replies.append(
                    {"new_tokens": len(reply.tokens), "finish": "stop" if reply.finished else "length"}
                )
                settled += 1
            else:
                chat.end(counts, turn)
                settled += len(chat.users) - turn
        on_turns(settled)
    records = []
    for chat in chats:
        if not chat.replies:
            counts["conversations_dropped"] += 1
            continue
        counts["conversations_kept"] += 1
        counts["conversations_shortened"] += len(chat.replies) < len(chat.users)
        records.append({"index": chat.index, "messages": chat.messages, "replies": chat.replies})
    return records, counts
