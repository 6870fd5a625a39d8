"""Measure a drafter: `python -m specauf.evaluate ckpt=PATH [benchmarks=six|cpu] [logger=wandb|csv]`.

τ, acceptance and speedup on the τ benchmarks (docs/method.md §6, §7; see conf/evaluate.yaml). PATH is a
training checkpoint, its run directory or an export directory; the drafter's own target is loaded for it.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict

from specauf.cli import run_main
from specauf.config import register_resolvers
from specauf.dtypes import parse_dtype
from specauf.evaluation import evaluate_suite, log_results, print_table, resolve_device, write_reports
from specauf.loading import load_with_target
from specauf.tracking import offline_fallback, quiet_wandb_logger

log = logging.getLogger(__name__)
register_resolvers()


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Load the drafter and its target, run the suite, report (terminal, eval.json/eval.md, logger)."""
    device = resolve_device(cfg.device)
    dtype = parse_dtype(cfg.dtype or ("bfloat16" if device.type == "cuda" else "float32"))
    suite = instantiate(cfg.benchmarks)  # before the target: a bad benchmark name fails in a second
    torch.manual_seed(cfg.seed)
    drafter, target, meta = load_with_target(cfg.ckpt, device=device, dtype=dtype)
    log.info(
        "drafter %s (step %s) for target %s", meta["drafter_class"], meta.get("global_step"), target.name
    )
    if cfg.run_name is None:  # the logger's name interpolates it
        with open_dict(cfg):
            cfg.run_name = f"eval-{meta.get('run_name') or Path(cfg.ckpt).stem}"
    # Built before the suite runs: a logger config that cannot be built fails now, not after hours.
    logger = (
        quiet_wandb_logger(instantiate(cfg.logger, **offline_fallback(cfg.logger)))
        if cfg.get("logger")
        else None
    )
    results = evaluate_suite(
        target,
        drafter,
        suite,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        top_k=cfg.top_k,
        seed=cfg.seed,
        ar_baseline=cfg.ar_baseline,
        max_prompts=cfg.max_prompts,
        batch_size=cfg.batch_size,
    )
    results["checkpoint"] = {k: meta.get(k) for k in ("path", "global_step", "epoch", "target_name")}
    results["choices"] = meta.get("choices")
    results["run_name"] = cfg.run_name
    out_dir = Path(cfg.out_dir)
    write_reports(results, out_dir)
    if not results["benchmarks"]:
        log.warning(
            "no benchmark was evaluated (benchmarks=%s)", HydraConfig.get().runtime.choices.get("benchmarks")
        )
    print_table(results)
    print(f"reports: {out_dir / 'eval.md'}, {out_dir / 'eval.json'}")
    if logger is not None:
        hyperparams = {
            "eval": OmegaConf.to_container(cfg, resolve=True),
            "checkpoint": results["checkpoint"],
            "train_choices": results["choices"],
        }
        log_results(logger, results, hyperparams)
        logger.finalize("success")
    return results


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    results = run_main(lambda: evaluate(cfg), multirun=multirun)
    return None if results is None else results["tau/avg"]


if __name__ == "__main__":
    main()
