"""What one decoding step of the SmolLM2-135M target costs on CUDA: a 1-token (autoregressive) step and a
16-token (verify) step, eager and compiled (CUDA graph), in fp32, fp32 with TF32 matmuls, and bf16; then a
profile of 20 compiled 16-token steps per precision, sorted by GPU time.

    python -m experiments.bench_step <out dir>      # CUDA only; writes <out dir>/trace_fp32.json too

Each step runs on a 100-token prompt in a static cache of 1024 positions, rolled back before every step, with
the host read of the argmax that the decoder does once per cycle; ms per step over 40 steps after 5 warm-up.
Speculative decoding pays off when τ exceeds (verify step + drafting) / autoregressive step.
"""

import os
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from specauf.target import smollm2_135m

PROMPT = list(range(1000, 1100))


def prefilled(target, n_tokens: int):
    """A static cache holding the prompt, and a block of `n_tokens` to step with."""
    cache = target.new_cache(max_length=1024)
    target.step(torch.tensor([PROMPT], device="cuda"), cache)
    return cache, torch.tensor([[5] * n_tokens], device="cuda")


def run_steps(target, cache, block, compiled: bool, count: int) -> None:
    """`count` steps of `block`, each after a rollback to the prompt, each read back as the decoder does."""
    for _ in range(count):
        target.crop_cache(cache, len(PROMPT))
        logits, _, cache = target.step(block, cache, compiled=compiled)
        logits.argmax(-1).tolist()


def timed_steps(target, n_tokens: int, compiled: bool, reps: int = 40) -> float:
    """ms per step over `reps` steps after 5 warm-up steps."""
    cache, block = prefilled(target, n_tokens)
    run_steps(target, cache, block, compiled, 5)
    torch.cuda.synchronize()
    t = time.perf_counter()
    run_steps(target, cache, block, compiled, reps)
    torch.cuda.synchronize()
    return (time.perf_counter() - t) / reps * 1e3


def main(out: str) -> None:
    for label, dtype, prec in [
        ("fp32", "float32", "highest"),
        ("tf32", "float32", "high"),
        ("bf16", "bfloat16", "highest"),
    ]:
        torch.set_float32_matmul_precision(prec)
        torch._dynamo.reset()
        target = smollm2_135m(dtype=dtype).to("cuda")
        for compiled in (False, True):
            for n in (1, 16):
                ms = timed_steps(target, n, compiled)
                print(f"{label} compiled={compiled} step of {n:2d} tokens: {ms:.2f} ms", flush=True)
        cache, block = prefilled(target, 16)
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            run_steps(target, cache, block, True, 20)
        print(f"== {label}: 20 compiled 16-token steps, by device time", flush=True)
        table = prof.key_averages().table(
            sort_by="self_cuda_time_total", row_limit=25, max_name_column_width=90
        )
        print(table, flush=True)
        if label == "fp32":
            prof.export_chrome_trace(os.path.join(out, "trace_fp32.json"))
        del target


if __name__ == "__main__":
    if len(sys.argv) != 2 or not torch.cuda.is_available():
        sys.exit("usage: python -m experiments.bench_step <out dir>   (needs a CUDA device)")
    main(sys.argv[1])
