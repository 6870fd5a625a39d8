#!/usr/bin/env bash
# Batched speculative decoding on one H200 after fixed slots + one CUDA graph per cycle + one queue across the
# suite (issue 15), batch 64 vs 16 vs 1, greedy. The "before" is ../h200_batched_decode (eager, per benchmark).
#  1. SmolLM2-135M with a DFlash AUF drafter of the loss head-to-head (800 steps, seed 0,
#     ../h200_loss_head_to_head): 32 prompts of each offline benchmark (MT-Bench with both turns), 256 new
#     tokens, speculative and the AR baseline; batch 1 on the first 4 prompts of each (its time is the budget's);
#  2. a Qwen3-8B-shaped target with random weights (timing only; never stops early) and an untrained 5-layer
#     drafter: 32 prompts per benchmark, 256 new tokens; batch 1 on 2 per benchmark; then a kernel profile.
# Inputs as in ../h200_batched_decode/run.sh. Usage: bash run.sh <repo root> <out dir> <drafter run dir>
# (any DFlash run dir of the same recipe, e.g. dflash_auf_s1 of ../h200_loss_head_to_head/run.sh in the same
# lease: its checkpoint does not outlive the machine).
set -u
cd "$1"
OUT=$2
mkdir -p "$OUT"
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
python3 -m experiments.bench_batched --ckpt "$3" --batch 64 16 1 --n 32 --n-batch1 4 --max-new-tokens 256 \
  --ar --out $OUT/smollm2.json > $OUT/smollm2.log 2>&1
echo "smollm2 exit $?" >> "$OUT/status"
python3 -m experiments.bench_batched --target qwen3_8b_random --batch 64 16 1 --n 32 --n-batch1 2 \
  --max-new-tokens 256 --profile 30 --out $OUT/qwen3_8b_random.json > $OUT/qwen3_8b_random.log 2>&1
echo "qwen3_8b_random exit $?" >> "$OUT/status"
echo done >> "$OUT/status"
