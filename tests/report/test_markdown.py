"""specauf.report.markdown: table.md's notes on failed runs, missing τ and coverage, one table per backbone."""

from __future__ import annotations

from pathlib import Path

from specauf import report as rep
from tests.report.fakes import ALPACA_REASON, TAU, write_run


def test_notes_failed_and_missing(made: Path) -> None:
    md = (made / "table.md").read_text()
    assert "## Failed runs (1)" in md and "`5` (failed): RuntimeError: CUDA out of memory" in md
    assert f"— Alpaca: no τ in 1 of 4 evaluated runs: {ALPACA_REASON}" in md
    assert "Averages cover different benchmark sets" in md
    assert "5 benchmarks (GSM8K, MATH-500, HumanEval, MBPP, MT-Bench): DFlash · AUF, seed 1" in md
    assert "1 run without τ evaluation" in md and "DFlash · decay only, seed 2 (`4`)" in md
    assert "1 failed" in md


def test_consistent_coverage_and_mixed_backbones(tmp_path: Path) -> None:
    write_run(tmp_path / "a" / "0", "auf", 0, TAU[("auf", 0)], skip_alpaca=True)
    write_run(tmp_path / "b" / "0", "decay", 0, TAU[("decay", 0)], skip_alpaca=True, backbone="domino")
    report = rep.build_report(rep.load_runs(tmp_path), str(tmp_path))
    md = rep.markdown_report(report)
    assert "every average here covers 5 benchmarks" in md and "Alpaca: no τ in 2 of 2" in md
    assert md.index("## τ per benchmark: DFlash") < md.index("## τ per benchmark: Domino")
    assert "next-token (drafts B tokens): τ ∈ [1, 17]" in md
    rows = [line for line in md.split("## Per-variant summary")[0].splitlines() if line.startswith("| ")]
    assert rows and not any("±" in line for line in rows)  # one seed each: no std anywhere
