#!/usr/bin/env bash
# Decoding speed on one H100: a 400-step DFlash AUF drafter for SmolLM2-135M, then speculative vs AR decoding
# in one run, with the verify step compiled (CUDA graphs) and eager. Usage: bash run.sh <repo> <out dir>
# Inputs: as in ../h200x2_smollm2_repro/run.sh. bench_decode_*.txt, train.log, gpu_tests.txt: commit 0871de4.
# verify_graph_only_*.txt: the same script on a fresh H100 at commit 5ad6023 (verify step graphed, the
# drafter's step still eager; no gpu tests), with its own 400-step drafter (same seed and settings).
set -u
cd "$1"
OUTDIR=$2
mkdir -p $OUTDIR
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
common="data.source=$HOME/specauf/data/sharegpt_5k.jsonl data.max_conversations=null data.max_length=1024
  data.num_anchors=256 data.batch_size=8 data.num_workers=1 data.val_size=64
  trainer.limit_val_batches=8 backbone.num_layers=5 backbone.block_size=16 optim.optimizer.lr=6e-4 logger=csv benchmarks=none backbone=dflash loss=auf"
python -m specauf.train $common trainer.max_steps=400 trainer.val_check_interval=400 callbacks.checkpoint.every_n_train_steps=400 \
  hydra.run.dir=$OUTDIR/dflash_auf_400 > $OUTDIR/train_compiled.log 2>&1
for mode in 1 0; do
  [ $mode = 0 ] && python -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider > $OUTDIR/gpu_tests.txt 2>&1
  start=$(date +%s)
  SPECAUF_COMPILE=$mode python -m experiments.bench_decode --ckpt $OUTDIR/dflash_auf_400 --benchmarks gsm8k,humaneval,mt_bench \
    --n 4 --max-new-tokens 128 --device cuda --dtype float32 > $OUTDIR/bench_decode_compile$mode.txt 2>&1
  echo "wall $(( $(date +%s) - start )) s" >> $OUTDIR/bench_decode_compile$mode.txt
done
echo done > $OUTDIR/ALL_DONE
