"""`specauf.report.curves`: real τ and TF-τ over steps, read from a run's CSV log and averaged over seeds."""

from __future__ import annotations

from specauf.report.curves import mean_curve, read_curves


def test_read_curves_from_a_csv_log(tmp_path):
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text(
        "epoch,step,train/loss,val/tau/avg,val/tf_tau\n"
        "0,4,11.7,,\n"
        "0,200,,1.33,\n"
        "0,200,,,1.26\n"
        "0,400,,1.45,1.39\n"
    )
    assert read_curves(tmp_path) == {
        "val/tau/avg": [(200, 1.33), (400, 1.45)],
        "val/tf_tau": [(200, 1.26), (400, 1.39)],
    }
    assert read_curves(tmp_path / "elsewhere") == {}  # a run without a CSV log has no curves


def test_mean_curve_over_seeds_keeps_the_steps_all_logged():
    a, b = [(200, 1.2), (400, 1.4)], [(200, 1.4), (400, 1.6), (600, 1.7)]
    assert mean_curve([a, b]) == [(200, 1.3), (400, 1.5)] or mean_curve([a, b]) == [
        (200, 1.2999999999999998),
        (400, 1.5),
    ]
    assert mean_curve([]) == [] and mean_curve([[], a]) == a
