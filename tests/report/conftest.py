"""The fake sweep most report tests read, and its report made once."""

from __future__ import annotations

from pathlib import Path

import pytest

from specauf.report.__main__ import main
from tests.report.fakes import TAU, write_failed, write_run


@pytest.fixture(scope="package")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 variants × 2 seeds (AUF seed 1 without Alpaca), a decay run without eval, a failed run (read-only)."""
    root = tmp_path_factory.mktemp("sweep") / "multirun"
    write_run(root / "0", "auf", 0, TAU[("auf", 0)])
    write_run(root / "1", "auf", 1, TAU[("auf", 1)], skip_alpaca=True)
    write_run(root / "2", "decay", 0, TAU[("decay", 0)])
    write_run(root / "3", "decay", 1, TAU[("decay", 1)])
    write_run(root / "4", "decay", 2, None)
    write_failed(root / "5", "Traceback...\nRuntimeError: CUDA out of memory")
    return root


@pytest.fixture(scope="package")
def made(sweep: Path) -> Path:
    """The report of `sweep`, made once for the tests that read it."""
    assert main([str(sweep), "--title", "AUF ablation"]) == 0
    return sweep / "report"
