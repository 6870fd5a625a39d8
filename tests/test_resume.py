"""Resuming a killed run: it continues the loss curve of an uninterrupted run with the same seed, step for step
(same step count, LR, data order and RNG), and refuses checkpoints it cannot use with one clear line."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from torch.utils.data import DataLoader

from specauf.checkpointing import (
    AtomicCheckpointIO,
    StepSeed,
    check_resumable,
    keep_previous_metrics,
    resolve_checkpoint,
)
from specauf.data.module import EpochShuffle
from specauf.drafters.dflash import DFlashDrafter
from specauf.drafters.domino import DominoDrafter
from specauf.errors import CheckpointError
from specauf.target import tiny_random
from tests.conftest import REPO, TINY, run_cli, write_chats

# 12 training conversations in batches of 2: 6 steps an epoch, so 14 steps cross two epoch boundaries and a
# kill after step 8 lands mid-epoch 1. Validation is cut to one batch; a checkpoint after every step.
STEPS = 14
RESUME_ARGS = [
    *(a for a in TINY if not a.startswith(("trainer.max_steps", "trainer.val_check", "trainer.limit_val",
                                           "callbacks.checkpoint"))),
    f"trainer.max_steps={STEPS}",
    "trainer.val_check_interval=5",
    "trainer.limit_val_batches=1",
    "callbacks.checkpoint.every_n_train_steps=1",
]  # fmt: skip
ENV = {"OMP_NUM_THREADS": "1"}  # shared cores: one thread each is faster, and the same in every run


def train_cmd(chats: Path, run_dir: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "specauf.train", *RESUME_ARGS, f"data.source={chats}",
            f"hydra.run.dir={run_dir}", *extra]  # fmt: skip


def step_metrics(run_dir: Path, key: str) -> dict[int, float]:
    with open(run_dir / "csv" / "metrics.csv") as f:
        return {int(r["step"]): float(r[key]) for r in csv.DictReader(f) if r.get(key)}


def checkpoint_step(path: Path) -> int | None:
    try:  # atomic writes: the file is always a whole checkpoint, old or new
        return int(torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"])
    except FileNotFoundError:
        return None


@pytest.mark.cli
def test_killed_run_resumes_on_the_reference_curve(tmp_path, isolated_cache):
    chats = write_chats(tmp_path / "chats.jsonl", n=16)
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **ENV}
    killed_dir, ref_dir = tmp_path / "killed", tmp_path / "reference"
    killed = subprocess.Popen(train_cmd(chats, killed_dir), cwd=REPO, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    reference = subprocess.Popen(train_cmd(chats, ref_dir), cwd=REPO, env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        last = killed_dir / "checkpoints" / "last.ckpt"
        deadline = time.monotonic() + 240
        while (step := checkpoint_step(last)) is None or step < 8:
            assert killed.poll() is None, "the run to be killed ended on its own"
            assert time.monotonic() < deadline, "no checkpoint of step 8 in time"
            time.sleep(0.02)
        assert killed.poll() is None, "the run finished before it could be killed"
        killed.send_signal(signal.SIGKILL)  # mid-step, possibly mid-checkpoint-write
        killed.wait()
        _, ref_err = reference.communicate(timeout=240)
    finally:
        for proc in (killed, reference):
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert reference.returncode == 0, ref_err[-3000:]
    resume_step = checkpoint_step(last)
    assert 8 <= resume_step < STEPS
    # What a kill during a checkpoint write leaves behind: a half-written temp file next to last.ckpt.
    (killed_dir / "checkpoints" / "last.ckpt.tmpdeadbeef").write_bytes(last.read_bytes()[:1000])

    proc = run_cli("specauf.train", *train_cmd(chats, killed_dir, "resume=auto")[3:], cwd=REPO, env=ENV)
    assert proc.returncode == 0, proc.stderr[-3000:]
    output = proc.stdout + proc.stderr
    assert "unfinished checkpoint" in output and "last.ckpt.tmpdeadbeef" in output
    assert sorted(p.name for p in (killed_dir / "checkpoints").iterdir()) == ["last.ckpt"]
    summary = json.loads((killed_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == STEPS

    for key in ("train/loss", "lr-AdamW"):
        ref, resumed = step_metrics(ref_dir, key), step_metrics(killed_dir, key)
        steps = list(range(resume_step, STEPS))
        assert sorted(resumed) == steps, key  # the resumed run picks up at the next step, no gap, no repeat
        torch.testing.assert_close(
            torch.tensor([resumed[s] for s in steps], dtype=torch.float64),
            torch.tensor([ref[s] for s in steps], dtype=torch.float64),
            rtol=1e-5,
            atol=1e-7,
            msg=lambda m, key=key: (
                f"{key} after resuming at step {resume_step} differs from the reference: {m}"
            ),
        )
    final = torch.load(last, map_location="cpu", weights_only=True)
    reference_final = torch.load(ref_dir / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    for name, value in reference_final["state_dict"].items():
        torch.testing.assert_close(final["state_dict"][name], value, rtol=1e-5, atol=1e-6)


@pytest.mark.cli
def test_corrupt_last_checkpoint_is_a_clear_error(tmp_path, chat_file, isolated_cache):
    run_dir = tmp_path / "run"
    (run_dir / "checkpoints").mkdir(parents=True)
    (run_dir / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 half a zip file")
    proc = run_cli("specauf.train", *train_cmd(chat_file, run_dir, "resume=auto")[3:], cwd=REPO, env=ENV,
                   timeout=180)  # fmt: skip
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("specauf: error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    first = errors[0]
    assert first.startswith("specauf: error: cannot read checkpoint ")
    assert f"{run_dir}/checkpoints/last.ckpt: the file is corrupt or truncated" in first and "Fix:" in first
    assert "Traceback" not in proc.stderr
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert not (run_dir / "csv").exists()  # failed before anything was trained or logged


# --- the pieces, in process ---------------------------------------------------------------------------------


@pytest.mark.cli
def test_domino_resumes_with_another_curriculum_and_exports_without_it(tmp_path, chat_file, isolated_cache):
    """The λ schedule is a training setting: changing it on resume is allowed, and exports do not carry it."""
    run_dir = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith(("trainer.max_steps", "callbacks.checkpoint"))]
    base = [
        *tiny,
        "callbacks.checkpoint.every_n_train_steps=1",
        "backbone=domino",
        "loss=b_auf",
        f"data.source={chat_file}",
        f"hydra.run.dir={run_dir}",
    ]
    first = run_cli("specauf.train", *base, "trainer.max_steps=2", cwd=REPO, env=ENV)
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_cli(
        "specauf.train",
        *base,
        "trainer.max_steps=4",
        "curriculum.fraction=0.5",
        "resume=auto",
        cwd=REPO,
        env=ENV,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["steps"] == 4 and summary["labels"]["loss"]["name"] == "B-AUF"
    lam = step_metrics(run_dir, "train/lambda")
    assert lam[3] == pytest.approx(0.0)  # resumed past half of 4 steps under fraction 0.5: λ has reached 0
    out = tmp_path / "export"
    exported = run_cli("specauf.export", f"ckpt={run_dir}", f"out={out}", cwd=REPO, env=ENV)
    assert exported.returncode == 0, exported.stderr[-3000:]
    config = json.loads((out / "config.json").read_text())

    def keys(node):
        return [key for k, v in node.items() for key in [k, *(keys(v) if isinstance(v, dict) else [])]]

    assert not [k for k in keys(config) if "curriculum" in k]


def test_resolve_checkpoint(tmp_path):
    ckpts = tmp_path / "checkpoints"
    assert resolve_checkpoint(None, tmp_path) is None
    assert resolve_checkpoint("auto", tmp_path) is None  # nothing yet: a fresh start
    ckpts.mkdir()
    (ckpts / "last.ckpt.tmp1a2b").write_bytes(b"half")
    assert resolve_checkpoint("auto", tmp_path) is None and not any(ckpts.iterdir())
    (ckpts / "last.ckpt").write_bytes(b"x")
    (ckpts / "last.ckpt.tmpzz").write_bytes(b"half")
    assert resolve_checkpoint("auto", tmp_path) == str(ckpts / "last.ckpt")
    assert resolve_checkpoint(str(tmp_path), tmp_path / "elsewhere") == str(ckpts / "last.ckpt")
    assert resolve_checkpoint(str(ckpts / "last.ckpt"), tmp_path) == str(ckpts / "last.ckpt")
    assert [p.name for p in ckpts.iterdir()] == ["last.ckpt"]
    with pytest.raises(FileNotFoundError, match=r"resume=/no/such: no checkpoint at .*Fix"):
        resolve_checkpoint("/no/such", tmp_path)


def test_atomic_checkpoint_io(tmp_path):
    io = AtomicCheckpointIO()
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, tmp_path / "last.ckpt")
    assert oct((tmp_path / "last.ckpt").stat().st_mode & 0o777) == "0o644"

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("boom mid-write")

    with pytest.raises(RuntimeError, match="boom"):
        io.save_checkpoint({"step": 2, "bad": Unpicklable()}, tmp_path / "last.ckpt")
    # The failed write left the previous checkpoint whole and no temp file behind.
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]
    assert io.load_checkpoint(tmp_path / "last.ckpt")["step"] == 1
    (tmp_path / "cut.ckpt").write_bytes((tmp_path / "last.ckpt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match=r"cannot read checkpoint .*cut\.ckpt: the file is corrupt"):
        io.load_checkpoint(tmp_path / "cut.ckpt")


def _training_checkpoint(path: Path, drafter, target) -> Path:
    meta = {
        "drafter_class": f"{type(drafter).__module__}.{type(drafter).__qualname__}",
        "drafter_config": dict(drafter.config),
        "target_name": target.name,
        "target_layer_ids": list(target.layer_ids),
        "config": {
            "config": {"trainer": {"max_steps": 10}},
            "choices": {"backbone": "dflash", "loss": "auf"},
        },
    }
    torch.save({"specauf": meta, "global_step": 4, "optimizer_states": [], "loops": {}}, path)
    return path


def test_resume_refuses_another_backbone_block_size_or_target(tmp_path, caplog):
    target = tiny_random(num_layers=2, hidden_size=32, intermediate_size=64, num_feature_layers=1)
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=8)
    ckpt = _training_checkpoint(tmp_path / "last.ckpt", drafter, target)
    same = DFlashDrafter.from_target(target, num_layers=1, block_size=8, head_chunk_size=7)
    assert check_resumable(ckpt, same, target, max_steps=20)["global_step"] == 4
    assert "trainer.max_steps=20 (the run started with 10)" in caplog.text
    cases = {
        "block_size=8 (this run: 16)": (DFlashDrafter.from_target(target, num_layers=1, block_size=16), target),
        "backbone DFlashDrafter (this run: DominoDrafter)": (
            DominoDrafter.from_target(target, num_layers=1, block_size=8), target),
        "target 'tiny_random-seed0": (
            drafter, tiny_random(num_layers=2, hidden_size=32, intermediate_size=64, num_feature_layers=1, seed=3)),
    }  # fmt: skip
    for expected, (other_drafter, other_target) in cases.items():
        with pytest.raises(CheckpointError) as err:
            check_resumable(ckpt, other_drafter, other_target)
        message = str(err.value)
        assert message.startswith(f"cannot resume from {ckpt}: it was trained with ") and expected in message
        assert "(backbone=dflash, loss=auf, plus its overrides)" in message
    torch.save({"state_dict": {}}, tmp_path / "weights.ckpt")
    with pytest.raises(CheckpointError, match="not a full specauf training checkpoint"):
        check_resumable(tmp_path / "weights.ckpt", drafter, target)


def test_sampler_skips_what_the_epoch_already_trained_on():
    sampler = EpochShuffle(10, seed=3)
    sampler.set_epoch(2)
    full = list(sampler)
    sampler.resume(epoch=2, consumed=4)
    assert list(sampler) == full[4:]
    assert list(sampler) == full  # one-shot: the next pass over the epoch is whole
    sampler.resume(epoch=1, consumed=4)  # the checkpoint closed epoch 1; Lightning moved on to epoch 2
    assert list(sampler) == full and len(sampler) == 10


def test_step_seed_gives_a_resumed_run_the_same_draws(tmp_path):
    class Draws(L.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))
            self.draws: dict[int, float] = {}

        def training_step(self, batch, batch_idx):
            self.draws[self.global_step] = float(torch.rand(()))  # what dropout would draw
            return (self.w - batch.float().mean()) ** 2

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    def fit(max_steps, run, ckpt_path=None):
        torch.manual_seed(123 if ckpt_path else 0)  # a resumed process starts from another global RNG state
        module = Draws()
        ckpt = ModelCheckpoint(dirpath=tmp_path / run, save_last=True, save_top_k=0, every_n_train_steps=1)
        L.Trainer(max_steps=max_steps, callbacks=[StepSeed(7), ckpt], logger=False, enable_progress_bar=False,
                  enable_model_summary=False, accelerator="cpu").fit(
            module, DataLoader(torch.arange(12), batch_size=2), ckpt_path=ckpt_path)  # fmt: skip
        return module.draws

    reference = fit(9, "reference")
    fit(4, "interrupted")  # a run interrupted after step 4 (mid-epoch: 6 batches an epoch)...
    resumed = fit(9, "interrupted", ckpt_path=tmp_path / "interrupted" / "last.ckpt")  # ...and resumed
    assert resumed == {s: reference[s] for s in range(4, 9)}
    assert len(set(reference.values())) == 9  # a fresh draw every step


def test_keep_previous_metrics(tmp_path):
    logger = CSVLogger(tmp_path, name="csv", version="")
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("step,train/loss\n0,1.0\n")
    kept = keep_previous_metrics(logger, "until-resume-from-step4")
    assert kept == tmp_path / "csv" / "metrics.until-resume-from-step4.csv"
    assert kept.read_text().endswith("0,1.0\n") and not (tmp_path / "csv" / "metrics.csv").exists()
    assert keep_previous_metrics(logger, "x") is None
