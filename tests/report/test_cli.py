"""`python -m specauf.report` (specauf.report.__main__): outputs, exit codes, one-line user errors."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from specauf import report as rep
from specauf.report.__main__ import main
from tests.conftest import REPO, run_cli
from tests.report.fakes import PNG_MAGIC, write_failed

DEBUG_HINT = "(set SPECAUF_DEBUG=1 for the traceback)"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {"WANDB_MODE": "offline", "WANDB_SILENT": "true", "WANDB_API_KEY": ""}
    return run_cli("specauf.report", *args, cwd=REPO, env=env, timeout=120)


def _error_line(stderr: str) -> str:
    """The `specauf: error: …` line; stderr holds nothing else but the wrapper's hint on the traceback."""
    lines = stderr.splitlines()
    assert len(lines) == 2 and lines[0].startswith("specauf: error:") and lines[1] == DEBUG_HINT, stderr
    return lines[0]


@pytest.mark.cli
def test_cli_empty_dir_is_one_line_error(tmp_path: Path) -> None:
    proc = _cli(str(tmp_path))
    assert proc.returncode == 1
    assert _error_line(proc.stderr) == (
        f"specauf: error: no runs found under {tmp_path} (looked for */summary.json)"
    )


@pytest.mark.cli
def test_cli_wandb_source_unreachable(tmp_path: Path) -> None:
    proc = _cli("wandb:nobody/nothing", "--out", str(tmp_path))
    assert proc.returncode == 1
    line = _error_line(proc.stderr)
    assert "could not reach W&B" in line and "pass a local multirun directory instead" in line


@pytest.mark.cli
def test_cli_writes_the_report(sweep: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    proc = _cli(str(sweep), "--out", str(out), "--title", "via the CLI")
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(rep.OUTPUTS)
    assert (out / "table.md").read_text().startswith("# via the CLI\n")
    assert "decay only" in proc.stdout and f"wrote {out / 'table.md'}" in proc.stdout


def test_main_writes_outputs_and_prints_table(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main([str(sweep), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(rep.OUTPUTS)
    printed = capsys.readouterr().out
    assert "GSM8K" in printed and "decay only" in printed and "2.30 ± 0.14" in printed


def test_main_user_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "missing")])
    assert exit_info.value.code == 1
    assert f"specauf: error: {tmp_path / 'missing'} does not exist" in capsys.readouterr().err


def test_all_failed_writes_report_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_failed(tmp_path / "0", "ValueError: bad")
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "summary.json").write_text("{not json")  # a run killed mid-write
    assert main([str(tmp_path)]) == 1
    assert "specauf: error: all 2 runs under" in capsys.readouterr().err
    md = (tmp_path / "report" / "table.md").read_text()
    assert "## Failed runs (2)" in md and "`1` (unreadable): summary.json:" in md
    assert "No finished runs" in md
    assert (tmp_path / "report" / "tau_per_benchmark.png").read_bytes()[:8] == PNG_MAGIC
