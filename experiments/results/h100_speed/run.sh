#!/usr/bin/env bash
# Speed figures on one H100 (issue #7 parts 1 and 2), all in one background job:
#   training-step benchmark at the reference shapes and the SmolLM2 setup; a short real DFlash training
#   (compiled, then 100 steps eager for the step rate); decoding speed compiled vs eager with that drafter.
# The decoding part did not finish here (the code then sized the compiled verify step's cache per prompt and
# recompiled for every prompt; fixed since) and the machine's time ran out: decoding figures are in
# ../h100_decode/. Inputs: as in ../h200x2_smollm2_repro/run.sh.
# Usage: bash speed.sh <repo root> <out dir>
set -u
cd "$1"
OUTDIR=$2
mkdir -p $OUTDIR
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
python -m experiments.bench_train --shape qwen3_8b --batch 2 4 8 --steps 5 --warmup 3 > $OUTDIR/bench_train_qwen3_8b.txt 2>&1
python -m experiments.bench_train --shape smollm2_135m --batch 8 16 32 --steps 10 --warmup 3 > $OUTDIR/bench_train_smollm2.txt 2>&1
SPECAUF_COMPILE=0 python -m experiments.bench_train --shape smollm2_135m --batch 8 16 32 --steps 10 --warmup 3 > $OUTDIR/bench_train_smollm2_eager.txt 2>&1
common="data.source=$HOME/specauf/data/sharegpt_5k.jsonl data.max_conversations=null data.max_length=1024
  data.num_anchors=256 data.batch_size=8 data.num_workers=1 data.val_size=64
  trainer.limit_val_batches=8 backbone.num_layers=5 backbone.block_size=16 optim.optimizer.lr=6e-4 logger=csv benchmarks=none backbone=dflash loss=auf"
python -m specauf.train $common trainer.max_steps=400 trainer.val_check_interval=400 callbacks.checkpoint.every_n_train_steps=400 \
  hydra.run.dir=$OUTDIR/dflash_auf_400 > $OUTDIR/train_compiled.log 2>&1
SPECAUF_COMPILE=0 python -m specauf.train $common trainer.max_steps=100 trainer.val_check_interval=100 callbacks.checkpoint.every_n_train_steps=100 \
  hydra.run.dir=$OUTDIR/dflash_auf_100_eager > $OUTDIR/train_eager.log 2>&1
for mode in 1 0; do
  SPECAUF_COMPILE=$mode python -m experiments.bench_decode --ckpt $OUTDIR/dflash_auf_400 --benchmarks gsm8k,humaneval,mt_bench \
    --n 4 --max-new-tokens 128 --device cuda --dtype float32 > $OUTDIR/bench_decode_compile$mode.txt 2>&1
done
echo done > $OUTDIR/ALL_DONE
