#!/usr/bin/env bash
# Training-step speed and memory at Qwen3-8B Domino/DFlash shapes on one H200 (issue 16), everything in one
# call so that the ratios are side by side: the field's trainer's own benchmark (SpecForge's
# bench_domino_mfu.py at the repository root: sequence 768, 256 anchors, B=16, random weights and features,
# batch 2/4/8), then ours at the same shapes, then where our step's time goes, then the full step with a
# Qwen3-8B-shaped random target in the loop.
# Inputs: $SPECFORGE = a checkout of sgl-project/SpecForge (only specforge/, configs/ and the script are
# needed; it runs on torch + transformers; commit in its own git log, or as recorded by the caller).
# Usage: bash run.sh <repo root> <out dir>
set -u
cd "$1"
OUT=$2
mkdir -p "$OUT"
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.used,utilization.gpu --format=csv > $OUT/gpu.txt
(cd "$SPECFORGE" && PYTHONPATH=$SPECFORGE python3 bench_domino_mfu.py) > $OUT/specforge.txt 2>&1
# The reference times forward + backward only (no clipping, no AdamW step, no optimizer state in its peak):
# ours the same way for the like-for-like ratio, then the whole step a real run takes.
python3 -m experiments.bench_train --shape qwen3_8b --backbone domino dflash --batch 2 4 8 --no-optimizer \
  > $OUT/specauf_fwd_bwd.txt 2>&1
python3 -m experiments.bench_train --shape qwen3_8b --backbone domino dflash --batch 2 4 8 \
  > $OUT/specauf.txt 2>&1
python3 -m experiments.bench_train --shape qwen3_8b --backbone domino --batch 2 --profile 30 \
  > $OUT/profile_domino_b2.txt 2>&1
python3 -m experiments.bench_train --shape qwen3_8b --with-target --backbone domino dflash --batch 2 4 8 \
  > $OUT/full_step.txt 2>&1
echo done > $OUT/status
