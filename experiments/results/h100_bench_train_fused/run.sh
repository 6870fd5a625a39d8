#!/usr/bin/env bash
# Training-step speed at the reference shapes, one H100, all in one session: the compiled kernels against the
# same code run eagerly (SPECAUF_COMPILE=0) and against the code before any fusion (commit 2e075a4).
# old/ = `git archive 2e075a4 specauf experiments/bench_train.py | tar -x -C old`.
# fused_head_eager_layers_b8.txt is from an earlier call on the same machine: commit e63f52d (Domino's two
# heads in one chunked pass, everything eager).
set -eu
python -m experiments.bench_train --shape qwen3_8b --backbone domino --batch 4 --steps 5 --warmup 3 --profile 45 > new_profile.txt
python -m experiments.bench_train --shape qwen3_8b --backbone domino dflash --batch 8 --steps 5 --warmup 3 > new_b8.txt
SPECAUF_COMPILE=0 python -m experiments.bench_train --shape qwen3_8b --backbone domino dflash --batch 8 --steps 5 --warmup 3 > eager_b8.txt
(cd old && python -m experiments.bench_train --shape qwen3_8b --backbone domino dflash --batch 8 --steps 5 --warmup 2) > old_b8.txt
