"""Train a drafter: `python -m specauf.train [group=option ...] [key=value ...]` (see conf/train.yaml)."""

from __future__ import annotations

import configparser
import json
import logging
import netrc
import os
import time
import traceback
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

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
from specauf.cli import USER_ERRORS, debug, finish_wandb, print_user_error
from specauf.config import register_resolvers
from specauf.module import DrafterModule
from specauf.summary import print_summary

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
    drafter = instantiate(cfg.backbone, target=target)
    # Resuming: refuse a checkpoint that is unreadable or from another drafter/target before any work.
    ckpt_path = resolve_checkpoint(cfg.resume, run_dir)
    resumed = check_resumable(ckpt_path, drafter, target, cfg.trainer.get("max_steps")) if ckpt_path else None
    loss = instantiate(cfg.loss)
    data = instantiate(
        cfg.data, tokenizer=target.tokenizer, block_size=drafter.block_size, label_offset=drafter.label_offset
    )
    data.setup("fit")  # fail now, not after the trainer has started, when the data is missing or bad
    log.info("drafter: %s, %.2fM trainable parameters", type(drafter).__name__, _trainable(drafter) / 1e6)
    log.info("loss: %r", loss)

    resolved = OmegaConf.to_container(cfg, resolve=True)
    module = DrafterModule(
        drafter=drafter,
        target=target,
        loss=loss,
        optimizer=instantiate(cfg.optim.optimizer),
        warmup_ratio=cfg.optim.warmup_ratio,
        min_lr_ratio=cfg.optim.min_lr_ratio,
        info_losses={name: instantiate(c) for name, c in cfg.info_losses.items()},
        run_config={"config": resolved, "choices": choices},
    )
    logger = instantiate(cfg.logger, **wandb_offline_fallback(cfg.logger)) if cfg.get("logger") else None
    if logger is not None:
        if resumed is not None:  # before the logger writes: Lightning's CSV writer would delete the old curve
            keep_previous_metrics(logger, f"until-resume-from-step{resumed['global_step']}")
        logger.log_hyperparams({**resolved, "choices": choices})
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    callbacks.append(StepSeed(cfg.seed))  # per-batch seeding: a resumed run draws what the original would
    if cfg.get("guard"):
        callbacks.append(instantiate(cfg.guard))
    # Atomic checkpoint writes: a run killed mid-save keeps its previous last.ckpt intact.
    trainer = instantiate(
        cfg.trainer, logger=logger or False, callbacks=callbacks, plugins=[AtomicCheckpointIO()]
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
        "block_size": drafter.block_size,
        "label_offset": drafter.label_offset,
        "seed": cfg.seed,
        "steps": trainer.global_step,
        "minutes": (time.time() - started) / 60,
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        "metrics": metrics,
        "eval": eval_metrics,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    print_summary(summary)
    return summary


def evaluate_after_training(
    cfg: DictConfig, target: Any, drafter: torch.nn.Module, out_dir: Path, logger: Any, step: int
) -> dict[str, float]:
    """Real τ from the draft-and-verify loop on the configured benchmarks (nothing when the suite is empty)."""
    suite = instantiate(cfg.benchmarks)
    if not suite.benchmarks:
        return {}
    from specauf.evaluate import evaluate_suite, flat_metrics, print_table

    device = next(drafter.parameters()).device
    results = evaluate_suite(
        target.to(device), drafter, suite, out_dir=out_dir, **OmegaConf.to_container(cfg.eval, resolve=True)
    )
    print_table(results)
    flat = flat_metrics(results)
    if logger is not None:
        logger.log_metrics(flat, step=step)
    return flat


def wandb_offline_fallback(logger_cfg: DictConfig) -> dict[str, Any]:
    """Overrides for the logger config: `{"offline": True}` when a W&B logger is asked to log online but no
    API key is configured (it would stop the run to prompt for one, or fail at the first upload), else {}."""
    if not str(logger_cfg.get("_target_", "")).endswith("WandbLogger") or logger_cfg.get("offline", False):
        return {}
    if (
        os.environ.get("WANDB_MODE", "").lower() in ("offline", "dryrun", "disabled")
        or wandb_key_configured()
    ):
        return {}
    log.warning(
        "W&B online requested but no API key found; logging offline — run `wandb login` to log online"
    )
    return {"offline": True}


def wandb_key_configured() -> bool:
    """Whether W&B can find an API key without asking: WANDB_API_KEY (or an identity token file), a netrc
    entry for the W&B host (what `wandb login` writes), or an api_key in W&B's settings file."""
    if os.environ.get("WANDB_API_KEY") or os.environ.get("WANDB_IDENTITY_TOKEN_FILE"):
        return True
    host = urlsplit(os.environ.get("WANDB_BASE_URL") or "https://api.wandb.ai").netloc
    netrc_file = Path(os.environ.get("NETRC") or Path.home() / (".netrc" if os.name != "nt" else "_netrc"))
    try:
        if netrc.netrc(netrc_file).authenticators(host):
            return True
    except (OSError, netrc.NetrcParseError):
        pass
    settings = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb") / "settings"
    parser = configparser.ConfigParser()
    try:
        parser.read(settings)
    except configparser.Error:
        return False
    return bool(parser.get("default", "api_key", fallback=""))


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        summary = train(cfg)
        return summary["metrics"].get("val/tf_tau")
    except USER_ERRORS as err:
        if debug():
            raise
        _record_failure(print_user_error(err))
        if multirun:
            return None  # one bad run must not stop the rest of the sweep
        raise SystemExit(1) from None
    except Exception:
        _record_failure(traceback.format_exc())
        if multirun:
            log.exception("run failed; continuing with the rest of the sweep")
            return None
        raise
    finally:
        finish_wandb()


def _record_failure(text: str) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    (run_dir / "summary.json").write_text(json.dumps({"status": "failed", "error": text}, indent=2))


if __name__ == "__main__":
    main()
