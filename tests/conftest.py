"""Shared fixtures: the real Hydra config composed with tiny overrides, and a small chat corpus."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

# Tiny models are launch-bound: one thread is faster than two fighting over a shared 2-core machine, and
# subprocesses (the CLI tests) inherit it. Set before torch is imported anywhere.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No hub on CI: fail fast instead of retrying for tens of seconds; never prompt for a W&B login.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"
SHARED_DATA = REPO.parent / "shared" / "data"

# A run that finishes in seconds on the tiny random target: 1 layer, block 8, a few anchors.
TINY = [
    "target=tiny_random",
    "logger=csv",
    "benchmarks=none",
    "backbone.num_layers=1",
    "backbone.block_size=8",
    "data.max_length=96",
    "data.num_anchors=4",
    "data.batch_size=2",
    "data.val_size=4",
    "data.min_supervised_tokens=8",
    "data.max_conversations=null",
    "trainer.max_steps=3",
    "trainer.val_check_interval=3",
    "trainer.limit_val_batches=2",
    "trainer.log_every_n_steps=1",
    "callbacks.checkpoint.every_n_train_steps=3",
]


def write_chats(path: Path, n: int = 48, seed: int = 0) -> Path:
    """Synthetic two-turn chats with a learnable pattern (the assistant repeats and counts)."""
    rng = random.Random(seed)
    words = [
        "alpha",
        "beta",
        "gamma",
        "delta",
        "echo",
        "fox",
        "golf",
        "hotel",
        "india",
        "juliet",
        "kilo",
        "lima",
    ]
    with open(path, "w") as f:
        for _ in range(n):
            topic = rng.sample(words, 3)
            messages = [
                {"role": "user", "content": "say " + " ".join(topic)},
                {"role": "assistant", "content": " ".join(topic * 4) + " done."},
                {"role": "user", "content": "count"},
                {"role": "assistant", "content": " ".join(str(i) for i in range(rng.randint(5, 12)))},
            ]
            f.write(json.dumps({"messages": messages}) + "\n")
    return path


@pytest.fixture(scope="session")
def chat_file(tmp_path_factory) -> Path:
    return write_chats(tmp_path_factory.mktemp("chats") / "chats.jsonl")


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """Point the specauf cache at a temp dir so tests never touch (or depend on) the user's cache."""
    cache = tmp_path / "cache"
    monkeypatch.setenv("SPECAUF_CACHE", str(cache))
    return cache


def run_cli(module: str, *args: str, cwd: Path, env: dict | None = None, timeout: int = 600):
    """Run `python -m <module> args…` as a newcomer would; returns the CompletedProcess."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
