"""table.csv (one row per variant) and runs.csv (one row per run); also the W&B tables' contents."""

from __future__ import annotations

import csv
import io
import statistics
from collections.abc import Callable
from typing import Any

from specauf.report.runs import Run
from specauf.report.variants import Report, stat

METRICS = {  # summary.json metrics key → column name
    "val/token_acc": "token_acc",
    "val/tf_tau": "tf_tau",
    "val/loss": "val_loss",
    "val/active_ratio": "active_ratio",
}


def _speedup_avg(run: Run) -> float | None:
    return statistics.fmean(run.speedup.values()) if run.speedup else None


def variant_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    """table.csv: one row per variant; empty cells where there is no data."""
    cols = [
        "variant",
        "backbone",
        "loss",
        "settings",
        "block_size",
        "next_token",
        "n_seeds",
        "seeds",
        "n_runs",
    ]
    cols += ["n_runs_with_tau"]
    for b in [*report.benchmarks, "avg"]:
        cols += [f"tau_{b}_mean", f"tau_{b}_std", f"tau_{b}_n"]
    cols += ["tau_avg_benchmarks"]
    for name in [*METRICS.values(), "speedup_avg", "steps", "minutes"]:
        cols += [f"{name}_mean", f"{name}_std"]
    rows = []
    for v in report.variants:
        ev = v.eval_runs
        row: list[Any] = [
            v.full_label,
            v.backbone,
            v.loss,
            ";".join(f"{k}={x}" for k, x in v.extras.items()),
            "/".join(map(str, v.block_sizes)),
            "/".join(sorted({str(r.next_token) for r in v.runs})),
            len(v.seeds),
            " ".join(map(str, v.seeds)),
            len(v.runs),
            len(ev),
        ]
        for b in report.benchmarks:
            s = stat(ev, lambda r, b=b: r.tau.get(b))
            row += [s.mean, s.std, s.n]
        s = stat(ev, lambda r: r.tau_avg)
        row += [s.mean, s.std, s.n, "/".join(sorted({str(len(r.tau)) for r in ev}))]
        getters: list[Callable[[Run], Any]] = [lambda r, k=k: r.metrics.get(k) for k in METRICS]
        getters += [_speedup_avg, lambda r: r.steps, lambda r: r.minutes]
        for get in getters:
            s = stat(v.runs, get)
            row += [s.mean, s.std]
        rows.append(row)
    return cols, rows


def run_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    """runs.csv: one row per run, failed ones included (with their error's last line)."""
    cols = [
        "run_dir",
        "status",
        "run_name",
        "variant",
        "backbone",
        "loss",
        "seed",
        "block_size",
        "next_token",
    ]
    cols += ["steps", "minutes", *(f"tau_{b}" for b in report.benchmarks), "tau_avg", "n_benchmarks"]
    cols += [*METRICS.values(), "speedup_avg", "error"]
    rows = []
    for r in [*report.runs, *report.failed]:
        finished = r.status == "finished"
        rows.append(
            [
                r.path,
                r.status,
                r.run_name,
                r.variant.full_label if r.variant else None,
                r.choices.get("backbone"),
                r.choices.get("loss"),
                r.seed,
                r.block_size,
                r.next_token,
                r.steps,
                r.minutes,
                *(r.tau.get(b) for b in report.benchmarks),
                r.tau_avg,
                len(r.tau) if finished else None,
                *(r.metrics.get(k) for k in METRICS),
                _speedup_avg(r),
                (r.error or "").strip().splitlines()[-1][:500] if r.error else None,
            ]
        )
    return cols, rows


def csv_text(cols: list[str], rows: list[list[Any]]) -> str:
    """The CSV file of a header and rows: None as an empty cell, floats without float noise."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        # 12 significant digits: no visible rounding, but 2.85 rather than the float noise 2.8499999999999996.
        writer.writerow(["" if x is None else float(f"{x:.12g}") if isinstance(x, float) else x for x in row])
    return buf.getvalue()
