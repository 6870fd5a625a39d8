"""Paper-style ablation tables and plots from a sweep of training runs (Spec-AUF Table 1, docs/method.md §1, §6,
§7).

    python -m specauf.report multirun/auf_ablation/2026-01-01/12-00-00      tables + plots in <PATH>/report/
    python -m specauf.report PATH --out DIR --title "AUF ablation" --wandb   ... and log them to W&B
    python -m specauf.report wandb:ENTITY/PROJECT[/GROUP]                   read the runs from W&B (online)

Reads every `summary.json` under PATH (a Hydra multirun dir, a parent of several sweeps, or one run dir) and
the run's `eval/eval.json` when present. Runs that differ only in `seed` form one variant (row); τ per
benchmark and the validation metrics are given as mean ± std over seeds. Writes table.md, table.csv,
runs.csv, tau_per_benchmark.png, alpha_k.png and token_acc_vs_tau.png. Every number shown is read from the
inputs or is a mean/std of such numbers; missing data shows as "—" with a note saying why. Rows are named,
ordered and paired for the paper's claims by each run's labels (`specauf.report.labels`).
"""

from specauf.report.claims import claims
from specauf.report.labels import run_labels
from specauf.report.markdown import markdown_report
from specauf.report.plots import plot_alpha, plot_tau_per_benchmark, plot_token_acc_vs_tau, run_alpha
from specauf.report.rows import METRICS, csv_text, run_rows, variant_rows
from specauf.report.runs import Run, load_runs, load_wandb_runs, read_run
from specauf.report.tables import summary_table, tau_table
from specauf.report.variants import Report, Stat, Variant, build_report, group_variants
from specauf.report.write import OUTPUTS, log_to_wandb, write_report

__all__ = [
    "METRICS",
    "OUTPUTS",
    "Report",
    "Run",
    "Stat",
    "Variant",
    "build_report",
    "claims",
    "csv_text",
    "group_variants",
    "load_runs",
    "load_wandb_runs",
    "log_to_wandb",
    "markdown_report",
    "plot_alpha",
    "plot_tau_per_benchmark",
    "plot_token_acc_vs_tau",
    "read_run",
    "run_alpha",
    "run_labels",
    "run_rows",
    "summary_table",
    "tau_table",
    "variant_rows",
    "write_report",
]
