"""The end-of-run summary table printed to the terminal."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

# The metrics a reader looks for first, in this order; everything else follows alphabetically.
HEADLINE = ("val/tf_tau", "val/token_acc", "val/loss", "val/info/full_ce", "train/loss", "train/tf_tau")


def print_summary(summary: dict[str, Any], console: Console | None = None) -> None:
    from specauf.progress import console as default_console

    console = console or default_console()
    choices = summary.get("choices", {})
    title = f"specauf run: {summary.get('run_name')}  ({summary.get('status')})"
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    for group in ("target", "backbone", "loss", "data"):
        if group in choices:
            table.add_row(group, str(choices[group]))
    table.add_row("block size", str(summary.get("block_size")))
    table.add_row("steps", str(summary.get("steps")))
    table.add_row("minutes", f"{summary.get('minutes', 0):.1f}")
    metrics = summary.get("metrics", {})
    ordered = [k for k in HEADLINE if k in metrics]
    ordered += sorted(k for k in metrics if k not in ordered and not k.startswith("train/"))
    for key in ordered:
        table.add_row(key, f"{metrics[key]:.4f}")
    for key, value in summary.get("eval", {}).items():
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    table.add_row("checkpoint", str(summary.get("checkpoint")))
    table.add_row("run dir", str(summary.get("run_dir")))
    console.print(table)
