"""`specauf.preflight`: what would fail after training fails before it, every problem in one message."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig

from specauf.config import register_resolvers
from specauf.errors import ConfigError
from specauf.preflight import preflight
from specauf.target import tiny_random
from tests.conftest import CONF, REPO, SHARED_DATA, TINY, run_cli

register_resolvers()


def composed(tmp_path, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "train", overrides=[*TINY, f"hydra.run.dir={tmp_path}", *overrides], return_hydra_config=True
        )
    HydraConfig.instance().set_config(cfg)
    return cfg


@pytest.fixture(scope="module")
def target():
    return tiny_random()


@pytest.fixture(autouse=True)
def _offline_data(monkeypatch):
    monkeypatch.delenv("SPECAUF_DATA_DIR", raising=False)


def test_a_good_config_passes(tmp_path, target):
    preflight(composed(tmp_path), target, tmp_path / "run")


def test_every_problem_is_named_with_its_fix_in_one_message(tmp_path, target):
    cfg = composed(
        tmp_path, "+trainer.foo=1", "trainer.accelerator=gpu", "optim.optimizer.lr=-1", "benchmarks=smoke",
        "benchmarks.skip_missing=false", "benchmarks.data_dir=/nonexistent",
        "benchmarks.humaneval=null", "benchmarks.mt_bench=null",  # the PyPI-packaged two: not fetched here
    )  # fmt: skip
    with pytest.raises(ConfigError) as err:
        preflight(cfg, target, tmp_path / "run")
    message = str(err.value)
    assert message.startswith("the run cannot start (4 problems):")
    assert "no data for 4 benchmarks (gsm8k, math500, mbpp, alpaca)" in message
    assert "`benchmarks.alpaca=null`" in message
    assert (
        "trainer.accelerator=gpu but this machine has no CUDA device. Fix: trainer.accelerator=auto"
        in message
    )
    assert "trainer.foo is not a Lightning Trainer argument" in message
    assert "optim.optimizer.lr must be positive, got -1" in message


@pytest.mark.parametrize(
    "override,expected",
    [
        ("eval.batch_size=0", "eval.batch_size must be a whole number >= 1, got 0. Fix: eval.batch_size=1"),
        ("eval.temperature=-0.5", "eval.temperature must be >= 0 (0 = greedy), got -0.5"),
    ],
)
def test_bad_eval_knobs(tmp_path, target, override, expected):
    with pytest.raises(ConfigError) as err:
        preflight(composed(tmp_path, override), target, tmp_path / "run")
    assert expected in str(err.value)


def test_a_tokenizer_without_a_chat_template(tmp_path):
    bare = tiny_random()
    bare.tokenizer.chat_template = None
    with pytest.raises(ConfigError, match=r"1 problem\):\n  - tokenizer .* has no chat template"):
        preflight(composed(tmp_path), bare, tmp_path / "run")


def test_an_unwritable_run_directory(tmp_path, target):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match=r"cannot write to the run directory .*Fix: hydra.run.dir="):
        preflight(composed(tmp_path), target, blocker / "run")


@pytest.mark.cli
def test_six_benchmarks_offline_without_alpaca_fail_in_seconds(tmp_path, chat_file):
    run_dir = tmp_path / "run"
    env = {"SPECAUF_DATA_DIR": str(SHARED_DATA)} if SHARED_DATA.is_dir() else {}
    proc = run_cli("specauf.train", *TINY, "benchmarks=six", f"data.source={chat_file}", f"hydra.run.dir={run_dir}",
                   cwd=REPO, env=env, timeout=300)  # fmt: skip
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "specauf: error: the run cannot start" in proc.stderr and "Traceback" not in proc.stderr
    assert "no data for benchmark 'alpaca'" in proc.stderr and "`benchmarks.alpaca=null`" in proc.stderr
    # Before the data is tokenized or a step is taken: no logger, no checkpoint, nothing that looks like a run.
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "csv").exists()
    assert "tokenizing" not in proc.stderr
