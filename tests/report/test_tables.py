"""specauf.report.tables: the τ table of table.md, its header, cells, best values and caption."""

from __future__ import annotations

import statistics
from pathlib import Path

from tests.report.fakes import TAU


def _table_rows(md: str) -> list[list[str]]:
    """Cells of the first markdown table (the τ table), header first."""
    lines = md.split("## τ per benchmark")[1].split("\n## ")[0].splitlines()
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in lines
        if line.startswith("|") and "---" not in line
    ]


def test_table_md_shape_and_values(made: Path) -> None:
    md = (made / "table.md").read_text()
    header, *rows = _table_rows(md)
    assert header == [
        "loss",
        "seeds",
        "GSM8K",
        "MATH-500",
        "HumanEval",
        "MBPP",
        "MT-Bench",
        "Alpaca",
        "avg",
        "token acc",
        "TF τ",
    ]
    assert [r[0] for r in rows] == ["decay only", "AUF"]  # one row per variant
    decay, auf = rows
    assert decay[1] == "3 (2 with τ)" and auf[1] == "2"
    # GSM8K: decay mean(2.2, 2.4) = 2.30, sample std 0.141; AUF mean(2.5, 2.7) = 2.60 (best, bold).
    assert decay[2] == "2.30 ± 0.14"
    assert auf[2] == "**2.60 ± 0.14**"
    # Alpaca: only AUF seed 0 has it.
    assert auf[7].strip("*") == "2.10 (n=1)"
    # Token accuracy over all three decay runs (the one without eval counts): mean 0.52, std 0.02.
    assert decay[9] == "**0.520 ± 0.020**"
    auf_avgs = [statistics.fmean(TAU[("auf", 0)]), statistics.fmean(TAU[("auf", 1)][:5])]
    assert auf[8] == f"{statistics.fmean(auf_avgs):.2f} ± {statistics.stdev(auf_avgs):.2f}"
    assert "Block size B=16, same-position" in md and "τ ∈ [1, 16]" in md and "greedy" in md
    assert "4 prompts per benchmark" in md
