"""The τ evaluation's outputs: eval.json, eval.md, the terminal table and a logger's metrics and table."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from specauf.evaluation.stats import flat_metrics
from specauf.io import atomic_write

# The per-benchmark columns of the terminal and W&B tables: (heading, key in a benchmark's results).
COLUMNS = (
    ("benchmark", None),
    ("n", "n"),
    ("skipped", "skipped"),
    ("tau", "tau"),
    ("alpha_1", "alpha_1"),
    ("tokens_per_s", "tokens_per_s"),
    ("ar_tokens_per_s", "ar_tokens_per_s"),
    ("speedup", "speedup"),
)


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def header_line(results: dict[str, Any]) -> str:
    """One line saying what was measured: target, drafter, block, decoding mode, device."""
    mode = (
        "greedy"
        if results["temperature"] == 0
        else f"T={results['temperature']:g}, top-p {results['top_p']:g}"
    )
    kind = "next-token" if results["next_token"] else "same-position"
    return (
        f"target {results['target']}, drafter {results['drafter']}, block size {results['block_size']} "
        f"({results['num_drafted']} drafted, {kind}; τ ∈ [1, {results['tau_max']}]), {mode}, "
        f"{results['device']} {results['dtype']}"
    )


def markdown_report(results: dict[str, Any]) -> str:
    """The per-benchmark table and the α_k table, as markdown."""
    benches = results["benchmarks"]
    lines = [
        "# τ evaluation",
        "",
        header_line(results),
        "",
        "| benchmark | n | skipped | τ | tokens/s | AR tokens/s | speedup |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, b in benches.items():
        lines.append(
            f"| {name} | {b['n']} | {b['skipped']} | {_fmt(b['tau'])} | {_fmt(b['tokens_per_s'], 1)} | "
            f"{_fmt(b.get('ar_tokens_per_s'), 1)} | {_fmt(b.get('speedup'), 2)} |"
        )
    lines.append(f"| **avg** | | | {_fmt(results['tau/avg'])} | | | {_fmt(results['speedup/avg'], 2)} |")
    if benches and results["num_drafted"] > 0:
        lines += [
            "",
            "Conditional acceptance α_k = #(accepted ≥ k) / #(accepted ≥ k−1):",
            "",
            "| k | " + " | ".join(benches) + " |",
            "|---|" + "---:|" * len(benches),
        ]
        for k in range(results["num_drafted"]):
            cells = " | ".join(_fmt(b["alpha"][k]) for b in benches.values())
            lines.append(f"| α_{k + 1} | {cells} |")
    for name, reason in results["skipped_benchmarks"].items():
        lines += ["", f"Skipped benchmark {name}: {reason.splitlines()[0]}"]
    for b in benches.values():
        for report in b.get("mismatch_reports", []):
            lines += ["", f"Mismatch: {report}"]
    return "\n".join(lines) + "\n"


def write_reports(results: dict[str, Any], out_dir: Path) -> None:
    """eval.json (everything) and eval.md (the tables) in `out_dir`, each written atomically."""
    atomic_write(Path(out_dir) / "eval.json", json.dumps(results, indent=2) + "\n")
    atomic_write(Path(out_dir) / "eval.md", markdown_report(results))


def table_rows(results: dict[str, Any]) -> list[list[Any]]:
    """One row per benchmark, in `COLUMNS` order (raw numbers; None where not measured)."""
    rows = []
    for name, b in results["benchmarks"].items():
        values = {**b, "alpha_1": b["alpha"][0] if b["alpha"] else None}
        rows.append([name, *(values.get(key) for _, key in COLUMNS[1:])])
    return rows


def print_table(results: dict[str, Any], console: Any = None) -> None:
    """The per-benchmark table on the terminal."""
    from rich.table import Table

    from specauf.progress import console as default_console

    console = console or default_console()
    table = Table(title=header_line(results), header_style="bold")
    headings = ("benchmark", "n", "skipped", "τ", "α_1", "tokens/s", "AR tokens/s", "speedup")
    digits = (None, None, None, 3, 3, 1, 1, 2)
    for col in headings:
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for row in table_rows(results):
        table.add_row(*(str(v) if d is None else _fmt(v, d) for v, d in zip(row, digits, strict=True)))
    table.add_row("avg", "", "", _fmt(results["tau/avg"]), "", "", "", _fmt(results["speedup/avg"], 2))
    console.print(table)


def log_results(
    logger: Any, results: dict[str, Any], hyperparams: dict[str, Any], step: int | None = None
) -> None:
    """The eval/* scalars (and, for W&B, the per-benchmark table) to a Lightning logger."""
    if hyperparams:
        logger.log_hyperparams(hyperparams)
    logger.log_metrics(flat_metrics(results), step=step)
    experiment = getattr(logger, "experiment", None)
    if type(logger).__name__ == "WandbLogger" and experiment is not None:
        import wandb

        experiment.log({"eval/table": wandb.Table(columns=[c for c, _ in COLUMNS], data=table_rows(results))})
