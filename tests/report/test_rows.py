"""specauf.report.rows: table.csv (one row per variant) and runs.csv (one row per run, failed ones too)."""

from __future__ import annotations

import csv
import statistics
from pathlib import Path

import pytest

from tests.report.fakes import SIX, TAU


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_csvs(made: Path) -> None:
    table = _csv(made / "table.csv")
    assert [r["loss"] for r in table] == ["decay", "auf"]
    decay, auf = table
    assert decay["variant"] == "DFlash · decay only" and auf["variant"] == "DFlash · AUF"
    assert decay["n_seeds"] == "3" and decay["n_runs_with_tau"] == "2"
    for i, bench in enumerate(SIX):
        vals = [TAU[("decay", 0)][i], TAU[("decay", 1)][i]]
        assert float(decay[f"tau_{bench}_mean"]) == pytest.approx(statistics.fmean(vals), abs=1e-5)
        assert float(decay[f"tau_{bench}_std"]) == pytest.approx(statistics.stdev(vals), abs=1e-5)
    assert auf["tau_alpaca_n"] == "1" and auf["tau_alpaca_std"] == ""  # one value: no std, not 0
    assert auf["tau_avg_benchmarks"] == "5/6"
    assert float(decay["token_acc_mean"]) == pytest.approx(0.52)
    runs = _csv(made / "runs.csv")
    assert len(runs) == 6
    by_dir = {r["run_dir"]: r for r in runs}
    assert by_dir["5"]["status"] == "failed" and "out of memory" in by_dir["5"]["error"]
    assert by_dir["4"]["tau_avg"] == "" and by_dir["4"]["token_acc"] == "0.52"
    assert by_dir["1"]["tau_alpaca"] == "" and by_dir["1"]["n_benchmarks"] == "5"
    assert float(by_dir["0"]["tau_avg"]) == pytest.approx(statistics.fmean(TAU[("auf", 0)]))
