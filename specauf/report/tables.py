"""The markdown tables of table.md: one τ table per backbone (the paper's layout) and a per-variant summary."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any

from specauf.report.runs import Run, bench_title
from specauf.report.variants import Report, Stat, Variant, stat


def tau_range(block_size: int | None, next_token: bool | None) -> str:
    if block_size is None or next_token is None:
        return "?"
    return f"[1, {block_size + 1 if next_token else block_size}]"


def caption(report: Report, runs: list[Run]) -> list[str]:
    """What the τ numbers of these runs mean: B, alignment, decoding, prompts per benchmark."""
    lines = []
    by_shape: dict[tuple[Any, Any], list[Run]] = {}
    for r in runs:
        by_shape.setdefault((r.block_size, r.next_token), []).append(r)
    if len(by_shape) == 1:
        (block, nt), _ = next(iter(by_shape.items()))
        kind = "next-token (drafts B tokens)" if nt else "same-position (drafts B−1 tokens)"
        if nt is None:
            kind = "alignment unknown"
        lines.append(f"Block size B={block}, {kind}: τ ∈ {tau_range(block, nt)}.")
    else:
        parts = []
        for (block, nt), members in sorted(by_shape.items(), key=str):
            rows = sorted({m.variant.label for m in members if m.variant})
            kind = "next-token" if nt else "same-position"
            parts.append(f"B={block} {kind}, τ ∈ {tau_range(block, nt)}: {', '.join(rows)}")
        lines.append(
            "**Mixed block sizes / alignments in this table; τ ranges differ, compare rows with care:** "
            + "; ".join(parts)
            + "."
        )
    with_eval = [r for r in runs if r.has_eval]
    temps = {r.temperature for r in with_eval if r.temperature is not None}
    if temps:
        decoding = ", ".join("greedy" if t == 0 else f"T={t:g}" for t in sorted(temps))
        lines.append(f"Decoding: {decoding}{' (mixed!)' if len(temps) > 1 else ''}.")
    counts = {r.n_prompts.get(b) for r in with_eval for b in r.tau if r.n_prompts.get(b) is not None}
    per_bench = {
        b: sorted({r.n_prompts[b] for r in with_eval if b in r.n_prompts}) for b in report.benchmarks
    }
    if len(counts) == 1:
        lines.append(f"{counts.pop()} prompts per benchmark.")
    elif counts:
        text = ", ".join(f"{bench_title(b)} {'/'.join(map(str, n))}" for b, n in per_bench.items() if n)
        mixed = any(len(n) > 1 for n in per_bench.values())
        lines.append(f"Prompts per benchmark: {text}{' (differs between runs)' if mixed else ''}.")
    return lines


def md_row(cells: Iterable[str]) -> str:
    # A "|" inside a label (an override value) would split the cell.
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _best(cells: list[Stat], digits: int) -> set[int]:
    """Rows whose mean, as printed, is the column's highest; none when every row ties (nothing to show)."""
    shown = {i: round(c.mean, digits) for i, c in enumerate(cells) if c.mean is not None}
    if len(shown) < 2 or len(set(shown.values())) == 1:
        return set()
    top = max(shown.values())
    return {i for i, m in shown.items() if m == top}


def tau_table(report: Report, variants: list[Variant]) -> list[str]:
    """The paper's table for one backbone: τ per benchmark, avg, token accuracy and TF τ, best in bold."""
    benches = report.benchmarks
    header = ["loss", "seeds", *map(bench_title, benches), "avg", "token acc", "TF τ"]
    columns: list[list[str]] = []
    stats: list[list[Stat]] = []
    for v in variants:
        ev = v.eval_runs
        row = [stat(ev, lambda r, b=b: r.tau.get(b)) for b in benches]
        row.append(stat(ev, lambda r: r.tau_avg))
        row.append(stat(v.runs, lambda r: r.metrics.get("val/token_acc")))
        row.append(stat(v.runs, lambda r: r.metrics.get("val/tf_tau")))
        stats.append(row)
    same_cover = len({frozenset(r.tau) for v in variants for r in v.eval_runs}) <= 1
    comparable = len({(r.block_size, r.next_token) for v in variants for r in v.runs}) == 1
    bold: set[tuple[int, int]] = set()
    if comparable:
        for j in range(len(benches) + 3):
            if j == len(benches) and not same_cover:
                continue  # averages over different benchmark sets are not ranked
            digits = 3 if j == len(benches) + 1 else 2
            bold |= {(i, j) for i in _best([row[j] for row in stats], digits)}
    for i, (v, row) in enumerate(zip(variants, stats, strict=True)):
        n_eval = len(v.eval_runs)
        seeds = str(len(v.seeds))
        if len(v.runs) != len(v.seeds):
            seeds += f" ({len(v.runs)} runs)"
        if n_eval != len(v.runs):
            seeds += f" ({n_eval} with τ)"
        cells = []
        for j, s in enumerate(row):
            text = s.text(3 if j == len(benches) + 1 else 2)
            expected = n_eval if j <= len(benches) else len(v.runs)
            if s.values and s.n < expected:
                text += f" (n={s.n})"
            cells.append(f"**{text}**" if (i, j) in bold else text)
        columns.append([v.label, seeds, *cells])
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
    lines += [md_row(c) for c in columns]
    return lines


def summary_table(report: Report) -> list[str]:
    """One compact row per variant: the headline numbers and what they were measured on."""
    has_speedup = any(r.speedup for r in report.runs)
    header = ["variant", "B", "τ range", "seeds", "τ avg", "token acc", "TF τ", "val loss", "active ratio"]
    header += ["speedup"] if has_speedup else []
    header += ["steps", "minutes"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---|---|" + "---:|" * (len(header) - 4)]
    for v in report.variants:
        nts = {r.next_token for r in v.runs}
        ranges = sorted({tau_range(r.block_size, r.next_token) for r in v.runs})
        cells = [
            v.full_label,
            "/".join(map(str, v.block_sizes)) or "?",
            "/".join(ranges) + (" (next-token)" if nts == {True} else ""),
            ", ".join(map(str, v.seeds)),
            stat(v.eval_runs, lambda r: r.tau_avg).text(2),
            stat(v.runs, lambda r: r.metrics.get("val/token_acc")).text(3),
            stat(v.runs, lambda r: r.metrics.get("val/tf_tau")).text(2),
            stat(v.runs, lambda r: r.metrics.get("val/loss")).text(3),
            stat(v.runs, lambda r: r.metrics.get("val/active_ratio")).text(3),
        ]
        if has_speedup:
            cells.append(
                stat(v.runs, lambda r: statistics.fmean(r.speedup.values()) if r.speedup else None).text(2)
            )
        cells += [stat(v.runs, lambda r: r.steps).text(0), stat(v.runs, lambda r: r.minutes).text(1)]
        lines.append(md_row(cells))
    return lines
