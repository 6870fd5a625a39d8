"""Speculative vs autoregressive decoding of the same target, in one run: τ, tokens/s of both, speedup.

Run from the repository root (or anywhere after `pip install -e .`):

    python -m experiments.bench_decode --target tiny_random --n 2 --max-new-tokens 32     # seconds on a CPU
    python -m experiments.bench_decode --n 8 --max-new-tokens 128                         # SmolLM2-135M
    python -m experiments.bench_decode --ckpt outputs/<date>/<time> --device cuda --n 32  # a trained drafter

Without --ckpt the drafter is untrained (τ ≈ 1): the numbers then measure the decoder's overhead, not a
drafter. Prompts come from the offline benchmark files ($SPECAUF_DATA_DIR or --data-dir; HumanEval and
MT-Bench also from PyPI); the hub is not tried unless --hub. Speedup = AR time per token / speculative time per
token, prefill excluded, batch 1 (docs/method.md §6).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from specauf import target as targets
from specauf.cli import print_user_error, user_error_in
from specauf.data.benchmarks import BENCHMARK_NAMES, Benchmark, BenchmarkSuite
from specauf.drafters.dflash import DFlashDrafter
from specauf.dtypes import DTYPES
from specauf.evaluation import chat_prompt_ids, evaluate_suite, print_table, resolve_device
from specauf.loading import load_with_target

TARGETS = {"smollm2_135m": targets.smollm2_135m, "tiny_random": targets.tiny_random}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--target",
        choices=sorted(TARGETS),
        default=None,
        help="target model (default: the checkpoint's, else smollm2_135m)",
    )
    parser.add_argument(
        "--ckpt", default=None, help="a specauf.train checkpoint or run dir (default: untrained)"
    )
    parser.add_argument("--block-size", type=int, default=16, help="untrained drafter: block size")
    parser.add_argument("--num-layers", type=int, default=1, help="untrained drafter: layers")
    parser.add_argument(
        "--benchmarks",
        default="gsm8k,humaneval,mt_bench",
        help=f"comma-separated, from {','.join(BENCHMARK_NAMES)}",
    )
    parser.add_argument("--n", type=int, default=2, help="prompts per benchmark (seeded shuffle, first n)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda[:i]")
    parser.add_argument(
        "--dtype", choices=sorted(DTYPES), default=None, help="default: float32 on CPU, bfloat16 on GPU"
    )
    parser.add_argument("--data-dir", default=None, help="benchmark files (default: $SPECAUF_DATA_DIR)")
    parser.add_argument("--hub", action="store_true", help="allow the Hugging Face hub as a data source")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--out", type=Path, default=None, help="also write eval.json / eval.md here")
    parser.add_argument(
        "--profile",
        type=int,
        default=0,
        metavar="N",
        help="also profile one speculative decode of the first prompt: the N most expensive ops",
    )
    return parser.parse_args(argv)  # fmt: skip


def build(args: argparse.Namespace) -> tuple[torch.nn.Module, object]:
    device = resolve_device(args.device)
    dtype = DTYPES[args.dtype or ("bfloat16" if device.type == "cuda" else "float32")]
    target = TARGETS[args.target]() if args.target else None
    if args.ckpt:
        drafter, target, _ = load_with_target(args.ckpt, target=target, device=device, dtype=dtype)
        return drafter, target
    target = target or targets.smollm2_135m()
    torch.manual_seed(args.seed)
    drafter = DFlashDrafter.from_target(target, num_layers=args.num_layers, block_size=args.block_size)
    target.to(device=device, dtype=dtype)
    return drafter.to(device=device, dtype=dtype).eval(), target


def profile_one(target, drafter, suite: BenchmarkSuite, args: argparse.Namespace) -> None:
    """Where a speculative decode's time goes: one prompt, after an untimed warm-up run, under the profiler.

    Sorted by host time: on a GPU a small target is launch-bound, so the host side is what to cut.
    """
    from torch.profiler import ProfilerActivity, profile

    from specauf.decoding import SpeculativeDecoder

    first = next(p[0] for p in suite.load().values() if p)
    ids = chat_prompt_ids(target.tokenizer, [{"role": "user", "content": first.turns[0]}])
    decoder = SpeculativeDecoder(target, drafter, temperature=args.temperature, seed=args.seed)
    decoder.generate(ids, args.max_new_tokens, eos_ids=[])
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if target.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        result = decoder.generate(ids, args.max_new_tokens, eos_ids=[])
    print(
        f"profiled: {result.num_cycles} cycles, {result.decode_seconds * 1e3 / result.num_cycles:.2f} ms each"
    )
    print(
        prof.key_averages().table(
            sort_by="self_cpu_time_total", row_limit=args.profile, max_name_column_width=60
        )
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = [b.strip() for b in args.benchmarks.split(",") if b.strip()]
    try:
        drafter, target = build(args)
        suite = BenchmarkSuite(
            **{
                name: Benchmark(name, n=args.n, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                data_dir=args.data_dir, use_hub=args.hub)
                for name in names
            },
            skip_missing=True,
        )  # fmt: skip
        results = evaluate_suite(
            target, drafter, suite, temperature=args.temperature, seed=args.seed, out_dir=args.out
        )
    except Exception as err:  # the project's user errors as one line; a bug keeps its traceback
        if user_error_in(err) is None:
            raise
        print_user_error(user_error_in(err))
        return 1
    print_table(results)
    benches = [b for b in results["benchmarks"].values() if b["num_cycles"]]
    if not benches:
        print("no prompt was decoded (see the warnings above)", file=sys.stderr)
        return 1
    spec_tokens = sum(b["decoded_tokens"] for b in benches)
    spec_seconds = sum(b["decode_seconds"] for b in benches)
    ar_tokens = sum(b["ar_decoded_tokens"] for b in benches)
    ar_seconds = sum(b["ar_decode_seconds"] for b in benches)
    spec_rate, ar_rate = spec_tokens / spec_seconds, ar_tokens / ar_seconds
    print(
        f"all prompts: τ {results['tau/avg']:.3f} (max {results['tau_max']}), "
        f"speculative {spec_rate:.1f} tokens/s, autoregressive {ar_rate:.1f} tokens/s, "
        f"speedup {spec_rate / ar_rate:.2f}x"
    )
    if args.profile:
        profile_one(target, drafter, suite, args)
    mismatches = sum(b.get("greedy_mismatches", 0) for b in benches)
    if mismatches:
        print(
            f"warning: {mismatches} prompt(s) where speculative greedy != autoregressive greedy (see eval log)"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
