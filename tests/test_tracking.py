"""`specauf.tracking`: W&B online without a key falls back to offline instead of stopping to prompt."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from hydra.utils import instantiate
from lightning.pytorch.loggers import WandbLogger
from omegaconf import OmegaConf

from specauf.tracking import offline_fallback


@pytest.fixture
def no_wandb_key(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc, no ~/.config/wandb/settings
    for var in ("WANDB_MODE", "WANDB_API_KEY", "WANDB_IDENTITY_TOKEN_FILE", "NETRC", "WANDB_CONFIG_DIR",
                "WANDB_BASE_URL"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    return tmp_path


def wandb_cfg(tmp_path: Path, offline: bool = False):
    return OmegaConf.create({"_target_": "lightning.pytorch.loggers.WandbLogger", "project": "specauf",
                             "offline": offline, "save_dir": str(tmp_path)})  # fmt: skip


def test_wandb_online_without_a_key_falls_back_to_offline(no_wandb_key, caplog):
    cfg = wandb_cfg(no_wandb_key)
    with caplog.at_level(logging.WARNING, logger="specauf.tracking"):
        overrides = offline_fallback(cfg)
    assert overrides == {"offline": True}
    assert "W&B online requested but no API key found; logging offline — run `wandb login`" in caplog.text
    logger = instantiate(cfg, **overrides)
    assert (
        isinstance(logger, WandbLogger) and logger._offline
    )  # Lightning sets WANDB_MODE=dryrun when the run starts


def test_wandb_online_with_a_key_stays_online(no_wandb_key, monkeypatch, caplog):
    cfg = wandb_cfg(no_wandb_key)
    (no_wandb_key / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert offline_fallback(cfg) == {}
    (no_wandb_key / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "abc123")
    assert offline_fallback(cfg) == {}
    monkeypatch.delenv("WANDB_API_KEY")
    assert offline_fallback(wandb_cfg(no_wandb_key, offline=True)) == {}  # offline was asked for
    assert offline_fallback(OmegaConf.create({"_target_": "lightning.pytorch.loggers.CSVLogger"})) == {}
    assert "no API key" not in caplog.text
