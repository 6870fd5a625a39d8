"""Compare two training runs step by step: their `train/loss` curves and their final drafter weights.

Made to check data parallelism: one process at batch 2b against two at batch b each must train the same
model (same global batches, same loss), up to floating-point reduction order.

    python -m experiments.compare_runs RUN_DIR_A RUN_DIR_B [--tol 1e-4]

Reads `<run>/**/metrics.csv` (logger=csv) and `<run>/checkpoints/last.ckpt`; exits 1 when they differ by more
than `--tol` (absolute, on the loss and on every weight).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import torch


def train_losses(run: Path) -> dict[int, float]:
    files = sorted(run.rglob("metrics.csv"))
    if not files:
        sys.exit(f"no metrics.csv under {run} (train with logger=csv)")
    with open(files[0]) as f:
        return {int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(f) if r.get("train/loss")}


def final_weights(run: Path) -> dict[str, torch.Tensor]:
    path = run / "checkpoints" / "last.ckpt"
    if not path.exists():
        sys.exit(f"no checkpoint at {path}")
    return torch.load(path, map_location="cpu", weights_only=False)["state_dict"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("a", type=Path)
    p.add_argument("b", type=Path)
    p.add_argument("--tol", type=float, default=1e-4)
    args = p.parse_args(argv)

    la, lb = train_losses(args.a), train_losses(args.b)
    steps = sorted(set(la) & set(lb))
    print(f"{'step':>5} {'loss A':>10} {'loss B':>10} {'|diff|':>9}")
    for s in steps:
        print(f"{s:>5} {la[s]:>10.6f} {lb[s]:>10.6f} {abs(la[s] - lb[s]):>9.2e}")
    loss_diff = max((abs(la[s] - lb[s]) for s in steps), default=float("nan"))

    wa, wb = final_weights(args.a), final_weights(args.b)
    if set(wa) != set(wb):
        print(f"different parameters: {sorted(set(wa) ^ set(wb))}")
        return 1
    weight_diff = max((wa[k].float() - wb[k].float()).abs().max().item() for k in wa)
    scale = max(v.float().abs().max().item() for v in wa.values())
    print(f"steps compared: {len(steps)} (A has {len(la)}, B has {len(lb)})")
    print(f"max |loss A - loss B| = {loss_diff:.2e}")
    print(f"max |weight A - weight B| = {weight_diff:.2e} (largest |weight| {scale:.3f})")
    same = len(steps) == len(la) == len(lb) and loss_diff <= args.tol and weight_diff <= args.tol
    print("SAME" if same else f"DIFFERENT (tolerance {args.tol})")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
