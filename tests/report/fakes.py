"""Fake training runs for the report tests: summary.json and eval/eval.json shaped like the real ones."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SIX = ("gsm8k", "math500", "humaneval", "mbpp", "mt_bench", "alpaca")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALPACA_REASON = "no offline copy of alpaca (set SPECAUF_DATA_DIR or benchmarks.alpaca.source)"

# τ per benchmark for each (loss, seed): AUF above decay-only everywhere, as in the paper.
TAU = {
    ("auf", 0): [2.5, 2.6, 3.1, 3.0, 2.2, 2.1],
    ("auf", 1): [2.7, 2.8, 3.3, 3.2, 2.4, 2.3],
    ("decay", 0): [2.2, 2.3, 2.8, 2.8, 2.0, 2.0],
    ("decay", 1): [2.4, 2.5, 3.0, 2.9, 2.1, 2.0],
}
TOKEN_ACC = {("auf", 0): 0.40, ("auf", 1): 0.42, ("decay", 0): 0.50, ("decay", 1): 0.54, ("decay", 2): 0.52}
TOKEN_ACC.update({("auf_decay", 0): 0.41, ("auf_decay", 1): 0.43})


def write_run(
    run_dir: Path,
    loss: str,
    seed: int,
    taus: list[float] | None,
    *,
    skip_alpaca: bool = False,
    backbone: str = "dflash",
    extra_overrides: tuple[str, ...] = (),
    labels: dict[str, Any] | None = None,
    token_acc: float | None = None,
) -> None:
    """A finished run's summary.json and (when `taus` is given) eval/eval.json; `labels` as a new trainer
    writes them (None: an old run without them)."""
    run_dir.mkdir(parents=True)
    block, offset = 16, int(backbone == "domino")
    summary: dict[str, Any] = {
        "status": "finished",
        "run_name": f"loss={loss},seed={seed}",
        "run_dir": str(run_dir),
        "choices": {
            "target": "smollm2_135m",
            "backbone": backbone,
            "loss": loss,
            "data": "sharegpt",
            "experiment": "auf_ablation",
            "logger": "csv",
            "hydra/launcher": "basic",
        },
        "overrides": [
            f"loss={loss}",
            f"seed={seed}",
            "trainer.devices=1",
            f"hydra.run.dir=/tmp/x{seed}",
            *extra_overrides,
        ],
        "block_size": block,
        "label_offset": offset,
        "seed": seed,
        "steps": 100,
        "minutes": 1.5,
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        "metrics": {
            "val/token_acc": TOKEN_ACC[(loss, seed)] if token_acc is None else token_acc,
            "val/tf_tau": 1.5 + seed / 10,
            "val/loss": 3.0,
            "val/active_ratio": 0.3,
        },
    }
    if labels is not None:
        summary["labels"] = labels
    if taus is not None:
        benches = {}
        for name, tau in zip(SIX, taus, strict=True):
            if name == "alpaca" and skip_alpaca:
                continue
            d = block - 1 + offset
            alpha = [round(0.35 + 0.15 * tau - 0.04 * k, 3) for k in range(d - 2)] + [None, None]
            benches[name] = {
                "n": 4,
                "tau": tau,
                "histogram": [1] * (d + 1),
                "alpha": alpha,
                "tokens_per_s": 10.0,
                "speedup": tau / 1.5,
                "source": f"file:/data/{name}",
            }
        present = [t for n, t in zip(SIX, taus, strict=True) if n in benches]
        results = {
            "target": "smollm2_135m",
            "drafter": "DFlashDrafter",
            "block_size": block,
            "num_drafted": block - 1 + offset,
            "next_token": bool(offset),
            "tau_max": block + offset,
            "temperature": 0.0,
            "benchmarks": benches,
            "tau/avg": sum(present) / len(present),
            "skipped_benchmarks": {"alpaca": ALPACA_REASON} if skip_alpaca else {},
        }
        (run_dir / "eval").mkdir()
        (run_dir / "eval" / "eval.json").write_text(json.dumps(results))
        summary["eval"] = {f"eval/tau/{n}": b["tau"] for n, b in benches.items()}
    (run_dir / "summary.json").write_text(json.dumps(summary))


def write_failed(run_dir: Path, error: str) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "summary.json").write_text(json.dumps({"status": "failed", "error": error}))
