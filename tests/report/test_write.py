"""specauf.report.write: the six output files, written atomically, and logging them to W&B offline."""

from __future__ import annotations

from pathlib import Path

import pytest

from specauf import report as rep
from specauf.report import write


def test_writes_exactly_the_outputs(made: Path) -> None:
    # No temp files of the atomic writes left behind (W&B's offline dir is another test's, in the same dir).
    assert sorted(p.name for p in made.iterdir() if p.name != "wandb") == sorted(rep.OUTPUTS)


def test_wandb_offline_logs_tables_and_images(
    made: Path, sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    report = rep.build_report(rep.load_runs(sweep), str(sweep))
    paths = {name: made / name for name in rep.OUTPUTS}
    where = rep.log_to_wandb(report, paths, "specauf-test", None)
    assert "offline" in where
    files = {p.name.split("_0_")[0] for p in (made / "wandb").rglob("files/media/*/report/*")}
    assert files == {"variants", "runs", "tau_per_benchmark", "alpha_k", "token_acc_vs_tau", "tau_over_steps"}


def test_wandb_mode_follows_the_login(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    assert write._wandb_mode() is None  # wandb reads WANDB_MODE itself
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setattr(write, "wandb_key_configured", lambda: True)
    assert write._wandb_mode() == "online"
    monkeypatch.setattr(write, "wandb_key_configured", lambda: False)
    assert write._wandb_mode() == "offline"
