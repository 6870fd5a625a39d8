"""Batched speculative decoding vs batch 1, in one run: τ, tokens/s and wall time per batch size.

    python -m experiments.bench_batched --target tiny_random --batch 1 4 --n 2 --max-new-tokens 16   (CPU, seconds)
    python -m experiments.bench_batched --ckpt <run dir or export> --batch 1 16 64 --n 32              (GPU, SmolLM2)
    python -m experiments.bench_batched --target qwen3_8b_random --batch 1 16 64 --n 32                (GPU, 8B shapes)

Every batch size decodes the same prompts (the first `--n` of each offline benchmark, MT-Bench with both turns)
through `specauf.evaluation.evaluate_suite`, greedy, the speculative decoder and (with --ar) the autoregressive
baseline batched the same way. Batch 1 is the batch-1 decoder (`specauf.decoding`, CUDA graphs on a GPU), the
others `specauf.batched`. tokens/s is decoded tokens over decode time (prefill excluded, as in docs/method.md
§6); wall is the whole evaluation of that batch size, prefill included. `qwen3_8b_random` is a Qwen3-8B-shaped
target with random weights and SmolLM2's tokenizer (timing only: its outputs are noise and never stop early).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from specauf import target as targets
from specauf.data.benchmarks import Benchmark, BenchmarkSuite
from specauf.drafters.dflash import DFlashDrafter
from specauf.evaluation import evaluate_suite, resolve_device
from specauf.loading import load_with_target
from specauf.target import Target

OFFLINE = ("gsm8k", "math500", "humaneval", "mbpp", "mt_bench")


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, Target]:
    device = resolve_device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if args.ckpt:
        drafter, target, _ = load_with_target(args.ckpt, device=device, dtype=dtype)
        return drafter.eval(), target
    if args.target == "qwen3_8b_random":
        target = targets.qwen3_8b_random(str(device))
    else:
        target = {"smollm2_135m": targets.smollm2_135m, "tiny_random": targets.tiny_random}[args.target]()
    torch.manual_seed(0)
    drafter = DFlashDrafter.from_target(target, num_layers=args.num_layers, block_size=16)
    target.to(device=device, dtype=dtype)
    return drafter.to(device=device, dtype=dtype).eval(), target


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target", default="smollm2_135m", choices=["smollm2_135m", "qwen3_8b_random", "tiny_random"]
    )
    parser.add_argument(
        "--ckpt", default=None, help="a trained drafter (run dir, .ckpt or export); else untrained"
    )
    parser.add_argument("--num-layers", type=int, default=5, help="untrained drafter: layers")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--n", type=int, default=32, help="prompts per benchmark (0: the paper's counts)")
    parser.add_argument(
        "--n-batch1", type=int, default=None, help="prompts per benchmark at batch 1 (default: --n)"
    )
    parser.add_argument("--max-new-tokens", type=int, default=256, help="0: each benchmark's own (2048)")
    parser.add_argument(
        "--profile", type=int, default=0, metavar="N", help="then print the N costliest kernels of a batch"
    )
    parser.add_argument("--ar", action="store_true", help="also the batched autoregressive baseline")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--data-dir", default=None, help="benchmark files (default: $SPECAUF_DATA_DIR)")
    parser.add_argument("--out", default=None, help="write the raw results here as JSON")
    args = parser.parse_args(argv)

    drafter, target = build(args)

    def suite(n: int) -> BenchmarkSuite:
        benchmarks = {
            name: Benchmark(name, n=n or None, seed=0, max_new_tokens=args.max_new_tokens or 2048,
                            data_dir=args.data_dir, use_hub=False)
            for name in OFFLINE
        }  # fmt: skip
        return BenchmarkSuite(**benchmarks, skip_missing=True)

    print(f"target {target.name} on {target.device} ({target.dtype}), drafter {type(drafter).__name__} "
          f"B={drafter.block_size}, {args.n or 'paper'} prompts per benchmark ({args.n_batch1} at batch 1), "
          f"{args.max_new_tokens or 2048} new tokens")  # fmt: skip
    rows = []
    for batch in args.batch:
        if target.device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        n = args.n if batch > 1 or args.n_batch1 is None else args.n_batch1
        results = evaluate_suite(
            target, drafter, suite(n), ar_baseline=args.ar, progress=False, batch_size=batch
        )
        wall = time.perf_counter() - start
        benches = results["benchmarks"].values()
        decoded = sum(b["decoded_tokens"] for b in benches)
        seconds = sum(b["decode_seconds"] for b in benches)
        row = {
            "batch": batch,
            "tau": {name: b["tau"] for name, b in results["benchmarks"].items()},
            "tau_avg": results["tau/avg"],
            "prompts": sum(b["n"] for b in benches),
            "cuda_graphs": results["cuda_graphs"],
            "decoded_tokens": decoded,
            "tokens_per_s": decoded / seconds,
            "prefill_seconds": sum(b["prefill_seconds"] for b in benches),
            "wall_seconds": wall,
            "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if target.device.type == "cuda" else None,
        }
        if args.ar:
            ar_decoded = sum(b["ar_decoded_tokens"] for b in benches)
            row["ar_tokens_per_s"] = ar_decoded / sum(b["ar_decode_seconds"] for b in benches)
            row["greedy_mismatches"] = sum(b.get("greedy_mismatches", 0) for b in benches)
        rows.append(row)
        print(json.dumps(row), flush=True)

    base = rows[0]
    print(f"\n| batch | τ avg | prompts | tokens/s | × batch {base['batch']} | wall s |"
          + (" AR tokens/s | speedup over AR |" if args.ar else "") + " peak GiB |")  # fmt: skip
    print("|---|---|---|---|---|---|" + ("---|---|" if args.ar else "") + "---|")
    for r in rows:
        ar = (
            f" {r['ar_tokens_per_s']:.0f} | {r['tokens_per_s'] / r['ar_tokens_per_s']:.2f} |"
            if args.ar
            else ""
        )
        peak = f"{r['peak_gib']:.1f}" if r["peak_gib"] is not None else "–"
        print(f"| {r['batch']} | {r['tau_avg']:.3f} | {r['prompts']} | {r['tokens_per_s']:.0f} | "
              f"{r['tokens_per_s'] / base['tokens_per_s']:.1f} | {r['wall_seconds']:.1f} |{ar} {peak} |")  # fmt: skip
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=2))
    if args.profile:
        profile(drafter, target, suite(args.n), max(args.batch), args.profile)


def profile(drafter: torch.nn.Module, target: Target, suite: BenchmarkSuite, batch: int, rows: int) -> None:
    """The `rows` costliest kernels (ops on a CPU) of decoding one batch of the suite's first prompts."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    from specauf.batched import BatchedSpeculativeDecoder
    from specauf.evaluation.prompts import chat_prompt_ids

    prompts = [p for ps in suite.load().values() for p in ps][:batch]
    ids = [chat_prompt_ids(target.tokenizer, [{"role": "user", "content": p.turns[0]}]) for p in prompts]
    decoder = BatchedSpeculativeDecoder(target, drafter, batch)
    decoder.generate_many(ids, 32, eos_ids=[])  # capture the graph, warm up
    cuda = target.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
    with torch_profile(activities=activities) as prof:
        decoder.generate_many(ids, 32, eos_ids=[])
    key = "self_cuda_time_total" if cuda else "self_cpu_time_total"
    print(f"\nprofile: batch {batch}, 32 new tokens, CUDA graphs {decoder.graphs}")
    print(prof.key_averages().table(sort_by=key, row_limit=rows, max_name_column_width=70), flush=True)


if __name__ == "__main__":
    main()
