"""Train a drafter: `python -m specauf.train [group=option ...] [key=value ...]` (see conf/train.yaml).

Builds target → drafter → loss → data → trainer from the config, fits, measures real τ on the `benchmarks`
group (`specauf.evaluation`) and writes the run's summary.json.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from specauf.checkpointing import (
    AtomicCheckpointIO,
    StepSeed,
    check_resumable,
    keep_previous_metrics,
    resolve_checkpoint,
)
from specauf.cli import run_main
from specauf.config import register_resolvers
from specauf.evaluation import evaluate_suite, flat_metrics, log_results, print_table
from specauf.io import atomic_write
from specauf.module import DrafterModule
from specauf.preflight import preflight
from specauf.progress import progress_callbacks
from specauf.regeneration.store import regeneration_warnings
from specauf.summary import print_summary
from specauf.tracking import offline_fallback, quiet_wandb_logger

log = logging.getLogger(__name__)
register_resolvers()


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build everything from the config, fit, and return the run summary."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    choices = dict(HydraConfig.get().runtime.choices)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision(cfg.matmul_precision)
    started = time.time()

    target = instantiate(cfg.target)
    # Benchmarks, chat template, output dir, device, trainer keys, lr: every problem at once, in seconds.
    preflight(cfg, target, run_dir)
    # Seeded again: a target factory may draw from the global RNG (building a model runs its random init, as
    # SmolLM2's first-run conversion did), and the drafter's init must depend on the seed alone.
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    drafter = instantiate(cfg.backbone, target=target)
    # Resuming: refuse a checkpoint that is unreadable or from another drafter/target before any work.
    ckpt_path = resolve_checkpoint(cfg.resume, run_dir)
    resumed = check_resumable(ckpt_path, drafter, target, cfg.trainer.get("max_steps")) if ckpt_path else None
    loss = instantiate(cfg.loss)
    resolved = OmegaConf.to_container(cfg, resolve=True)
    # The module refuses a loss the drafter cannot train (B-AUF on DFlash) before the data is read.
    module = DrafterModule(
        drafter=drafter,
        target=target,
        loss=loss,
        optimizer=instantiate(cfg.optim.optimizer),
        warmup_ratio=cfg.optim.warmup_ratio,
        min_lr_ratio=cfg.optim.min_lr_ratio,
        info_losses={name: instantiate(c) for name, c in cfg.info_losses.items()},
        run_config={"config": resolved, "choices": choices},
        curriculum=instantiate(cfg.curriculum),
        cache_target_features=cfg.get("cache_target_features", False),
    )
    data = instantiate(
        cfg.data, tokenizer=target.tokenizer, block_size=drafter.block_size, label_offset=drafter.label_offset
    )
    data.setup("fit")  # fail now, not after the trainer has started, when the data is missing or bad
    for warning in regeneration_warnings(data.source_record, target.name):
        log.warning(warning)
    trainable = sum(p.numel() for p in drafter.parameters() if p.requires_grad)
    log.info("drafter: %s, %.2fM trainable parameters", type(drafter).__name__, trainable / 1e6)
    log.info("loss: %r; curriculum: %r", loss, module.curriculum)

    logger = (
        quiet_wandb_logger(instantiate(cfg.logger, **offline_fallback(cfg.logger)))
        if cfg.get("logger")
        else None
    )
    if logger is not None:
        if resumed is not None:  # before the logger writes: Lightning's CSV writer would delete the old curve
            keep_previous_metrics(logger, f"until-resume-from-step{resumed['global_step']}")
        logger.log_hyperparams({**resolved, "choices": choices})
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    callbacks.append(StepSeed(cfg.seed))  # per-batch seeding: a resumed run draws what the original would
    # A bar on a terminal; plain lines every log_every_n_steps when the output goes to a file.
    progress, bar = progress_callbacks(cfg.trainer.get("log_every_n_steps") or 50)
    callbacks += progress
    if cfg.get("guard"):
        callbacks.append(instantiate(cfg.guard))
    # Atomic checkpoint writes: a run killed mid-save keeps its previous last.ckpt intact.
    trainer = instantiate(
        cfg.trainer,
        logger=logger or False,
        callbacks=callbacks,
        plugins=[AtomicCheckpointIO()],
        enable_progress_bar=bar,
    )
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    if not trainer.is_global_zero:
        # Under DDP every process gets here; one evaluates, writes the summary and prints it.
        return {"status": "finished", "metrics": {}}

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    # Lightning hands the module back on the CPU after fit; τ is measured on the device it trained on.
    eval_metrics = evaluate_after_training(
        cfg, target, drafter.to(trainer.strategy.root_device), run_dir / "eval", logger, trainer.global_step
    )
    summary = {
        "status": "finished",
        "run_name": cfg.run_name,
        "run_dir": str(run_dir),
        "choices": choices,
        "overrides": list(HydraConfig.get().overrides.task),
        # How reports name, order and pair this run (specauf.report.labels).
        "labels": {
            "backbone": {"name": type(drafter).display_name, "order": type(drafter).display_order},
            "loss": loss.labels(),
        },
        "block_size": drafter.block_size,
        "label_offset": drafter.label_offset,
        "seed": cfg.seed,
        "steps": trainer.global_step,
        "minutes": (time.time() - started) / 60,
        # Intra-op threads (OMP_NUM_THREADS, else torch's choice): they set the speed; recorded so that runs
        # compared bit for bit can be seen to agree on it.
        "torch_threads": torch.get_num_threads(),
        # The data it trained on; for a `specauf.regenerate` output also who wrote it, how, and its SHA-256.
        "data": {"source": str(cfg.data.source), "regeneration": data.source_record},
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        "metrics": metrics,
        "eval": eval_metrics,
    }
    atomic_write(run_dir / "summary.json", json.dumps(summary, indent=2))
    print_summary(summary)
    return summary


def evaluate_after_training(
    cfg: DictConfig, target: Any, drafter: torch.nn.Module, out_dir: Path, logger: Any, step: int
) -> dict[str, float]:
    """Real τ from the draft-and-verify loop on the configured benchmarks (nothing when the suite is empty)."""
    suite = instantiate(cfg.benchmarks)
    if not suite.benchmarks:
        return {}
    device = next(drafter.parameters()).device
    results = evaluate_suite(
        target.to(device), drafter, suite, out_dir=out_dir, **OmegaConf.to_container(cfg.eval, resolve=True)
    )
    print_table(results)
    if logger is not None:
        log_results(logger, results, {}, step=step)  # the scalars, and for W&B the per-benchmark table
    return flat_metrics(results)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)

    def record_failure(text: str) -> None:
        atomic_write(run_dir / "summary.json", json.dumps({"status": "failed", "error": text}, indent=2))

    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    summary = run_main(lambda: train(cfg), multirun=multirun, on_failure=record_failure)
    return None if summary is None else summary["metrics"].get("val/tf_tau")


if __name__ == "__main__":
    main()
