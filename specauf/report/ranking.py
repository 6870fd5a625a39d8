"""The variants of one backbone ranked by average τ, each tested against the best with 2 standard errors.

A ranking is only as good as its noise estimate: with one seed per variant there is none, and the table says
so instead of implying an order the data cannot support. Variants are ranked within a backbone and its
settings (`extras`), since τ ranges differ between backbones.
"""

from __future__ import annotations

from specauf.report.claims import difference, signed, within_noise
from specauf.report.runs import Run
from specauf.report.variants import Report, Variant, stat


def _avg(run: Run) -> float | None:
    return run.tau_avg


def ranking(report: Report) -> list[str]:
    """Markdown lines: one table per backbone and settings with ≥ 3 evaluated variants (else nothing)."""
    groups: dict[tuple[str, tuple], list[Variant]] = {}
    for v in report.variants:
        if stat(v.eval_runs, _avg).n:
            groups.setdefault((v.backbone, tuple(sorted(v.extras.items()))), []).append(v)
    lines: list[str] = []
    for variants in groups.values():
        if len(variants) < 3:
            continue
        ranked = sorted(variants, key=lambda v: -stat(v.eval_runs, _avg).mean)
        best = ranked[0]
        lines += [
            "",
            f"**{best.backbone_name}**"
            + (f" ({', '.join(f'{k}={x}' for k, x in best.extras.items())})" if best.extras else ""),
            "",
            "| rank | loss | seeds | avg τ | vs the best | 2 SE | verdict |",
            "|---:|---|---:|---:|---:|---:|---|",
        ]
        for i, v in enumerate(ranked, 1):
            s = stat(v.eval_runs, _avg)
            if v is best:
                lines.append(f"| {i} | {v.label} | {s.n} | {s.text(3)} | – | – | the best mean |")
                continue
            delta, two_se, seeds = difference(best, v, _avg)
            if two_se is None:
                verdict = "no noise estimate (under 2 seeds)"
            elif within_noise(delta, two_se):
                verdict = "within noise of the best"
            else:
                verdict = f"below the best ({v.label} higher in {seeds})"
            se = "–" if two_se is None else f"{two_se:.3f}"
            lines.append(f"| {i} | {v.label} | {s.n} | {s.text(3)} | {signed(delta)} | {se} | {verdict} |")
    if not lines:
        return []
    return [
        "## Ranking by average τ",
        "",
        "Mean over seeds of the average τ over the benchmarks; each variant minus the best, and twice the "
        "standard error of that difference (seed-to-seed spread, ≥ 2 seeds each). Within noise: |difference| "
        "≤ 2 SE. Ranks inside a group that is within noise of the best are not an order.",
        *lines,
    ]
