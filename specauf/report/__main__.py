"""`python -m specauf.report PATH`: the tables and plots of a sweep; see `specauf.report` for what it writes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from specauf.cli import run_main
from specauf.report import (
    OUTPUTS,
    build_report,
    load_runs,
    load_wandb_runs,
    log_to_wandb,
    markdown_report,
    write_report,
)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m specauf.report",
        description="Paper-style τ tables (markdown + CSV) and plots from a sweep of specauf training runs.",
    )
    p.add_argument(
        "path", help="a Hydra multirun dir, a parent of several, one run dir, or wandb:ENTITY/PROJECT[/GROUP]"
    )
    p.add_argument("--out", type=Path, help="output dir (default: PATH/report)")
    p.add_argument("--title", help="title of the tables and plots")
    p.add_argument("--wandb", action="store_true", help="also log the tables and plots to a new W&B run")
    p.add_argument(
        "--wandb-project",
        help="W&B project for that run (default: the source's, else specauf); implies --wandb",
    )
    p.add_argument("--wandb-group", help="W&B group for that run; implies --wandb")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m specauf.report`; returns the exit code (a user error exits with 1)."""
    args = _parser().parse_args(argv)
    code = run_main(lambda: _run(args))
    return 1 if code is None else code


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    if args.path.startswith("wandb:"):
        spec = args.path.removeprefix("wandb:")
        runs = load_wandb_runs(spec)
        out = args.out or Path("reports") / ("wandb-" + spec.strip("/").replace("/", "-"))
        default_project, default_group = spec.split("/")[1], [*spec.split("/"), None][2]
    else:
        path = Path(args.path).expanduser()
        runs = load_runs(path)
        out = args.out or (path if path.is_dir() else path.parent) / "report"
        default_project, default_group = "specauf", None
    report = build_report(runs, args.path, args.title)
    paths = write_report(report, out)
    console = Console()
    if not console.is_terminal:  # piped into a log: rich would assume 80 columns and squeeze the table
        console = Console(width=200)
    console.print(Markdown(markdown_report(report)))
    console.print(f"wrote {', '.join(str(paths[n]) for n in OUTPUTS)}")
    if args.wandb or args.wandb_project or args.wandb_group:
        where = log_to_wandb(
            report, paths, args.wandb_project or default_project, args.wandb_group or default_group
        )
        console.print(f"logged the tables and plots to {where}")
    if not report.runs:
        print(
            f"specauf: error: all {len(report.failed)} runs under {args.path} failed (see {paths['table.md']})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
