#!/usr/bin/env bash
# Ran with the config defaults of its commit; the CPU defaults changed since (1 layer, B=8, lr 6e-3, 300
# conversations, cached target features): to re-run it as it ran, take that commit (git log -- this file).
# Data parallelism is exact: 1 GPU at batch 4 vs 2 GPUs at batch 2 each (DDP, and FSDP full-shard), same
# global batches, same seed, tiny random target, AUF (whose per-process Σw differ most), fp32, 30 steps.
# Inputs: .carry/probe/chats.jsonl = 200 synthetic chats from tests/conftest.py:write_chats(path, n=200).
# Usage: bash run.sh <out dir>, from the repository root.
set -u
OUTDIR=${1:-$OUT}
mkdir -p "$OUTDIR"
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1
common="target=tiny_random logger=csv benchmarks=none backbone.num_layers=2 data.source=$PWD/.carry/probe/chats.jsonl
  data.val_size=8 data.min_supervised_tokens=8 data.max_length=256 data.num_anchors=16 trainer.max_steps=30
  trainer.val_check_interval=30 trainer.limit_val_batches=1.0 trainer.log_every_n_steps=1 trainer.precision=32-true
  loss=auf matmul_precision=highest"
CUDA_VISIBLE_DEVICES=0 python3 -m specauf.train $common data.batch_size=4 trainer.devices=1 \
  hydra.run.dir=$OUTDIR/gpu1 > $OUTDIR/gpu1.log 2>&1
echo "1 GPU rc=$?"
python3 -m specauf.train $common trainer=ddp trainer.devices=2 data.batch_size=2 hydra.run.dir=$OUTDIR/ddp2 \
  > $OUTDIR/ddp2.log 2>&1
echo "2 GPU DDP rc=$?"
python3 -m specauf.train $common trainer=fsdp trainer.devices=2 data.batch_size=2 hydra.run.dir=$OUTDIR/fsdp2 \
  > $OUTDIR/fsdp2.log 2>&1
echo "2 GPU FSDP rc=$?"
for d in ddp2 fsdp2; do echo "== gpu1 vs $d"; python3 -m experiments.compare_runs $OUTDIR/gpu1 $OUTDIR/$d | tail -4; done
