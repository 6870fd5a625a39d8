"""The `python -m specauf.export` entry point, run as a user would (the library is in test_export_layout.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from specauf.target import Target, tiny_random
from tests.conftest import REPO, run_cli
from tests.test_export_layout import TINY_TARGET, checkpoint, make_drafter

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmarks"


@pytest.fixture(scope="module")
def target() -> Target:
    return tiny_random(**TINY_TARGET)


@pytest.mark.cli
def test_cli(tmp_path, target):
    ckpt = checkpoint(tmp_path, target, make_drafter("dflash", target))
    out = tmp_path / "export"
    env = {"PYTHONPATH": str(REPO)}  # run from elsewhere: the export must leave nothing in the working dir
    proc = run_cli("specauf.export", f"ckpt={ckpt}", f"out={out}", cwd=tmp_path, env=env, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"exported to {out}" in proc.stdout
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export", "last.ckpt"]  # no outputs/, no .hydra/
    proc = run_cli("specauf.export", f"ckpt={ckpt}", f"out={out}", cwd=tmp_path, env=env, timeout=180)
    assert proc.returncode == 1
    assert proc.stderr.startswith(f"specauf: error: out={out} exists and is not empty")
    assert "Traceback" not in proc.stderr and "exported to" not in proc.stdout


@pytest.mark.cli
@pytest.mark.parametrize("kind", ["domino", pytest.param("dflash", marks=pytest.mark.slow)])
def test_evaluate_measures_tau_of_an_export(tmp_path, target, kind):
    out = tmp_path / "export"
    proc = run_cli("specauf.export", f"ckpt={checkpoint(tmp_path, target, make_drafter(kind, target))}",
                   f"out={out}", cwd=REPO, timeout=180)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    evaluated = tmp_path / "eval"
    proc = run_cli(
        "specauf.evaluate", f"ckpt={out}", "benchmarks=smoke", f"benchmarks.data_dir={FIXTURES}",
        "benchmarks.skip_missing=true", "max_prompts=1", "logger=csv", f"hydra.run.dir={evaluated}", cwd=REPO,
        env={"OMP_NUM_THREADS": "1"}, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((evaluated / "eval.json").read_text())
    assert results["checkpoint"]["path"] == str(out) and results["benchmarks"]
    assert all(1.0 <= b["tau"] <= results["tau_max"] for b in results["benchmarks"].values())
