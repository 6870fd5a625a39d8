"""Training end to end on the tiny target: one run, a four-loss sweep, and bad input failing at start with a
message that names the problem. (Every shipped loss on every backbone: tests/test_losses.py.)"""

from __future__ import annotations

import csv
import itertools
import json
import os

import pytest
import torch

from specauf.module import warmup_cosine
from tests.conftest import REPO, TINY, run_cli


@pytest.mark.cli
def test_one_run_end_to_end(tmp_path, chat_file):
    run_dir = tmp_path / "run"
    proc = run_cli(
        "specauf.train", *TINY, f"data.source={chat_file}", "loss=auf", f"hydra.run.dir={run_dir}", cwd=REPO
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 3
    assert summary["choices"]["loss"] == "auf"
    assert summary["torch_threads"] == int(os.environ["OMP_NUM_THREADS"])  # tests/conftest.py sets it
    assert summary["data"] == {"source": str(chat_file), "regeneration": None}  # not a regenerated file
    for key in (
        "train/loss",
        "val/loss",
        "val/token_acc",
        "val/tf_tau",
        "val/active_ratio",
        "val/info/full_ce",
    ):
        assert key in summary["metrics"], key
    assert 1.0 <= summary["metrics"]["val/tf_tau"] <= 8.0
    assert (run_dir / "checkpoints" / "last.ckpt").exists()
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
    assert ckpt["specauf"]["drafter_config"]["block_size"] == 8
    assert all(k.startswith("drafter.") for k in ckpt["state_dict"]), "the frozen target must not be saved"
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(r.get("train/loss") for r in rows) and any(r.get("val/tf_tau") for r in rows)
    assert "specauf run" in proc.stdout  # the summary table


def rng_hungry_tiny_random(**kwargs):
    """The tiny target, built after drawing from the global RNG, as a factory that runs a model's random init
    does (SmolLM2's first-run conversion did): the drafter must not start from another init because of it."""
    from specauf.target import tiny_random

    torch.randn(1000)
    return tiny_random(**kwargs)


@pytest.mark.cli
def test_the_drafter_init_depends_on_the_seed_alone(tmp_path, chat_file):
    weights = []
    for name, factory in (
        ("plain", "specauf.target.tiny_random"),
        ("hungry", f"{__name__}.rng_hungry_tiny_random"),
    ):
        run_dir = tmp_path / name
        proc = run_cli(
            "specauf.train", *TINY, f"data.source={chat_file}", "trainer.max_steps=1",
            f"target._target_={factory}", f"hydra.run.dir={run_dir}", cwd=REPO,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr[-3000:]
        ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=False)
        weights.append(ckpt["state_dict"])
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


@pytest.mark.cli
def test_sweep_over_the_four_losses(tmp_path, chat_file):
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "specauf.train",
        "-m",
        "loss=full_ce,decay,auf,auf_decay",
        *TINY,
        f"data.source={chat_file}",
        f"hydra.sweep.dir={sweep}",
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summaries = [json.loads(p.read_text()) for p in sorted(sweep.glob("*/summary.json"))]
    assert sorted(s["choices"]["loss"] for s in summaries) == ["auf", "auf_decay", "decay", "full_ce"]
    for s in summaries:
        assert s["status"] == "finished"
        assert {"train/loss", "val/tf_tau", "val/active_ratio"} <= set(s["metrics"])
    ratio = {s["choices"]["loss"]: s["metrics"]["val/active_ratio"] for s in summaries}
    assert ratio["full_ce"] == pytest.approx(1.0) and ratio["auf"] < 1.0


def test_warmup_cosine_schedule():
    values = [warmup_cosine(s, 100, 4, 0.0) for s in range(100)]
    assert values[0] == pytest.approx(0.25) and values[3] == pytest.approx(1.0)
    assert values[-1] < 0.01 and all(a >= b for a, b in itertools.pairwise(values[3:]))


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["loss=nope"], ["loss/nope", "auf"]),
        (["data.source=/no/such/chats.jsonl"], ["/no/such/chats.jsonl", "data.source"]),
        (
            ["target=hf", "target.path=/no/such/model"],
            ["specauf: error: target path '/no/such/model'", "target.path"],
        ),
        (["loss.gamam=3"], ["gamam"]),
        (["loss=decay", "backbone.block_size=12"], ["block size 12", "loss.gamma"]),
    ],
    ids=["unknown-loss", "missing-data", "missing-target", "typo-key", "no-gamma"],
)
@pytest.mark.cli
def test_bad_input_fails_at_start_with_a_clear_message(tmp_path, chat_file, args, expected):
    overrides = [a for a in TINY if not any(a.startswith(x.split("=")[0] + "=") for x in args)]
    proc = run_cli(
        "specauf.train",
        *overrides,
        f"data.source={chat_file}",
        *args,
        f"hydra.run.dir={tmp_path}",
        cwd=REPO,
        timeout=120,
    )
    assert proc.returncode != 0
    for text in expected:
        assert text in proc.stderr, proc.stderr[-2000:]
    assert (
        "Traceback" not in proc.stderr and "Error in call to target" not in proc.stderr
    )  # not Hydra's wrapper


@pytest.mark.slow  # make test covers DDP in test_data_parallel.py (exactness, one summary)
@pytest.mark.cli
def test_ddp_two_processes(tmp_path, chat_file):
    """trainer=ddp with the CPU-sized default shapes: two processes (gloo) train one model; one summary."""
    run_dir = tmp_path / "run"
    proc = run_cli(
        "specauf.train",
        "trainer=ddp",
        "trainer.devices=2",
        "trainer.accelerator=cpu",
        *TINY,
        f"data.source={chat_file}",
        f"hydra.run.dir={run_dir}",
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("specauf run") == 1
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 3


def test_fsdp_config_composes():
    from hydra import compose, initialize_config_dir

    from tests.conftest import CONF

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["trainer=fsdp"])
    assert cfg.trainer.strategy._target_.endswith("FSDPStrategy")
