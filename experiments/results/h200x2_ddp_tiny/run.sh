#!/usr/bin/env bash
# Ran with the config defaults of its commit; the CPU defaults changed since (1 layer, B=8, lr 6e-3, 300
# conversations, cached target features): to re-run it as it ran, take that commit (git log -- this file).
# 1 GPU at batch 4 vs 2 GPUs (DDP, NCCL) at batch 2 each: same global batch, same data, same seed.
# Inputs: .carry/probe/chats.jsonl = 200 synthetic chats from tests/conftest.py:write_chats(path, n=200).
# Result (2 x H200, torch 2.11): both runs finished 30 steps; val/loss 4.27083 (1 GPU, batch 4) vs 4.19787
# (2 GPUs, batch 2 each), val/token_acc 0.1942 in both. Close, not equal: see experiments/README.md.
set -u
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1
common="target=tiny_random logger=csv benchmarks=none backbone.num_layers=2 data.source=$PWD/.carry/probe/chats.jsonl
  data.val_size=8 data.min_supervised_tokens=8 data.max_length=256 data.num_anchors=16 trainer.max_steps=30
  trainer.val_check_interval=30 trainer.limit_val_batches=1.0 trainer.log_every_n_steps=1 trainer.precision=32-true"
python3 -m specauf.train $common data.batch_size=4 trainer.devices=1 hydra.run.dir=$OUT/gpu1 > $OUT/gpu1.log 2>&1
echo "1 GPU rc=$?"
python3 -m specauf.train $common trainer=ddp trainer.devices=2 data.batch_size=2 hydra.run.dir=$OUT/gpu2 > $OUT/gpu2.log 2>&1
echo "2 GPU rc=$?"
for d in gpu1 gpu2; do python3 -c "import json; s=json.load(open('$OUT/$d/summary.json')); m=s['metrics']; print('$d', s['status'], 'steps', s.get('steps'), 'val/loss %.5f val/token_acc %.4f train/loss %.5f' % (m['val/loss'], m['val/token_acc'], m['train/loss']))"; done
