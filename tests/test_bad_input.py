"""Bad input gets one clear line, not a traceback, and leaves nothing behind that looks like a result.

Extends tests/test_train.py::test_bad_input_fails_at_start_with_a_clear_message (unknown loss, missing data
file, missing target, typo key, missing gamma), tests/test_evaluate.py (corrupt/foreign checkpoints, an
overlong prompt) and tests/test_chat_data.py; the resume and export refusals are in test_resume.py and
test_export.py.
"""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from lightning.pytorch.loggers import WandbLogger
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from specauf.data.benchmarks import Benchmark, BenchmarkSuite
from specauf.data.module import ChatDataModule
from specauf.drafters.dflash import DFlashDrafter
from specauf.evaluate import CheckpointError, evaluate_suite, load_checkpoint, markdown_report
from specauf.export import export_checkpoint
from specauf.losses import AUF
from specauf.module import DrafterModule
from specauf.target import tiny_random
from specauf.train import wandb_offline_fallback
from tests.conftest import CONF, REPO, TINY, run_cli

TINY_TARGET = {"num_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_feature_layers": 1}
BENCH_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmarks"


def data_module(tokenizer, source: Path) -> ChatDataModule:
    return ChatDataModule(tokenizer, 8, 0, source=str(source), max_length=96, num_anchors=4, batch_size=2,
                          val_size=2, min_supervised_tokens=4, cache=False)  # fmt: skip


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("specauf: error:")]
    assert len(lines) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    return lines[0]


def assert_nothing_valid_left(run_dir: Path) -> None:
    """A failed run leaves a failed summary and its log, never a checkpoint or metrics that look like a run."""
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "csv").exists()


# --- configuration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "error", "text"),
    [
        ("foo=1", ConfigCompositionException, "foo"),
        ("trainer.max_stepz=5", ConfigCompositionException, "max_stepz"),
        ("guard.max_consecutive=3", ConfigCompositionException, "max_consecutive"),
        ("backbone=dflsh", ConfigCompositionException, "dflash"),  # the message lists the options
        ("data=sharegtp", ConfigCompositionException, "sharegpt"),
    ],
    ids=["unknown-key", "nested-typo", "guard-typo", "unknown-backbone", "unknown-data"],
)
def test_config_mistakes_fail_at_compose_time(override, error, text):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"), pytest.raises(error) as err:
        compose("train", overrides=[override])
    assert text in str(err.value) + str(err.value.__cause__)


def test_config_keys_cannot_be_misread_later():
    # Struct mode: code reading a key that is not there fails instead of getting None.
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train")
    assert cfg.guard.max_consecutive_nonfinite == 20
    with pytest.raises((ConfigAttributeError, ConfigKeyError)):
        _ = cfg.guard.max_consecutive


