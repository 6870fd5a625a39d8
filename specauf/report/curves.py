"""τ over training steps: real τ (the RealTau callback's val/tau/avg) next to teacher-forced val/tf_tau.

Read from a run's CSV log (`<run>/csv/metrics.csv`, `logger=csv`); a run without one has no curves.
"""

from __future__ import annotations

import csv
import statistics
from pathlib import Path
from typing import Any

CURVES = ("val/tau/avg", "val/tf_tau")  # real τ first: the one to judge a drafter by


def read_curves(run_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """metric → [(step, value)] for CURVES, from `<run_dir>/csv/metrics.csv` (empty when absent)."""
    path = run_dir / "csv" / "metrics.csv"
    curves: dict[str, list[tuple[int, float]]] = {}
    try:
        rows = list(csv.DictReader(path.open(encoding="utf-8")))
    except (OSError, csv.Error):
        return curves
    for row in rows:
        for key in CURVES:
            value = row.get(key)
            if value not in (None, "") and row.get("step") not in (None, ""):
                curves.setdefault(key, []).append((int(float(row["step"])), float(value)))
    return curves


def mean_curve(curves: list[list[tuple[int, float]]]) -> list[tuple[int, float]]:
    """The mean over runs at each step every run logged (seeds of one variant)."""
    by_step = [dict(c) for c in curves if c]
    steps = sorted(set.intersection(*(set(c) for c in by_step))) if by_step else []
    return [(s, statistics.fmean(c[s] for c in by_step)) for s in steps]


def plot_curves(variants: list[tuple[str, Any, list[dict[str, list[tuple[int, float]]]]]], ax: Any) -> bool:
    """Draw each (label, color, runs' curves) as real τ (solid) and TF-τ (dashed); False if nothing to draw."""
    drawn = False
    for label, color, runs in variants:
        for key, style in zip(CURVES, ("-", "--"), strict=True):
            points = mean_curve([r.get(key, []) for r in runs])
            if points:
                name = "real τ" if key == "val/tau/avg" else "TF-τ (val)"
                ax.plot(
                    *zip(*points, strict=True), style, color=color, marker="o", ms=3, label=f"{label}: {name}"
                )
                drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel("τ (emitted tokens per cycle)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, framealpha=0.9)
    return drawn
