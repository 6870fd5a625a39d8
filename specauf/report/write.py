"""Writing a report: the files in OUTPUTS to a directory, and optionally the tables and plots to W&B."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from specauf.io import atomic_write
from specauf.report.markdown import PLOTS, markdown_report
from specauf.report.plots import figures
from specauf.report.rows import csv_text, run_rows, variant_rows
from specauf.report.variants import Report
from specauf.tracking import wandb_key_configured

OUTPUTS = (
    "table.md",
    "table.csv",
    "runs.csv",
    "tau_per_benchmark.png",
    "alpha_k.png",
    "token_acc_vs_tau.png",
    "tau_over_steps.png",
)


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write the outputs (OUTPUTS) to `out_dir`; returns name → path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in OUTPUTS}
    atomic_write(paths["table.md"], markdown_report(report))
    atomic_write(paths["table.csv"], csv_text(*variant_rows(report)))
    atomic_write(paths["runs.csv"], csv_text(*run_rows(report)))
    for name, fig in figures(report):
        atomic_write(paths[name], lambda f, fig=fig: fig.savefig(f, format="png"))
    return paths


def _wandb_mode() -> str | None:
    """None (let wandb read WANDB_MODE) when set; else online only if logged in, so reports never prompt."""
    if os.environ.get("WANDB_MODE"):
        return None
    return "online" if wandb_key_configured() else "offline"


def log_to_wandb(report: Report, paths: dict[str, Path], project: str, group: str | None) -> str:
    """Log table.csv and runs.csv as wandb.Tables and the PNGs as wandb.Images to a new run; returns where."""
    import wandb

    run = None
    try:
        run = wandb.init(
            project=project,
            group=group,
            job_type="report",
            name=f"report: {report.title}",
            dir=str(paths["table.md"].parent),
            mode=_wandb_mode(),
            config={"source": report.source, "runs": len(report.runs), "failed": len(report.failed)},
        )
        payload: dict[str, Any] = {}
        for key, (cols, rows) in {"variants": variant_rows(report), "runs": run_rows(report)}.items():
            payload[f"report/{key}"] = wandb.Table(columns=cols, data=rows)
        for name in PLOTS:
            payload[f"report/{name}"] = wandb.Image(str(paths[f"{name}.png"]))
        run.log(payload)
        offline = run.settings.mode == "offline" or bool(getattr(run, "offline", False))
        return (
            f"W&B (offline, upload later with `wandb sync {Path(run.dir).parent}`)"
            if offline
            else f"W&B: {run.url}"
        )
    finally:
        if run is not None:
            wandb.finish()