def test_unknown_key_on_the_command_line_leaves_no_run_behind(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("specauf.train", *TINY, "guard.max_consecutiv=3", f"hydra.run.dir={run_dir}", cwd=REPO,
                   timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert "max_consecutiv" in proc.stderr and "Traceback" not in proc.stderr
    assert not run_dir.exists()


# --- data ---------------------------------------------------------------------------------------------------


def test_malformed_data_file_is_one_line_and_leaves_nothing(tmp_path, chat_file, isolated_cache):
    lines = chat_file.read_text().splitlines()
    lines[2] = lines[2][:40]  # a line cut mid-record
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    proc = run_cli("specauf.train", *TINY, f"data.source={broken}", f"hydra.run.dir={run_dir}", cwd=REPO,
                   timeout=120)  # fmt: skip
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert line.startswith(f"specauf: error: {broken}: line 3 is not valid JSON")
    assert_nothing_valid_left(run_dir)


def _unusable_chats(path: Path) -> Path:
    records = [
        {"messages": []},
        {"messages": [{"role": "user", "content": "hello?"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "   "}]},
        {"conversations": [{"from": "human", "value": "only a question"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records * 5))
    return path


def test_no_usable_conversation_is_a_clear_error(tmp_path):
    target = tiny_random(**TINY_TARGET)
    source = _unusable_chats(tmp_path / "unusable.jsonl")
    with pytest.raises(ValueError, match=r"unusable\.jsonl: no usable conversations remain") as err:
        data_module(target.tokenizer, source).setup()
    assert "\n" not in str(err.value)


def test_no_usable_conversation_says_why(tmp_path):
    target = tiny_random(**TINY_TARGET)
    source = _unusable_chats(tmp_path / "unusable.jsonl")
    with pytest.raises(ValueError, match=r"no usable conversations remain.*no assistant turn"):
        data_module(target.tokenizer, source).setup()


def test_target_without_chat_template_is_named(chat_file):
    target = tiny_random(**TINY_TARGET)
    target.tokenizer.chat_template = None  # a base model's tokenizer
    with pytest.raises(
        ValueError, match=r"has no chat template, so assistant turns cannot be located\. Fix: use"
    ):
        data_module(target.tokenizer, chat_file).setup()


# --- evaluation ---------------------------------------------------------------------------------------------


def test_every_prompt_longer_than_the_context(caplog):
    # Extends test_evaluate's single overlong prompt: a benchmark with nothing left still reports, not crashes.
    target = tiny_random(**TINY_TARGET, max_position_embeddings=16)
    torch.manual_seed(0)
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=4)
    bench = Benchmark("gsm8k", n=3, max_new_tokens=4, data_dir=str(BENCH_FIXTURES), use_hub=False,
                      use_packages=False)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="specauf.evaluate"):
        results = evaluate_suite(
            target, drafter, BenchmarkSuite(gsm8k=bench), ar_baseline=False, progress=False
        )
    gsm8k = results["benchmarks"]["gsm8k"]
    assert gsm8k["n"] == 0 and gsm8k["skipped"] == 3 and gsm8k["tau"] is None
    assert results["tau/avg"] is None and caplog.text.count("skipped") == 3
    assert "| gsm8k | 0 | 3 | – |" in markdown_report(results)


def _checkpoint(path: Path, target, drafter) -> Path:
    config = {"target": {"_target_": "specauf.target.tiny_random", **TINY_TARGET}}
    module = DrafterModule(drafter, target, AUF(), partial(torch.optim.AdamW),
                           run_config={"config": config, "choices": {}})  # fmt: skip
    checkpoint = {"state_dict": module.state_dict(), "global_step": 3}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def test_evaluate_refuses_a_target_with_other_feature_layers(tmp_path):
    target = tiny_random(**TINY_TARGET)
    ckpt = _checkpoint(
        tmp_path / "last.ckpt", target, DFlashDrafter.from_target(target, num_layers=1, block_size=4)
    )
    same_name_other_layers = tiny_random(**TINY_TARGET, layer_ids=[0])
    with pytest.raises(CheckpointError, match=r"reads target layers \[1\], the target gives \[0\]\. Fix"):
        load_checkpoint(ckpt, target=same_name_other_layers)


def test_evaluate_refuses_weights_of_another_backbone(tmp_path):
    target = tiny_random(**TINY_TARGET)
    ckpt = _checkpoint(
        tmp_path / "last.ckpt", target, DFlashDrafter.from_target(target, num_layers=1, block_size=4)
    )
    checkpoint = torch.load(ckpt, weights_only=True)
    checkpoint["specauf"]["drafter_class"] = "specauf.drafters.domino.DominoDrafter"
    checkpoint["specauf"]["drafter_config"]["vocab_size"] = target.vocab_size
    torch.save(checkpoint, ckpt)
    with pytest.raises(CheckpointError, match="DominoDrafter"):
        load_checkpoint(ckpt, target=target)


def test_export_of_a_corrupt_checkpoint(tmp_path):
    (tmp_path / "last.ckpt").write_bytes(b"\x00" * 64)
    with pytest.raises(
        CheckpointError, match=r"cannot read checkpoint .*last\.ckpt: the file is corrupt or truncated"
    ):
        export_checkpoint(tmp_path / "last.ckpt", tmp_path / "out")
    assert not (tmp_path / "out").exists()


# --- W&B without a key --------------------------------------------------------------------------------------


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
    with caplog.at_level(logging.WARNING, logger="specauf.train"):
        overrides = wandb_offline_fallback(cfg)
    assert overrides == {"offline": True}
    assert "W&B online requested but no API key found; logging offline — run `wandb login`" in caplog.text
    from hydra.utils import instantiate

    logger = instantiate(cfg, **overrides)
    assert (
        isinstance(logger, WandbLogger) and logger._offline
    )  # Lightning sets WANDB_MODE=dryrun when the run starts


def test_wandb_online_with_a_key_stays_online(no_wandb_key, monkeypatch, caplog):
    cfg = wandb_cfg(no_wandb_key)
    (no_wandb_key / ".netrc").write_text("machine api.wandb.ai\n  login user\n  password abc123\n")
    assert wandb_offline_fallback(cfg) == {}
    (no_wandb_key / ".netrc").unlink()
    monkeypatch.setenv("WANDB_API_KEY", "abc123")
    assert wandb_offline_fallback(cfg) == {}
    monkeypatch.delenv("WANDB_API_KEY")
    assert wandb_offline_fallback(wandb_cfg(no_wandb_key, offline=True)) == {}  # offline was asked for
    assert wandb_offline_fallback(OmegaConf.create({"_target_": "lightning.pytorch.loggers.CSVLogger"})) == {}
    assert "no API key" not in caplog.text
