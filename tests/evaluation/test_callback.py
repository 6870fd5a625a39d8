"""`specauf.evaluation.callback.RealTau`: real τ curves during training, next to teacher-forced τ (and, in
the same run, `specauf.progress`'s plain lines off a terminal)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from specauf.data.benchmarks import Benchmark, BenchmarkSuite
from specauf.errors import ConfigError
from specauf.evaluation.callback import RealTau
from tests.conftest import REPO, TINY, run_cli

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


def test_the_suite_is_cut_to_a_few_short_prompts():
    suite = BenchmarkSuite(
        gsm8k=Benchmark("gsm8k", n=None, max_new_tokens=2048),
        mt_bench=Benchmark("mt_bench", n=1, max_new_tokens=16),
    )
    cut = RealTau(suite, every_n_steps=10, prompts_per_benchmark=3, max_new_tokens=32).suite
    assert {k: (b.n, b.max_new_tokens) for k, b in cut.benchmarks.items()} == {
        "gsm8k": (3, 32),
        "mt_bench": (1, 16),
    }
    assert cut.skip_missing and suite.gsm8k.n is None  # the run's own suite is left as it was
    with pytest.raises(ConfigError, match="enabled must be true, false or auto"):
        RealTau(suite, every_n_steps=10, enabled="yes")


@pytest.mark.cli
def test_training_logs_real_tau_at_every_interval(tmp_path, chat_file):
    run_dir = tmp_path / "run"
    overrides = [
        a for a in TINY if not a.startswith(("benchmarks=", "trainer.max_steps", "trainer.val_check"))
    ]
    proc = run_cli(
        "specauf.train", *overrides, "benchmarks=smoke", f"benchmarks.data_dir={FIXTURES}", "trainer.max_steps=4",
        "trainer.val_check_interval=2", "callbacks.real_tau.enabled=true", "callbacks.real_tau.max_new_tokens=8",
        f"data.source={chat_file}", f"hydra.run.dir={run_dir}", cwd=REPO, env={"OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = list(csv.DictReader((run_dir / "csv" / "metrics.csv").open()))
    steps = sorted({int(r["step"]) for r in rows if r.get("val/tau/avg")})
    assert steps == [2, 4]
    taus = [float(r["val/tau/avg"]) for r in rows if r.get("val/tau/avg")]
    assert all(1.0 <= t <= 8.0 for t in taus)
    assert any(r.get("val/tf_tau") for r in rows)  # teacher-forced τ logged next to it
    # Not on a terminal (a subprocess): plain progress lines every log_every_n_steps, and none of the noise.
    out = proc.stdout + proc.stderr
    lines = [line for line in out.splitlines() if "steps/s" in line]
    assert [line.split("step ")[1].split(" |")[0] for line in lines] == ["1/4", "2/4", "3/4", "4/4"], lines
    assert "| loss " in lines[0] and "| TF-τ " in lines[0] and "ETA " in lines[0]
    assert "Epoch 0/-2" not in out and "💡 Tip" not in out and "LeafSpec" not in out
    assert "past_key_values` is deprecated" not in out
