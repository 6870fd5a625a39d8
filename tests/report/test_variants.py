"""specauf.report.variants: runs grouped into variants (one row each) in the paper's order."""

from __future__ import annotations

from pathlib import Path

from specauf import report as rep
from tests.report.fakes import TAU, write_run


def test_variants_and_seeds(sweep: Path) -> None:
    report = rep.build_report(rep.load_runs(sweep), str(sweep))
    assert [v.loss for v in report.variants] == ["decay", "auf"]  # paper order, not alphabetical
    assert [len(v.runs) for v in report.variants] == [3, 2]
    # experiment/logger/hydra/trainer.devices are equal or bookkeeping: no extra settings in the labels.
    assert all(v.extras == {} for v in report.variants)
    assert len(report.failed) == 1 and report.failed[0].path == "5"


def test_differing_override_splits_variants(tmp_path: Path) -> None:
    write_run(tmp_path / "0", "auf", 0, TAU[("auf", 0)])
    write_run(tmp_path / "1", "auf", 1, TAU[("auf", 1)], extra_overrides=("backbone.num_layers=2",))
    report = rep.build_report(rep.load_runs(tmp_path), str(tmp_path))
    assert sorted(v.label for v in report.variants) == ["AUF", "AUF (backbone.num_layers=2)"]
