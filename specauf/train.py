"""Train a drafter: `python -m specauf.train [group=option ...] [key=value ...]` (see conf/train.yaml)."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from specauf.config import UserError, register_resolvers
from specauf.module import DrafterModule
from specauf.summary import print_summary

log = logging.getLogger(__name__)
register_resolvers()

# Problems with the user's request (paths, values, data) rather than bugs: one clear line, no traceback.
USER_ERRORS = (UserError, OSError, ValueError)


def resolve_checkpoint(resume: str | None, run_dir: Path) -> str | None:
    """`resume`: None, `auto` (this run dir's last.ckpt if any), a run directory, or a checkpoint file."""
    if resume is None:
        return None
    if resume == "auto":
        last = run_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.exists() else None
    path = Path(resume).expanduser()
    if path.is_dir():
        path = path / "checkpoints" / "last.ckpt"
    if not path.is_file():
        raise FileNotFoundError(
            f"resume={resume}: no checkpoint at {path}. Give a .ckpt file or a run directory."
        )
    return str(path)


def train(cfg: DictConfig) -> dict[str, Any]:
    """Build everything from the config, fit, and return the run summary."""
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    choices = dict(HydraConfig.get().runtime.choices)
    L.seed_everything(cfg.seed, workers=True)
    torch.set_float32_matmul_precision("high")
    started = time.time()

    target = instantiate(cfg.target)
    drafter = instantiate(cfg.backbone, target=target)
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
    logger = instantiate(cfg.logger) if cfg.get("logger") else None
    if logger is not None:
        logger.log_hyperparams({**resolved, "choices": choices})
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    trainer = instantiate(cfg.trainer, logger=logger or False, callbacks=callbacks)
    trainer.fit(module, datamodule=data, ckpt_path=resolve_checkpoint(cfg.resume, run_dir))

    metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if v.numel() == 1}
    eval_metrics = evaluate_after_training(
        cfg, target, drafter, run_dir / "eval", logger, trainer.global_step
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


def _trainable(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _finish_wandb() -> None:
    # A crashed run must not leave its W&B run open: the next run of a multirun would log into it.
    if "wandb" in sys.modules:
        import wandb

        if wandb.run is not None:
            wandb.finish()


@hydra.main(config_path="../conf", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        summary = train(cfg)
        return summary["metrics"].get("val/tf_tau")
    except USER_ERRORS as err:
        if os.environ.get("SPECAUF_DEBUG"):
            raise
        message = f"specauf: error: {err}"
        _record_failure(message)
        print(message + "\n(set SPECAUF_DEBUG=1 for the traceback)", file=sys.stderr)
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
        _finish_wandb()


def _record_failure(text: str) -> None:
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    (run_dir / "summary.json").write_text(json.dumps({"status": "failed", "error": text}, indent=2))


if __name__ == "__main__":
    main()
