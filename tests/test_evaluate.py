"""The `python -m specauf.evaluate` entry point, run as a user would (the library is in tests/evaluation/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from specauf.drafters.dflash import DFlashDrafter
from specauf.target import tiny_random
from tests.checkpoints import TINY_TARGET, save_checkpoint
from tests.conftest import REPO, run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmarks"


@pytest.mark.cli
def test_cli_evaluates_a_checkpoint(tmp_path):
    target = tiny_random(**TINY_TARGET)
    torch.manual_seed(0)
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=4, init_std=0.2)
    ckpt = save_checkpoint(tmp_path / "last.ckpt", target, drafter)
    out = tmp_path / "eval"
    proc = run_cli(
        "specauf.evaluate", f"ckpt={ckpt}", "benchmarks=cpu", "logger=csv", f"hydra.run.dir={out}",
        f"benchmarks.data_dir={FIXTURES}", "benchmarks.gsm8k.max_new_tokens=6", "benchmarks.mt_bench.n=1",
        "benchmarks.mt_bench.max_new_tokens=6", "benchmarks.math500=null", "benchmarks.humaneval=null",
        "benchmarks.mbpp=null", "benchmarks.alpaca=null", "max_prompts=2", cwd=REPO,
        env={"OMP_NUM_THREADS": "1"},  # shared cores: one thread is faster for a tiny model
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval.json").read_text())
    assert set(results["benchmarks"]) == {"gsm8k", "mt_bench"}
    assert results["benchmarks"]["gsm8k"]["n"] == 2 and results["benchmarks"]["mt_bench"]["n"] == 1
    assert results["run_name"] == "eval-loss=auf" and results["checkpoint"]["global_step"] == 7
    assert (out / "eval.md").exists()
    metrics = (out / "csv" / "metrics.csv").read_text()
    assert "eval/tau/avg" in metrics and "eval/tau/gsm8k" in metrics
    assert "gsm8k" in proc.stdout and "speedup" in proc.stdout  # the table


@pytest.mark.cli
def test_cli_user_error_is_one_line(tmp_path):
    proc = run_cli(
        "specauf.evaluate", f"ckpt={tmp_path}/missing.ckpt", "logger=csv", f"hydra.run.dir={tmp_path}/out",
        cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("specauf: error: no checkpoint at") and "Traceback" not in proc.stderr
