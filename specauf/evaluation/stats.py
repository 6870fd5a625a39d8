"""τ and acceptance statistics of decoded benchmarks (docs/method.md §6)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from specauf.decoding import DecodeResult


def acceptance_stats(accepted: Sequence[int], num_drafted: int) -> tuple[list[int], list[float | None]]:
    """Histogram of accepted drafts per cycle (0..D) and α_k = #(accepted ≥ k) / #(accepted ≥ k−1), k = 1..D.

    α_k is None where no cycle reached k − 1 accepted drafts.
    """
    hist = [0] * (num_drafted + 1)
    for a in accepted:
        hist[a] += 1
    at_least = [sum(hist[k:]) for k in range(num_drafted + 1)]
    alpha = [at_least[k] / at_least[k - 1] if at_least[k - 1] else None for k in range(1, num_drafted + 1)]
    return hist, alpha


def mean(values: Sequence[float]) -> float | None:
    """The mean, or None for no values."""
    return sum(values) / len(values) if values else None


def _rate(tokens: int, seconds: float) -> float | None:
    return tokens / seconds if seconds > 0 and tokens > 0 else None


def bench_result(
    runs: list[list[DecodeResult]],
    ar_runs: list[list[DecodeResult]] | None,
    num_drafted: int,
    skipped: list[str],
) -> dict[str, Any]:
    """One benchmark's numbers from its decoded prompts (a list of turns each), and the AR ones if run."""
    # DFlash convention: τ per prompt (over all its cycles, both turns of MT-Bench), then the mean of those.
    accepted = [a for turns in runs for r in turns for a in r.accepted]
    per_prompt = [
        (sum(r.num_decoded for r in turns) / n)
        for turns in runs
        if (n := sum(r.num_cycles for r in turns)) > 0
    ]
    hist, alpha = acceptance_stats(accepted, num_drafted)
    decoded = sum(r.num_decoded for turns in runs for r in turns)
    seconds = sum(r.decode_seconds for turns in runs for r in turns)
    out: dict[str, Any] = {
        "n": len(runs),
        "skipped": len(skipped),
        "skipped_uids": skipped,
        "tau": mean(per_prompt),
        "tau_pooled": mean([a + 1 for a in accepted]),
        "num_cycles": len(accepted),
        "histogram": hist,
        "alpha": alpha,
        "new_tokens": sum(len(r.tokens) for turns in runs for r in turns),
        "decoded_tokens": decoded,
        "decode_seconds": seconds,
        "prefill_seconds": sum(r.prefill_seconds for turns in runs for r in turns),
        "tokens_per_s": _rate(decoded, seconds),
    }
    if ar_runs is not None:
        ar_decoded = sum(r.num_decoded for turns in ar_runs for r in turns)
        ar_seconds = sum(r.decode_seconds for turns in ar_runs for r in turns)
        out["ar_tokens_per_s"] = _rate(ar_decoded, ar_seconds)
        out["ar_decoded_tokens"] = ar_decoded
        out["ar_decode_seconds"] = ar_seconds
        # Speedup = AR time per output token / speculative time per output token (docs/method.md §6),
        # prefill excluded.
        spec_rate, ar_rate = out["tokens_per_s"], out["ar_tokens_per_s"]
        out["speedup"] = spec_rate / ar_rate if spec_rate and ar_rate else None
    return out


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Scalars for a logger: eval/tau/<bench>, eval/tau/avg, eval/speedup/<bench>, eval/speedup/avg."""
    flat: dict[str, float] = {}
    for name, bench in results["benchmarks"].items():
        for key in ("tau", "speedup"):
            if bench.get(key) is not None:
                flat[f"eval/{key}/{name}"] = float(bench[key])
    for key in ("tau/avg", "speedup/avg"):
        if results.get(key) is not None:
            flat[f"eval/{key}"] = float(results[key])
    return flat
