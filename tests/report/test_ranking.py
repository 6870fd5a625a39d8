"""specauf.report.ranking: variants ranked by average τ, each against the best with the 2-SE test."""

from __future__ import annotations

from pathlib import Path

from specauf import report as rep
from specauf.report.ranking import ranking
from tests.report.fakes import TAU, write_run


def test_ranking_tells_noise_from_a_real_gap(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for seed in (0, 1):
        write_run(root / f"auf{seed}", "auf", seed, TAU[("auf", seed)])
        write_run(root / f"decay{seed}", "decay", seed, TAU[("decay", seed)])
        # AUF + decay: AUF's τ ± 0.01, inside AUF's seed spread (the seeds differ by 0.2).
        offset = 0.01 if seed == 0 else -0.01
        write_run(root / f"ad{seed}", "auf_decay", seed, [t + offset for t in TAU[("auf", seed)]])
    lines = ranking(rep.build_report(rep.load_runs(root), str(root)))
    rows = [
        line
        for line in lines
        if line.startswith("| 1 ") or line.startswith("| 2 ") or line.startswith("| 3 ")
    ]
    assert [row.split(" | ")[1] for row in rows] == ["AUF", "AUF + decay", "decay only"]
    assert rows[0].endswith("the best mean |")
    assert rows[1].endswith("within noise of the best |")
    assert rows[2].endswith("below the best (decay only higher in 0 of 2 seeds) |")
    assert "## Ranking by average τ" in rep.markdown_report(rep.build_report(rep.load_runs(root), str(root)))


def test_one_seed_ranks_without_claiming_an_order(tmp_path: Path) -> None:
    for loss in ("auf", "decay", "full_ce"):
        write_run(tmp_path / loss, loss, 0, TAU[("auf" if loss == "auf" else "decay", 0)], token_acc=0.5)
    lines = ranking(rep.build_report(rep.load_runs(tmp_path), str(tmp_path)))
    assert sum("no noise estimate (under 2 seeds)" in line for line in lines) == 2


def test_no_ranking_under_three_variants(tmp_path: Path) -> None:
    write_run(tmp_path / "a", "auf", 0, TAU[("auf", 0)])
    write_run(tmp_path / "d", "decay", 0, TAU[("decay", 0)])
    assert ranking(rep.build_report(rep.load_runs(tmp_path), str(tmp_path))) == []
