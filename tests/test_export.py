"""The `python -m specauf.export` entry point, run as a user would (the library is in test_export_layout.py)."""

from __future__ import annotations

import pytest

from specauf.target import Target, tiny_random
from tests.conftest import REPO, run_cli
from tests.test_export_layout import TINY_TARGET, checkpoint, make_drafter


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
