"""The numerical guard: non-finite steps are skipped (no update) and counted, a run of them stops training
with a clear error and an intact last checkpoint, and non-finite weights are never saved."""

from __future__ import annotations

import logging
import math

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch.utils.data import DataLoader, TensorDataset

from specauf.checkpointing import AtomicCheckpointIO
from specauf.guard import NonFiniteTrainingError, NumericalGuard


class Regression(L.LightningModule):
    """A linear model whose loss is poisoned at chosen steps: NaN (NaN gradients) or +inf (finite grads)."""

    def __init__(self, nan_steps=(), inf_steps=()) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = torch.nn.Linear(4, 1)
        self.nan_steps, self.inf_steps = set(nan_steps), set(inf_steps)
        self.weights_at_start: dict[int, torch.Tensor] = {}

    def training_step(self, batch, batch_idx):
        self.weights_at_start[self.global_step] = self.linear.weight.detach().clone()
        x, y = batch
        loss = torch.nn.functional.mse_loss(self.linear(x), y)
        if self.global_step in self.nan_steps:
            loss = loss * float("nan")
        if self.global_step in self.inf_steps:
            loss = loss + float("inf")  # the loss is inf, its gradient is not
        return loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=0.1)


def loader() -> DataLoader:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    return DataLoader(TensorDataset(x, x.sum(-1, keepdim=True)), batch_size=8)


def trainer(max_steps: int, guard: NumericalGuard, **kwargs) -> L.Trainer:
    kwargs.setdefault("enable_checkpointing", False)
    return L.Trainer(
        max_steps=max_steps,
        callbacks=[guard, *kwargs.pop("callbacks", [])],
        logger=False,
        accelerator="cpu",
        devices=1,
        enable_progress_bar=False,
        enable_model_summary=False,
        gradient_clip_val=1.0,  # the clipping that follows the guard must cope with dropped gradients
        **kwargs,
    )


def test_nonfinite_steps_are_skipped_and_counted(caplog):
    module = Regression(nan_steps={1}, inf_steps={3})
    guard = NumericalGuard(max_consecutive_nonfinite=3)
    with caplog.at_level(logging.WARNING, logger="specauf.guard"):
        trainer(6, guard).fit(module, loader())
    w = module.weights_at_start
    # A skipped step leaves the weights as they were; every other step moves them.
    for step in range(5):
        assert torch.equal(w[step], w[step + 1]) == (step in (1, 3)), step
    assert all(torch.isfinite(p).all() for p in module.parameters())
    # Nor did AdamW's moments or step count see the bad steps.
    state = module.trainer.optimizers[0].state[module.linear.weight]
    assert int(state["step"]) == 4 and torch.isfinite(state["exp_avg"]).all()
    assert guard.skipped_total == 2 and guard.consecutive == 0
    assert module.trainer.callback_metrics["train/skipped_steps"] == 2
    assert module.trainer.global_step == 6  # the schedule still advances: data order stays aligned
    assert "step 1 skipped (no update): loss nan; non-finite gradients in 2 parameter(s)" in caplog.text
    assert "linear.weight" in caplog.text
    assert "step 3 skipped (no update): loss inf [1 in a row, 2 in total]" in caplog.text


def test_a_run_of_nonfinite_steps_stops_training_and_keeps_the_last_good_checkpoint(tmp_path):
    module = Regression(nan_steps=range(3, 100))
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=1)
    t = trainer(50, NumericalGuard(max_consecutive_nonfinite=4), callbacks=[ckpt], enable_checkpointing=True,
                plugins=[AtomicCheckpointIO()])  # fmt: skip
    with pytest.raises(
        NonFiniteTrainingError, match=r"4 steps in a row had a non-finite loss or gradients"
    ) as err:
        t.fit(module, loader())
    message = str(err.value)
    assert "last.ckpt" in message and "Fix:" in message and "\n" not in message
    saved = torch.load(tmp_path / "last.ckpt", map_location="cpu", weights_only=True)
    # Steps 3-5 were skipped (their checkpoints hold step-3 weights); the 4th in a row raised before saving.
    assert saved["global_step"] == 6
    assert torch.equal(saved["state_dict"]["linear.weight"], module.weights_at_start[3])
    assert all(torch.isfinite(v).all() for v in saved["state_dict"].values())
    assert saved["callbacks"]["NumericalGuard"] == {"skipped_total": 3, "consecutive": 3}


def test_guard_state_survives_a_resume(tmp_path):
    ckpt = ModelCheckpoint(dirpath=tmp_path, save_last=True, save_top_k=0, every_n_train_steps=1)
    trainer(3, NumericalGuard(), callbacks=[ckpt], enable_checkpointing=True).fit(
        Regression(nan_steps={1, 2}), loader()
    )
    guard = NumericalGuard()
    trainer(4, guard).fit(Regression(), loader(), ckpt_path=tmp_path / "last.ckpt")
    assert guard.skipped_total == 2 and guard.consecutive == 0


def test_nonfinite_weights_are_never_saved(tmp_path):
    module = Regression()
    t = trainer(2, NumericalGuard(), plugins=[AtomicCheckpointIO()])
    t.fit(module, loader())
    t.save_checkpoint(tmp_path / "good.ckpt")
    before = (tmp_path / "good.ckpt").read_bytes()
    with torch.no_grad():
        module.linear.bias.fill_(math.inf)
    with pytest.raises(NonFiniteTrainingError, match=r"refusing to save a checkpoint.*linear\.bias"):
        t.save_checkpoint(tmp_path / "good.ckpt")
    assert (tmp_path / "good.ckpt").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["good.ckpt"]  # no temp file left behind


def test_gradient_accumulation_decides_once_per_optimizer_step():
    module = Regression(inf_steps={1})  # both micro-batches of optimizer step 1 see an inf loss
    guard = NumericalGuard()
    trainer(3, guard, accumulate_grad_batches=2).fit(module, loader())
    w = module.weights_at_start
    assert torch.equal(w[1], w[2]) and not torch.equal(w[0], w[1])
    assert guard.skipped_total == 1


def test_bad_setting_is_refused():
    with pytest.raises(ValueError, match="max_consecutive_nonfinite"):
        NumericalGuard(max_consecutive_nonfinite=-1)
