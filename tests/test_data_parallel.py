"""Data parallelism trains the model one process would: same global batches, same loss, same gradients."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from specauf.data.module import EpochShuffle
from specauf.losses import AUF, BranchPlacement, CrossEntropy, Predictions, data_parallel_weights
from tests.conftest import REPO, run_cli


def _batches(items: list, batch_size: int) -> list[list]:
    return [items[i : i + batch_size] for i in range(0, len(items) - batch_size + 1, batch_size)]


@pytest.mark.parametrize("size", [20, 23])
def test_ranks_batches_together_are_the_single_process_batch(size):
    single = EpochShuffle(size, seed=5)
    shards = [EpochShuffle(size, seed=5, num_replicas=2, rank=r) for r in (0, 1)]
    for sampler in (single, *shards):
        sampler.set_epoch(3)
    assert len(shards[0]) == len(shards[1]) == size // 2  # every rank takes the same number of steps
    whole = _batches(list(single), 4)
    per_rank = [_batches(list(s), 2) for s in shards]
    for k, (b0, b1) in enumerate(zip(*per_rank, strict=True)):
        assert sorted(b0 + b1) == sorted(whole[k])


def test_validation_shards_cover_every_item_once():
    shards = [list(EpochShuffle(7, seed=0, shuffle=False, num_replicas=2, rank=r)) for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == [(i, 0) for i in range(7)]


def test_resumed_shards_continue_where_the_ranks_stopped():
    shards = [EpochShuffle(21, seed=1, num_replicas=2, rank=r) for r in (0, 1)]
    full = [list(s) for s in shards]
    for s in shards:
        s.resume(epoch=0, consumed=8)  # 2 steps of batch 2 on each of the 2 ranks
    assert [list(s) for s in shards] == [f[4:] for f in full]


def _predictions(n: int, d: int, seed: int) -> tuple[Predictions, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, d, requires_grad=True)
    ce = torch.nn.functional.softplus(logits)
    valid = torch.rand(n, d, generator=g) > 0.2
    hit = torch.rand(n, d, generator=g) > 0.3
    return Predictions(ce=ce, valid=valid, hit=hit), logits


@pytest.mark.parametrize(
    "loss",
    [
        AUF(gamma=7.0),
        CrossEntropy(),
        BranchPlacement(base=AUF(), final=CrossEntropy(gamma=7.0), support_from={"final": "base"}),
    ],
    ids=["auf_decay", "full_ce", "b_auf_decay"],
)
def test_mean_of_process_losses_is_the_whole_batch_loss(loss):
    """Two simulated processes, each on half the blocks: their average loss and gradient are the whole batch's."""
    pred, logits = _predictions(12, 6, seed=0)
    halves = [slice(0, 5), slice(5, 12)]  # unequal: the processes' Σw differ

    def branches(p: Predictions) -> dict[str, Predictions]:
        return {"base": p, "final": p}

    def total(per_branch: dict) -> torch.Tensor:
        return sum(value for value, _ in per_branch.values())

    whole = total(loss.per_branch(branches(pred)))
    (grad_whole,) = torch.autograd.grad(whole, logits, retain_graph=True)

    def part(p: Predictions, s: slice) -> Predictions:
        return Predictions(ce=p.ce[s], valid=p.valid[s], hit=p.hit[s])

    # What each process would put into the all-reduce: its Σw per weighted mean, in call order.
    seen: list[list[torch.Tensor]] = []
    for s in halves:
        seen.append([])
        with data_parallel_weights(lambda v, out=seen[-1]: out.append(v) or v):
            loss.per_branch(branches(part(pred, s)))
    means = torch.stack([torch.stack(v) for v in seen]).mean(dim=0)  # [weighted means per process]
    assert len(means) == 2 and not torch.equal(seen[0][0], seen[1][0])

    losses = []
    for s in halves:
        calls = iter(means)
        with data_parallel_weights(lambda v, calls=calls: next(calls)):
            losses.append(total(loss.per_branch(branches(part(pred, s)))))
    averaged = torch.stack(losses).mean()
    (grad_avg,) = torch.autograd.grad(averaged, logits)
    torch.testing.assert_close(averaged, whole)
    torch.testing.assert_close(grad_avg, grad_whole)


def _train_losses(run: Path) -> dict[int, float]:
    (metrics,) = run.rglob("metrics.csv")
    with open(metrics) as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


@pytest.mark.cli
def test_two_processes_train_the_single_process_model(tmp_path, chat_file):
    """DDP on 2 CPU processes (gloo) at batch 2 each == 1 process at batch 4: the loss curve and the weights."""
    common = [
        "target=tiny_random", "logger=csv", "benchmarks=none", "backbone.num_layers=1",
        "backbone.block_size=8", f"data.source={chat_file}", "data.max_conversations=null",
        "data.val_size=4", "data.min_supervised_tokens=8", "data.max_length=96", "data.num_anchors=6",
        "trainer.max_steps=5", "trainer.val_check_interval=5", "trainer.limit_val_batches=1.0",
        "trainer.log_every_n_steps=1", "trainer.precision=32-true", "trainer.accelerator=cpu", "loss=auf",
        "callbacks.checkpoint.every_n_train_steps=5",
    ]  # fmt: skip
    runs = {
        "one": ["data.batch_size=4", "trainer.devices=1"],
        "two": ["trainer=ddp", "trainer.devices=2", "data.batch_size=2"],
    }
    for name, extra in runs.items():
        result = run_cli(
            "specauf.train", *common, *extra, f"hydra.run.dir={tmp_path / name}", cwd=REPO, timeout=300
        )
        assert result.returncode == 0, result.stderr[-3000:]
        # Under DDP every process finishes training; one evaluates, writes the summary and prints it.
        assert result.stdout.count("specauf run") == 1, name
        assert json.loads((tmp_path / name / "summary.json").read_text())["steps"] == 5
    one, two = _train_losses(tmp_path / "one"), _train_losses(tmp_path / "two")
    assert sorted(one) == sorted(two) == list(range(5))
    for step in one:
        assert two[step] == pytest.approx(one[step], abs=1e-5), step
    weights = [
        torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
        for name in runs
    ]
    for key, value in weights[0].items():
        torch.testing.assert_close(weights[1][key], value, atol=1e-5, rtol=1e-4, msg=key)


def test_norm_clipping_goes_through_the_fsdp_wrapper():
    """FSDP's gradients are sharded: the norm must come from the wrapper's clip_grad_norm_ (it all-reduces)."""
    from types import SimpleNamespace

    from specauf.module import DrafterModule

    calls = []
    module = DrafterModule(torch.nn.Linear(2, 2), target=None, loss=CrossEntropy(), optimizer=None)
    module._trainer = SimpleNamespace(model=SimpleNamespace(clip_grad_norm_=calls.append))
    module.configure_gradient_clipping(None, gradient_clip_val=1.0, gradient_clip_algorithm="norm")
    assert calls == [1.0]
