"""τ parity with the field's own harness: one exported DFlash drafter decoded by specauf and by z-lab's
`dflash_generate` (PyPI `dflash` 0.1.0), prompt by prompt, greedy. Prints the side-by-side table.

Run in the interop environment (`make setup-interop`), on an export (or a checkpoint, exported on the fly):

    .venv-interop/bin/python -m experiments.parity_zlab outputs/<date>/<time> --n 4 --max-new-tokens 64

Both decode the same prompts (first turns of the offline benchmark files, the target's chat template) with
the target's EOS ids as stop tokens. Emitted per cycle = accepted drafts + 1 (z-lab's `acceptance_lengths`;
specauf's `accepted + 1`), τ = their mean per prompt. A learned mask is written into the target's row at its
served id, which z-lab's loop reads; the script checks that no sequence holds that id.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

from specauf.cli import print_user_error, user_error_in
from specauf.data.benchmarks import Benchmark, BenchmarkSuite
from specauf.decoding import SpeculativeDecoder
from specauf.evaluation import chat_prompt_ids
from specauf.export_layout import export_checkpoint
from specauf.interop import load_zlab, serve_mask_in_target, zlab_generate
from specauf.loading import is_export, load_with_target

BENCHMARKS = ("gsm8k", "math500", "humaneval", "mbpp", "mt_bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="an export directory, a .ckpt, or a training run directory")
    parser.add_argument("--n", type=int, default=4, help="prompts per benchmark (default 4)")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--data-dir", default=None, help="benchmark files (default: $SPECAUF_DATA_DIR)")
    parser.add_argument("--benchmarks", default=",".join(BENCHMARKS))
    return parser.parse_args(argv)


def prompts(args: argparse.Namespace, tokenizer) -> list[tuple[str, str, list[int]]]:
    suite = BenchmarkSuite(
        skip_missing=True,
        **{
            name: Benchmark(
                name, n=args.n, max_new_tokens=args.max_new_tokens, data_dir=args.data_dir, use_hub=False
            )
            for name in args.benchmarks.split(",")
        },
    )
    return [
        (name, p.uid, chat_prompt_ids(tokenizer, [{"role": "user", "content": p.turns[0]}]))
        for name, bench in suite.load().items()
        for p in bench
    ]


def compare(export_dir: Path, args: argparse.Namespace) -> list[dict]:
    torch.manual_seed(0)
    drafter, target, _ = load_with_target(export_dir)
    cases = prompts(args, target.tokenizer)
    stop = list(target.eos_token_ids)
    decoder = SpeculativeDecoder(target, drafter)
    ours = [decoder.generate(ids, args.max_new_tokens, eos_ids=stop) for _, _, ids in cases]
    served = serve_mask_in_target(target, export_dir)
    if served is not None:
        held = [uid for (_, uid, ids), r in zip(cases, ours, strict=True) if served in ids + r.tokens]
        if held:
            raise SystemExit(
                f"the served mask id {served} occurs in {held}: the comparison would not be exact"
            )
    zlab = load_zlab(export_dir)
    rows = []
    for (bench, uid, ids), mine in zip(cases, ours, strict=True):
        tokens, emitted = zlab_generate(zlab, target, ids, args.max_new_tokens, stop)
        our_emitted = [a + 1 for a in mine.accepted]
        rows.append(
            {
                "benchmark": bench,
                "uid": uid,
                "new_tokens": len(mine.tokens),
                "tokens_equal": tokens == mine.tokens,
                "cycles_equal": emitted == our_emitted,
                "tau_specauf": sum(our_emitted) / max(len(our_emitted), 1),
                "tau_zlab": sum(emitted) / max(len(emitted), 1),
            }
        )
    return rows


def print_rows(rows: list[dict]) -> None:
    print("| benchmark | prompt | new tokens | tokens equal | per-cycle equal | τ specauf | τ z-lab |")
    print("|---|---|---:|---|---|---:|---:|")
    for r in rows:
        print(
            f"| {r['benchmark']} | {r['uid']} | {r['new_tokens']} | {r['tokens_equal']} | {r['cycles_equal']} "
            f"| {r['tau_specauf']:.3f} | {r['tau_zlab']:.3f} |"
        )
    mean = lambda key: sum(r[key] for r in rows) / len(rows)  # noqa: E731
    same = sum(r["tokens_equal"] and r["cycles_equal"] for r in rows)
    print(
        f"\n{same}/{len(rows)} prompts identical; mean τ specauf {mean('tau_specauf'):.4f}, z-lab {mean('tau_zlab'):.4f}"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        source = Path(args.source)
        with tempfile.TemporaryDirectory() as tmp:
            export_dir = source if is_export(source) else export_checkpoint(source, Path(tmp) / "export")
            rows = compare(export_dir, args)
    except Exception as err:
        user = user_error_in(err)
        if user is None:
            raise
        print_user_error(user)
        return 1
    print_rows(rows)
    return 0 if all(r["tokens_equal"] and r["cycles_equal"] for r in rows) else 2


if __name__ == "__main__":
    sys.exit(main())
