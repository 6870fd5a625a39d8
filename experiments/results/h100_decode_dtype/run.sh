#!/usr/bin/env bash
# Decode step cost and speedup by precision, SmolLM2-135M target on one H100 (issue #7 part 2), code at commit
# ffa6258 plus uncommitted edits to specauf/report.py's wording (not used by these commands).
#   bench_step.txt:        python -m experiments.bench_step <out dir>  (fresh H100; the script as committed, run
#                          then under another name)
#   train.log, summary.json, bench_decode_bf16.txt: another fresh H100, the commands below — the same 400-step
#                          DFlash AUF drafter recipe as ../h100_decode/run.sh, then bench_decode with the target
#                          in bf16 (the GPU default of bench_decode; h100_decode used --dtype float32).
# Inputs: as in ../smollm2_repro/run.sh. Usage: bash run.sh <repo root> <out dir>
set -u
cd "$1"
OUTDIR=$2
mkdir -p $OUTDIR
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
python -m experiments.bench_step $OUTDIR > $OUTDIR/bench_step.txt 2>&1
common="data.source=$HOME/specauf/data/sharegpt_5k.jsonl data.max_conversations=null data.max_length=1024
  data.num_anchors=256 data.batch_size=8 data.num_workers=1 data.val_size=64
  trainer.limit_val_batches=8 backbone.num_layers=5 backbone.block_size=16 optim.optimizer.lr=6e-4 logger=csv benchmarks=none backbone=dflash loss=auf"
python -m specauf.train $common trainer.max_steps=400 trainer.val_check_interval=400 callbacks.checkpoint.every_n_train_steps=400 \
  hydra.run.dir=$OUTDIR/dflash_auf_400 > $OUTDIR/train.log 2>&1
python -m experiments.bench_decode --ckpt $OUTDIR/dflash_auf_400 --benchmarks gsm8k,humaneval,mt_bench \
  --n 4 --max-new-tokens 128 --device cuda --dtype bfloat16 > $OUTDIR/bench_decode_bf16.txt 2>&1
