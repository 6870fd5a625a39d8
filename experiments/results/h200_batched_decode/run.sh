#!/usr/bin/env bash
# Batched speculative decoding on one H200 (issue 15): batch 1 vs 16 vs 64, speculative and AR baseline, greedy.
#  1. a SmolLM2 DFlash drafter trained for this benchmark (the reproduction's recipe for 400 steps: 5,000
#     ShareGPT conversations, batch 8, 256 anchors, B=16, 5 layers, AdamW 6e-4, bf16), so that acceptance is
#     real and ragged across rows;
#  2. SmolLM2-135M with that drafter: 32 prompts of each of the five offline benchmarks, 256 new tokens;
#  3. a Qwen3-8B-shaped target with random weights (timing only) and an untrained 5-layer drafter: the same
#     prompts, 128 new tokens, batch 32, 16, 1 (fastest first, for the device budget; no AR baseline). With 32
#     prompts per benchmark and one benchmark at a time, a batch of 64 cannot fill: 32 is the largest that can.
# Inputs made beforehand (the GPU machine has no network): ~/specauf/data/sharegpt_5k.jsonl,
# ~/specauf/data/bench/, ~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf, the wheels of ../shared/gpu/prepare.sh.
# Usage: bash run.sh <repo root> <out dir>.
set -u
cd "$1"
OUT=$2
mkdir -p "$OUT"
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
python3 -m specauf.train backbone=dflash loss=auf seed=0 data.source=$HOME/specauf/data/sharegpt_5k.jsonl \
  data.max_conversations=null data.max_length=1024 data.num_anchors=256 data.batch_size=8 data.num_workers=1 \
  trainer.max_steps=400 trainer.val_check_interval=400 callbacks.checkpoint.every_n_train_steps=400 \
  backbone.num_layers=5 backbone.block_size=16 optim.optimizer.lr=6e-4 logger=csv benchmarks=none callbacks.real_tau.enabled=false \
  hydra.run.dir=$OUT/train > $OUT/train.log 2>&1
echo "train exit $?" >> "$OUT/status"
python3 -m experiments.bench_batched --ckpt $OUT/train --batch 1 16 64 --n 32 --max-new-tokens 256 --ar \
  --out $OUT/smollm2.json > $OUT/smollm2.log 2>&1
echo "smollm2 exit $?" >> "$OUT/status"
python3 -m experiments.bench_batched --target qwen3_8b_random --batch 32 16 1 --n 32 --max-new-tokens 128 \
  --out $OUT/qwen3_8b_random.json > $OUT/qwen3_8b_random.log 2>&1
echo "qwen3_8b_random exit $?" >> "$OUT/status"
echo done >> "$OUT/status"
