"""Which regenerated replies are kept: each gets one verdict, counted in the manifest (docs/method.md §3).

The verdicts, first match wins: `empty` (nothing but whitespace), `repetition` (the reply ends in a loop),
`cut` (it reached max_new_tokens without an end-of-turn token), `ok`. Empty and looping replies are always
dropped; cut ones are kept unless `drop_cut`, as SpecForge's and speculators' regeneration scripts keep them
(a cut reply is the target's own text; only the end-of-turn marker the chat template adds to it is not).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from specauf.errors import ConfigError

VERDICTS = ("ok", "cut", "empty", "repetition")


def loop_period(tokens: Sequence[int], max_period: int, min_repeats: int, min_tokens: int) -> int:
    """The period p of a loop the reply ends in, or 0: its last L tokens repeat with period p ≤ max_period,
    where L ≥ min_tokens and L ≥ p·min_repeats. Only the tail is searched, where a runaway loop ends (it runs
    until the token limit); a reply that falls into a loop and climbs out again is left alone."""
    n = len(tokens)
    for period in range(1, min(max_period, n // max(min_repeats, 1)) + 1):
        span = period  # the last `period` tokens are trivially periodic; extend to the left while it holds
        while span < n and tokens[n - 1 - span] == tokens[n - 1 - span + period]:
            span += 1
        if span >= min_tokens and span >= period * min_repeats:
            return period
    return 0


@dataclass(frozen=True)
class ReplyFilter:
    """The verdict on a reply and whether it is kept. `max_period: 0` switches the loop check off.

    The loop defaults are ours (neither SpecForge nor speculators checks for loops): at most 128 tokens per
    period, repeated at least 4 times over at least 64 tokens.
    """

    drop_cut: bool = False
    max_period: int = 128
    min_repeats: int = 4
    min_loop_tokens: int = 64

    def __post_init__(self) -> None:
        if self.max_period < 0 or self.min_repeats < 2 or self.min_loop_tokens < 1:
            raise ConfigError(
                "filters need max_period >= 0 (0: no loop check), min_repeats >= 2 and min_loop_tokens >= 1; "
                f"got {self.max_period}, {self.min_repeats}, {self.min_loop_tokens}. Fix: see conf/regenerate.yaml"
            )

    def verdict(self, tokens: Sequence[int], text: str, finished: bool) -> str:
        if not text.strip():
            return "empty"
        if self.max_period and loop_period(tokens, self.max_period, self.min_repeats, self.min_loop_tokens):
            return "repetition"
        return "ok" if finished else "cut"

    def keeps(self, verdict: str) -> bool:
        return verdict == "ok" or (verdict == "cut" and not self.drop_cut)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)
