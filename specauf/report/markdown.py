"""table.md: the τ tables, the paper's claims, the per-variant summary, notes on missing data, failed runs."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from specauf.report.claims import claims
from specauf.report.ranking import ranking
from specauf.report.runs import Run, bench_title
from specauf.report.tables import caption, summary_table, tau_table
from specauf.report.variants import DASH, Report

PLOTS = ("tau_per_benchmark", "alpha_k", "token_acc_vs_tau", "tau_over_steps")


def _run_name(run: Run) -> str:
    label = run.variant.full_label if run.variant else run.path
    return f"{label}, seed {run.seed} (`{run.path}`)"


def _common(values: Iterable[Any]) -> Any:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _notes(report: Report) -> list[str]:
    """Footnotes: missing benchmarks and why, what each average covers, runs without τ, conventions."""
    notes = [
        "Mean ± std over seeds (sample std, n−1; shown only with ≥ 2 seeds). `(n=k)`: only k runs of the "
        "row have this number. Token acc = teacher-forced accuracy on the full block (`val/token_acc`); "
        "TF τ = teacher-forced acceptance length, 1 + leading hits per block (`val/tf_tau`). Best mean per "
        "column in bold (only among rows with the same B and alignment).",
    ]
    with_eval = [r for r in report.runs if r.has_eval and r.tau]
    for b in report.benchmarks:
        lacking = [r for r in with_eval if b not in r.tau]
        if not lacking:
            continue
        reasons: dict[str, int] = {}
        for r in lacking:
            reason = r.missing.get(b) or r.missing.get("*") or "not in this run's evaluation"
            reasons[reason] = reasons.get(reason, 0) + 1
        why = "; ".join(f"{reason} ({n} run{'s' if n > 1 else ''})" for reason, n in reasons.items())
        notes.append(
            f"{DASH} {bench_title(b)}: no τ in {len(lacking)} of {len(with_eval)} evaluated runs: {why}."
        )
    covers: dict[frozenset[str], list[Run]] = {}
    for r in with_eval:
        covers.setdefault(frozenset(r.tau), []).append(r)

    def describe(bset: frozenset[str]) -> str:
        names = ", ".join(bench_title(b) for b in report.benchmarks if b in bset)
        return f"{len(bset)} benchmark{'s' if len(bset) != 1 else ''} ({names})"

    if len(covers) == 1:
        notes.append(
            f"avg = mean τ over the benchmarks with data; every average here covers {describe(next(iter(covers)))}."
        )
    elif covers:
        groups = "; ".join(
            f"{describe(bset)}: " + ", ".join(_run_name(r) for r in members)
            for bset, members in sorted(covers.items(), key=lambda kv: -len(kv[0]))
        )
        notes.append(
            "**Averages cover different benchmark sets, so the avg column is not directly comparable "
            f"across these runs** (avg = mean τ over the benchmarks each run has): {groups}."
        )
    no_eval = [r for r in report.runs if not (r.has_eval and r.tau)]
    if no_eval:
        notes.append(
            f"{len(no_eval)} run{'s' if len(no_eval) > 1 else ''} without τ evaluation (no eval/eval.json with "
            "τ, no eval/tau/* in summary.json): their validation metrics count, they have no τ: "
            + ", ".join(_run_name(r) for r in no_eval)
            + "."
        )
    for v in report.variants:
        if len(v.runs) != len(v.seeds):
            notes.append(
                f"{v.full_label}: {len(v.runs)} runs for {len(v.seeds)} seeds; every run is averaged."
            )
    return notes


def markdown_report(report: Report) -> str:
    """table.md: one τ table per backbone, the per-variant summary, notes, failed runs, the plots."""
    n_eval = sum(1 for r in report.runs if r.has_eval and r.tau)
    lines = [
        f"# {report.title}",
        "",
        f"Source: `{report.source}`: {len(report.runs) + len(report.failed)} runs, {len(report.runs)} finished "
        f"({n_eval} with τ evaluation), {len(report.failed)} failed.",
    ]
    common = [(g, _common(r.choices.get(g) for r in report.runs)) for g in ("target", "data", "experiment")]
    if report.runs and (text := ", ".join(f"{g} `{c}`" for g, c in common if c)):
        lines.append(f"Common settings: {text}.")
    backbones = report.backbones
    if len(backbones) > 1:
        lines += [
            "",
            "This report mixes backbones: DFlash is same-position (τ ∈ [1, B]) and Domino next-token "
            "(τ ∈ [1, B + 1]); each has its own table.",
        ]
    for backbone in backbones:
        variants = [v for v in report.variants if v.backbone == backbone]
        runs = [r for v in variants for r in v.runs]
        lines += ["", f"## τ per benchmark: {variants[0].backbone_name}", ""]
        lines += [
            " ".join(
                [
                    "τ = average emitted length per verification cycle (accepted drafts + 1), mean over "
                    "prompts; mean ± std over seeds.",
                    *caption(report, runs),
                ]
            ),
            "",
        ]
        lines += tau_table(report, variants)
    if found := claims(report):
        lines += ["", "## The paper's claims, checked on these runs", "", *(f"- {c}" for c in found)]
        lines += [
            "",
            'Differences are mean over seeds of the second variant minus the first; "within noise": '
            "|difference| ≤ 2 standard errors of the difference (seed-to-seed spread, ≥ 2 seeds each).",
        ]
    if found := ranking(report):
        lines += ["", *found]
    if report.variants:
        lines += ["", "## Per-variant summary", "", *summary_table(report)]
    else:
        lines += ["", "No finished runs: nothing to tabulate."]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in _notes(report)]
    if report.failed:
        lines += ["", f"## Failed runs ({len(report.failed)})", ""]
        for r in report.failed:
            error = (r.error or "").strip().splitlines()
            # The last line of a traceback names the exception; a one-line error is its own summary.
            lines.append(f"- `{r.path}` ({r.status}): {error[-1][:300] if error else 'no error recorded'}")
    if report.variants:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({name}.png)" for name in PLOTS]
    return "\n".join(lines) + "\n"
