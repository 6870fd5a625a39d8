"""The target-feature cache (specauf.feature_cache): a cached run trains exactly as an uncached one, with one
target forward per sample; bad settings fail with a clear error; data parallelism runs without it."""

from __future__ import annotations

import functools

import lightning as L
import pytest
import torch

from specauf.data.module import ChatDataModule
from specauf.drafters.dflash import DFlashDrafter
from specauf.errors import ConfigError
from specauf.losses import AUF
from specauf.module import DrafterModule
from specauf.target import tiny_random
from tests.conftest import REPO, TINY, run_cli


class StepLosses(L.Callback):
    def __init__(self) -> None:
        self.losses: list[torch.Tensor] = []

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx) -> None:
        self.losses.append(outputs["loss"].detach().clone())


def fit(chat_file, cache: bool, epochs: int = 2):
    """Two epochs on the tiny target; returns (per-step losses, target forwards per split, module, data)."""
    target = tiny_random()
    calls = {"train": 0, "val": 0}
    features = target.features

    def counted(input_ids, attention_mask):
        calls["train" if module.training else "val"] += 1
        return features(input_ids, attention_mask)

    object.__setattr__(target, "features", counted)
    L.seed_everything(0, verbose=False)
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=8)
    module = DrafterModule(
        drafter, target, AUF(), functools.partial(torch.optim.AdamW, lr=1e-2), cache_target_features=cache
    )
    data = ChatDataModule(
        target.tokenizer, 8, drafter.label_offset, source=str(chat_file), max_length=96, num_anchors=4,
        batch_size=2, val_size=4, min_supervised_tokens=8, cache=False,
    )  # fmt: skip
    record = StepLosses()
    trainer = L.Trainer(
        accelerator="cpu", devices=1, max_epochs=epochs, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, callbacks=[record], num_sanity_val_steps=0,
        check_val_every_n_epoch=1, limit_val_batches=2,
    )  # fmt: skip
    trainer.fit(module, datamodule=data)
    return torch.stack(record.losses), calls, module, data


def test_a_cached_run_trains_exactly_as_an_uncached_one(chat_file):
    plain, plain_calls, _, _ = fit(chat_file, cache=False)
    cached, cached_calls, module, data = fit(chat_file, cache=True)
    steps_per_epoch = len(data.train_set) // 2
    assert len(plain) == len(cached) == 2 * steps_per_epoch
    # Same numbers at every step, the second epoch (read from the cache, new anchors) included.
    assert torch.equal(plain, cached), (plain - cached).abs().max()
    # The target ran once per training batch of the first epoch only, and once per validation batch once.
    assert plain_calls == {"train": 2 * steps_per_epoch, "val": 2 * 2}
    assert cached_calls == {"train": steps_per_epoch, "val": 2}
    cache = module.feature_cache
    assert len(cache) == 2 * steps_per_epoch + 4  # every training sample once, the 4 validated once
    width = len(module.target.layer_ids) * module.target.hidden_size
    tokens = sum(len(data.train_set[i]["input_ids"]) for i in range(2 * steps_per_epoch))
    tokens += sum(len(data.val_set[i]["input_ids"]) for i in range(4))
    assert cache.nbytes == tokens * width * 4  # fp32, each sample at its real length


def test_a_cached_batch_holds_the_targets_numbers():
    target = tiny_random()
    from specauf.feature_cache import FeatureCache

    cache = FeatureCache()
    ids = torch.randint(0, 200, (2, 10))
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[1, 6:] = False
    batch = {"input_ids": ids, "attention_mask": mask, "sample_index": torch.tensor([3, 7])}
    first = cache.features(batch, target.features, "train")
    again = cache.features(batch, lambda *a: pytest.fail("the target ran on a cached batch"), "train")
    assert torch.equal(again[0], first[0]) and torch.equal(again[1, :6], first[1, :6])
    assert torch.equal(again[1, 6:], torch.zeros_like(again[1, 6:]))  # padding: never attended to
    assert len(cache) == 2
    # Another split is another key: validation sample 3 is not training sample 3.
    cache.features({**batch, "sample_index": torch.tensor([3, 9])}, target.features, "val")
    assert len(cache) == 4
    # A batch without sample keys is computed, and nothing is stored.
    cache.features({"input_ids": ids, "attention_mask": mask}, target.features, "train")
    assert len(cache) == 4


@pytest.mark.parametrize("value", ["yes", 1, None])
def test_a_bad_setting_is_a_config_error(value):
    target = tiny_random()
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=8)
    with pytest.raises(ConfigError, match="cache_target_features must be true or false"):
        DrafterModule(drafter, target, AUF(), optimizer=torch.optim.AdamW, cache_target_features=value)


def test_a_cache_too_big_for_the_ram_is_refused_before_training(chat_file, monkeypatch):
    import specauf.feature_cache

    monkeypatch.setattr(specauf.feature_cache, "_physical_memory", lambda: 10_000)
    with pytest.raises(ConfigError, match="more than half of this machine's"):
        fit(chat_file, cache=True)


@pytest.mark.cli
def test_data_parallel_runs_without_the_cache(tmp_path, chat_file):
    proc = run_cli(
        "specauf.train", "trainer=ddp", "trainer.devices=2", "trainer.accelerator=cpu", *TINY,
        f"data.source={chat_file}", "cache_target_features=true", f"hydra.run.dir={tmp_path}", cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cache_target_features=true has no effect on 2 processes" in proc.stderr + proc.stdout
    assert "caching the target's features" not in proc.stderr + proc.stdout
