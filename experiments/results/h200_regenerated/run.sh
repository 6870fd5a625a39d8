#!/usr/bin/env bash
# Issue 17's measurement, part 1 of its groups: regenerate the 5,000-conversation ShareGPT subset with the
# SmolLM2-135M target on one H200 (HF engine, batches of 128, the field's defaults T=0.7 and top-p 1, at most
# 1,024 new tokens per reply: the training sequences are cut at 1,024 tokens anyway), then train DFlash and
# Domino under AUF (B-AUF) and decay on it, seed $SEED, side by side, with the reproduction's recipe
# (experiment=loss_head_to_head), and the same four arms on the original data for the same steps.
# Real τ on the five offline benchmarks as in the head-to-head; the summaries record TF-τ next to it.
# Inputs as in ../h200_loss_head_to_head/run.sh. Usage: bash run.sh <repo root> <out dir> <seed>
set -u
cd "$1"
OUT=$2
SEED=$3
mkdir -p "$OUT"
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
ORIG=$HOME/specauf/data/sharegpt_5k.jsonl
REGEN=$OUT/regen
if [ ! -f $REGEN/conversations.jsonl ]; then
  python3 -m specauf.regenerate out=$REGEN data.source=$ORIG data.max_conversations=null \
    max_new_tokens=1024 engine.batch_size=128 > $OUT/regenerate.log 2>&1
fi
common="experiment=loss_head_to_head data.max_conversations=null data.num_workers=1 benchmarks.alpaca=null
  logger=csv seed=$SEED"
for data in orig regen; do
  src=$ORIG; [ $data = regen ] && src=$REGEN/conversations.jsonl
  for run in "dflash auf" "dflash decay" "domino b_auf" "domino decay"; do
    set -- $run
    name=${data}_${1}_${2}_s$SEED
    python3 -m specauf.train backbone=$1 loss=$2 data.source=$src $common hydra.run.dir=$OUT/$name \
      > $OUT/$name.log 2>&1 &
  done
done
wait
echo done > $OUT/ALL_DONE
