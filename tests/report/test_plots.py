"""specauf.report.plots: what the three figures draw, the PNGs written from them, and the α_k curve."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import pytest

from specauf import report as rep
from specauf.report.plots import figures
from tests.report.fakes import PNG_MAGIC, TAU


def _axes(report: rep.Report) -> dict[str, Any]:
    """Each figure's one Axes, by file name."""
    out = {}
    for name, fig in figures(report):
        assert len(fig.axes) == 1, name
        out[name] = fig.axes[0]
    return out


def test_figures_draw_the_sweep(sweep: Path) -> None:
    axes = _axes(rep.build_report(rep.load_runs(sweep), str(sweep)))
    # τ bars: per variant, the six benchmarks then avg, each the mean over the runs that have it.
    decay = [statistics.fmean(t) for t in zip(TAU[("decay", 0)], TAU[("decay", 1)], strict=True)]
    decay.append(statistics.fmean([statistics.fmean(TAU[("decay", 0)]), statistics.fmean(TAU[("decay", 1)])]))
    auf = [statistics.fmean(t) for t in zip(TAU[("auf", 0)][:5], TAU[("auf", 1)][:5], strict=True)]
    auf.append(TAU[("auf", 0)][5])  # Alpaca: seed 1 skipped it
    auf.append(statistics.fmean([statistics.fmean(TAU[("auf", 0)]), statistics.fmean(TAU[("auf", 1)][:5])]))
    bars = axes["tau_per_benchmark.png"]
    assert [p.get_height() for p in bars.patches] == pytest.approx(decay + auf)
    assert [t.get_text() for t in bars.texts] == ["n=1"]  # AUF's Alpaca bar has one seed of two
    # α_k: one line per variant with α (the decay run without eval has none), the two None positions dropped.
    alpha = axes["alpha_k.png"]
    assert [line.get_label() for line in alpha.lines] == ["DFlash · decay only (n=2)", "DFlash · AUF (n=2)"]
    assert [len(line.get_xdata()) for line in alpha.lines] == [13, 13]
    # Token acc vs τ: one point per run with both numbers; the run without eval is counted in the title.
    scatter = axes["token_acc_vs_tau.png"]
    assert [len(c.get_offsets()) for c in scatter.collections] == [2, 2]
    assert "(1 finished run(s) without τ or token acc not shown)" in scatter.get_title()


def test_figures_without_data_say_so(tmp_path: Path) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "summary.json").write_text(json.dumps({"status": "failed", "error": "x"}))
    for name, ax in _axes(rep.build_report(rep.load_runs(tmp_path), str(tmp_path))).items():
        assert not ax.axison and not ax.patches and not ax.lines and not ax.collections, name
        assert next(t.get_text() for t in ax.texts).endswith("nothing to plot."), name


def test_pngs_are_real(made: Path) -> None:
    for name in ("tau_per_benchmark.png", "alpha_k.png", "token_acc_vs_tau.png"):
        data = (made / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 20_000, name


def test_alpha_mean_skips_none() -> None:
    run = rep.Run(path="x", status="finished", alpha={"a": [0.8, 0.6, None], "b": [0.6, None, None]})
    assert rep.run_alpha(run) == [pytest.approx(0.7), pytest.approx(0.6), None]
