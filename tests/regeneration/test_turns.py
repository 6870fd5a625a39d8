"""One shard turn by turn, with a scripted engine: what each prompt holds, what ends a conversation."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from specauf.regeneration import Generation, ReplyFilter, Sampling, regenerate_shard
from specauf.tiny import tiny_tokenizer

TOK = tiny_tokenizer()
SAMPLING = Sampling(max_new_tokens=8)


class Scripted:
    """Replies from a script, `(text, finished)` per call and prompt; records the prompts it was given."""

    def __init__(self, *calls: list[tuple[str, bool]]) -> None:
        self.settings: dict[str, Any] = {"engine": "scripted"}
        self.calls = list(calls)
        self.prompts: list[list[str]] = []

    def generate(self, prompts: Sequence[Sequence[int]], sampling: Sampling, seed: int) -> list[Generation]:
        self.prompts.append([TOK.decode(p) for p in prompts])
        replies = self.calls.pop(0)
        assert len(replies) == len(prompts)
        return [Generation(TOK.encode(text, add_special_tokens=False), done) for text, done in replies]


def chat(*turns: str, system: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "system", "content": system}] if system else []
    for i, turn in enumerate(turns):
        messages += [{"role": "user", "content": turn}, {"role": "assistant", "content": f"ORIGINAL {i}"}]
    return messages


def run(conversations, engine, reply_filter=None, context=None):
    pairs = list(enumerate(conversations))
    return regenerate_shard(pairs, engine, TOK, SAMPLING, reply_filter or ReplyFilter(), 0, context)


def test_every_turn_is_conditioned_on_the_regenerated_history_never_the_original():
    engine = Scripted([("new one", True), ("B1", True)], [("new two", True)])
    records, counts = run([chat("q1", "q2", system="be brief"), chat("only")], engine)
    assert len(engine.prompts[0]) == 2 and len(engine.prompts[1]) == 1  # turn 2 only for the first chat
    second = engine.prompts[1][0]
    assert "be brief" in second and "new one" in second and "ORIGINAL" not in second
    assert second.endswith("<|im_start|>assistant\n")  # the prompt asks for the assistant's reply
    assert records[0]["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "q1"},
        {"role": "assistant", "content": "new one"},
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "new two"},
    ]
    assert records[0]["replies"] == [{"new_tokens": 7, "finish": "stop"}, {"new_tokens": 7, "finish": "stop"}]
    assert counts["replies_ok"] == 3 and counts["conversations_kept"] == 2


def test_a_dropped_reply_ends_its_conversation_and_keeps_what_came_before():
    calls = [("fine", True), ("   ", True), ("cut off", False)], [("good", True)], [("\n", True)]
    engine = Scripted(*calls)
    records, counts = run(
        [chat("a", "b", "c"), chat("x", "y"), chat("p", "q")], engine, ReplyFilter(drop_cut=True)
    )
    # Only the first chat gets past turn 1 (the others' replies were empty and cut): one prompt per call.
    assert [len(p) for p in engine.prompts] == [3, 1, 1]
    assert [r["index"] for r in records] == [0]
    assert [m["content"] for m in records[0]["messages"]] == ["a", "fine", "b", "good"]  # turn 3 was empty
    assert counts["replies_empty"] == 2 and counts["replies_cut"] == 1 and counts["replies_ok"] == 2
    assert counts["conversations_dropped"] == 2 and counts["conversations_shortened"] == 1
    # Every user turn is accounted for once: answered, over the context, or not asked after an end.
    assert (
        counts["turns"] == 7 == counts["replies"] + counts["turns_over_context"] + counts["turns_not_asked"]
    )


def test_cut_replies_are_kept_by_default_and_marked_in_the_record():
    records, counts = run([chat("a")], Scripted([("half a sent", False)]))
    assert records[0]["replies"] == [{"new_tokens": 11, "finish": "length"}]
    assert counts["replies_cut"] == counts["replies_kept"] == 1


def test_a_prompt_without_room_for_the_reply_ends_the_conversation_before_it():
    short = len(TOK.apply_chat_template([{"role": "user", "content": "a"}], add_generation_prompt=True))
    engine = Scripted([("yes", True)])
    records, counts = run([chat("a", "bbbbbbbbbbbbbbbbbbbb")], engine, context=short + 30)
    assert len(engine.prompts) == 1  # the second prompt (~60 tokens + 8 new) never reached the engine
    assert [m["content"] for m in records[0]["messages"]] == ["a", "yes"]
    assert counts["turns_over_context"] == 1 and counts["conversations_shortened"] == 1
