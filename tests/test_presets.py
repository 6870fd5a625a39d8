"""Every shipped experiment preset composes, declares its sweep, and runs a few steps on the tiny target."""

from __future__ import annotations

import json

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

from specauf.config import register_resolvers
from tests.conftest import CONF, REPO, TINY, run_cli

PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
register_resolvers()


def compose_train(*overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("train", overrides=list(overrides), return_hydra_config=True)


def test_the_presets_we_promise_exist():
    assert {"smoke", "auf_ablation", "domino_ablation", "paper_qwen3_8b"} <= set(PRESETS)


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_composes_with_a_sweep_and_a_group(preset):
    cfg = compose_train(f"experiment={preset}")
    assert cfg.experiment_name == preset
    params = cfg.hydra.sweeper.params
    assert "loss" in params, "every preset sweeps over losses"
    assert preset in cfg.hydra.sweep.dir
    loss_cfg = compose_train(f"experiment={preset}", f"loss={params.loss.split(',')[0]}").loss
    instantiate(loss_cfg)  # the swept losses resolve (γ for the preset's block size, placements)


def test_preset_comment_says_how_to_run_it():
    for preset in PRESETS:
        text = (CONF / "experiment" / f"{preset}.yaml").read_text()
        assert text.startswith("# @package _global_") and f"experiment={preset}" in text, preset


def test_gpu_presets_keep_the_paper_shapes_and_no_feature_cache():
    """The CPU default's shapes (1 layer, B = 8) and its target-feature cache must not leak into a GPU run."""
    for preset in (p for p in PRESETS if p != "smoke"):
        cfg = compose_train(f"experiment={preset}")
        assert (cfg.backbone.num_layers, cfg.backbone.block_size) == (5, 16), preset
        assert cfg.cache_target_features is False, preset


# The smoke preset runs in `make test`; the GPU-sized ones (same code paths, other sizes) in `make test-slow`.
RUN_PRESETS = [p if p == "smoke" else pytest.param(p, marks=pytest.mark.slow) for p in PRESETS]


@pytest.mark.parametrize("preset", RUN_PRESETS)
@pytest.mark.cli
def test_preset_runs_a_few_steps_on_the_tiny_target(preset, tmp_path, chat_file):
    cfg = compose_train(f"experiment={preset}")
    first_loss = cfg.hydra.sweeper.params.loss.split(",")[0]
    run_dir = tmp_path / "run"
    proc = run_cli(
        "specauf.train",
        f"experiment={preset}",
        f"loss={first_loss}",
        *TINY,
        "trainer.max_steps=2",
        "trainer.val_check_interval=2",
        "data.num_workers=0",
        "trainer.max_epochs=-1",
        f"data.source={chat_file}",
        f"hydra.run.dir={run_dir}",
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "finished" and summary["steps"] == 2


@pytest.mark.parametrize("launcher", ["local_gpus", "slurm"])
def test_launcher_configs_compose(launcher):
    pytest.importorskip(
        f"hydra_plugins.hydra_{'joblib' if launcher == 'local_gpus' else 'submitit'}_launcher"
    )
    cfg = compose_train("experiment=auf_ablation", f"hydra/launcher={launcher}")
    assert cfg.hydra.launcher._target_.startswith("hydra_plugins.")
    if launcher == "slurm":
        assert cfg.hydra.launcher.gpus_per_node == 1


@pytest.mark.cli
def test_a_failing_run_does_not_stop_the_sweep(tmp_path, chat_file):
    """Two runs with the parallel local launcher: one has a missing data file, the other must finish."""
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher")
    sweep = tmp_path / "sweep"
    proc = run_cli(
        "specauf.train",
        "-m",
        "hydra/launcher=local_gpus",
        "hydra.launcher.n_jobs=2",
        *TINY,
        f"data.source={tmp_path / 'missing.jsonl'},{chat_file}",
        f"hydra.sweep.dir={sweep}",
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    statuses = sorted(json.loads(p.read_text())["status"] for p in sweep.glob("*/summary.json"))
    assert statuses == ["failed", "finished"]


ROOTS = {"train": [], "evaluate": ["ckpt=outputs/run"], "export": ["ckpt=outputs/run", "out=outputs/export"]}
LOGGERS = sorted(p.stem for p in (CONF / "logger").glob("*.yaml"))


CASES = [(root, logger) for root in sorted(ROOTS) for logger in (LOGGERS if root != "export" else [None])]


@pytest.mark.parametrize(("root", "logger"), CASES)
def test_every_root_config_resolves_with_every_logger(root, logger):
    """Every interpolation resolves (a key one root lacks would fail only after training or evaluating)."""
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    overrides = ROOTS[root] + ([f"logger={logger}"] if logger else [])
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(root, overrides=overrides, return_hydra_config=True)
    HydraConfig.instance().set_config(cfg)
    del cfg.hydra  # resolved by Hydra itself, against its runtime
    OmegaConf.resolve(cfg)
