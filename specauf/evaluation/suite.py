"""The τ evaluation of one drafter on a benchmark suite, through the draft-and-verify loop (docs/method.md §6)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from specauf.batched import BatchedSpeculativeDecoder
from specauf.data.benchmarks import BenchmarkSuite, BenchPrompt
from specauf.decoding import DecodeResult, SpeculativeDecoder
from specauf.dtypes import dtype_name
from specauf.errors import ConfigError
from specauf.evaluation.mismatch import describe_mismatch
from specauf.evaluation.prompts import (
    PromptTooLong,
    Turns,
    chat_prompt_ids,
    context_limit,
    run_conversations,
)
from specauf.evaluation.stats import bench_result, mean
from specauf.evaluation.tables import write_reports

log = logging.getLogger(__name__)

MAX_MISMATCH_REPORTS = 5  # per benchmark: enough to see a pattern without flooding the results


def resolve_device(device: str) -> torch.device:
    """`auto` → cuda if available, else cpu; anything else as given (ConfigError for a CUDA device on none)."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but no CUDA GPU is visible. Fix: device=cpu (or device=auto)")
    return torch.device(device)


def evaluate_suite(
    target: Any,
    drafter: torch.nn.Module | None,
    suite: BenchmarkSuite,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    seed: int = 0,
    ar_baseline: bool = True,
    out_dir: Path | str | None = None,
    max_prompts: int | None = None,
    progress: bool = True,
    batch_size: int = 1,
) -> dict[str, Any]:
    """τ, acceptance histogram, α_k, tokens/s and (with `ar_baseline`) the speedup per benchmark.

    Each prompt gets the target's chat template and is decoded up to its benchmark's `max_new_tokens`; with
    `ar_baseline` it is decoded again through the same loop with block size 1. `batch_size` > 1 decodes that
    many prompts at once (`specauf.batched`, both decoders; greedy outputs are the same as batch 1's, and
    tokens/s is then the batch's throughput). Target and drafter must
    be on the same device. Prompts that leave no room for the new tokens in the target's context are skipped
    with a warning and counted. Under greedy decoding a speculative output that differs from the AR one is
    counted (`greedy_mismatches`) and reported with the target's top-2 logit gap at the first difference.
    Writes eval.json and eval.md to `out_dir` when given.
    """
    was_training = drafter.training if drafter is not None else False
    if drafter is not None:
        drafter.eval()
    try:
        prompts_by_bench = suite.load()
        knobs = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "seed": seed}
        if batch_size > 1:
            spec = BatchedSpeculativeDecoder(target, drafter, batch_size, **knobs)
            ar = BatchedSpeculativeDecoder(target, None, batch_size, **knobs)
        else:
            spec = SpeculativeDecoder(target, drafter, **knobs)
            ar = SpeculativeDecoder(target, None, **knobs)
        limit = context_limit(target)
        _warm_up(target, (spec, ar) if ar_baseline else (spec,), prompts_by_bench, max_prompts, limit)
        jobs = [
            (name, prompts[:max_prompts], suite.benchmarks[name].max_new_tokens)
            for name, prompts in prompts_by_bench.items()
        ]
        total = sum(len(prompts) for _, prompts, _ in jobs) * (2 if ar_baseline else 1)
        with tqdm(total=total, desc="τ eval", unit="prompt", disable=not progress, dynamic_ncols=True) as bar:
            bar.set_postfix_str("speculative")
            spec_out = _decode(spec, jobs, limit, bar)
            ar_out: dict[str, list[Any]] = {name: [None] * len(prompts) for name, prompts, _ in jobs}
            if ar_baseline:
                bar.set_postfix_str("autoregressive")
                ar_out = _decode(ar, jobs, limit, bar)
        benchmarks: dict[str, dict[str, Any]] = {}
        for name, prompts, max_new in jobs:
            benchmarks[name] = _score_benchmark(
                target, spec, name, prompts, spec_out[name], ar_out[name], max_new, limit
            )
            benchmarks[name]["source"] = suite.sources.get(name)
    finally:
        if drafter is not None:
            drafter.train(was_training)

    taus = [b["tau"] for b in benchmarks.values() if b["tau"] is not None]
    speedups = [b["speedup"] for b in benchmarks.values() if b.get("speedup") is not None]
    results = {
        "target": getattr(target, "name", None),
        "drafter": None if drafter is None else type(drafter).__qualname__,
        "block_size": spec.block_size,
        "num_drafted": spec.num_drafted,
        # Next-token drafters (Domino) draft all B slots, so τ reaches B + 1 instead of B (docs/method.md §5).
        "next_token": drafter is not None and spec.num_drafted == spec.block_size,
        "tau_max": spec.max_tau,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "ar_baseline": ar_baseline,
        "batch_size": batch_size,
        # Whether the speculative decoder replayed CUDA graphs (False also after a failed capture).
        "cuda_graphs": bool(getattr(spec, "graphs", spec.compile)),
        "device": str(target.device),
        "dtype": dtype_name(target.dtype),
        "benchmarks": benchmarks,
        "tau/avg": mean(taus),
        "speedup/avg": mean(speedups),
        "skipped_benchmarks": dict(suite.skipped),
    }
    if out_dir is not None:
        write_reports(results, Path(out_dir))
    return results


def _warm_up(
    target: Any,
    decoders: tuple[SpeculativeDecoder, ...],
    prompts_by_bench: dict[str, list[BenchPrompt]],
    max_prompts: int | None,
    limit: int | None,
) -> None:
    # Untimed: the first calls pay one-off costs (CUDA context, kernel selection; ~10x a normal step in bf16),
    # which would otherwise land on whichever decoder runs first.
    first = next((p[0] for p in prompts_by_bench.values() if p[:max_prompts]), None)
    if first is None:
        return
    ids = chat_prompt_ids(target.tokenizer, [{"role": "user", "content": first.turns[0]}])[-64:]
    new_tokens = 2 * decoders[0].max_tau
    if limit is None or len(ids) + new_tokens <= limit:
        for decoder in decoders:
            if isinstance(decoder, BatchedSpeculativeDecoder):
                decoder.generate_many([ids] * decoder.batch_size, new_tokens, eos_ids=[])
            else:
                decoder.generate(ids, new_tokens, eos_ids=[])


def _decode(
    decoder: SpeculativeDecoder,
    jobs: list[tuple[str, list[BenchPrompt], int]],
    limit: int | None,
    bar: tqdm,
) -> dict[str, list[Turns | PromptTooLong]]:
    """Every benchmark's prompts through `decoder` as one queue (a batched decoder keeps its batch full
    across benchmarks instead of draining at each one's tail); the outputs split back per benchmark."""
    flat = [p for _, prompts, _ in jobs for p in prompts]
    budgets = [max_new for _, prompts, max_new in jobs for _ in prompts]
    outputs = run_conversations(decoder, flat, budgets, limit, on_done=lambda i: bar.update())
    split, start = {}, 0
    for name, prompts, _ in jobs:
        split[name] = outputs[start : start + len(prompts)]
        start += len(prompts)
    return split


def _score_benchmark(
    target: Any,
    spec: SpeculativeDecoder,
    name: str,
    prompts: list[BenchPrompt],
    spec_all: list[Turns | PromptTooLong],
    ar_all: list[Turns | PromptTooLong | None],
    max_new_tokens: int,
    limit: int | None,
) -> dict[str, Any]:
    runs: list[list[DecodeResult]] = []
    ar_runs: list[list[DecodeResult]] | None = [] if ar_all[:1] != [None] else None
    skipped: list[str] = []
    mismatches: list[str] = []
    for prompt, spec_turns, ar_turns in zip(prompts, spec_all, ar_all, strict=True):
        too_long = next((t for t in (spec_turns, ar_turns) if isinstance(t, PromptTooLong)), None)
        if too_long is not None:
            log.warning(
                "%s %s: skipped, %s and the target's context is %s tokens (max_new_tokens %d)",
                name,
                prompt.uid,
                too_long,
                limit,
                max_new_tokens,
            )
            skipped.append(prompt.uid)
            continue
        runs.append([r for _, r in spec_turns])
        if ar_turns is not None:
            ar_runs.append([r for _, r in ar_turns])
            if spec.temperature == 0.0:
                mismatches += greedy_mismatches(target, name, prompt.uid, spec_turns, ar_turns)
    out = bench_result(runs, ar_runs, spec.num_drafted, skipped)
    out["max_new_tokens"] = max_new_tokens
    if ar_runs is not None and spec.temperature == 0.0:
        out["greedy_mismatches"] = len(mismatches)
        out["mismatch_reports"] = mismatches[:MAX_MISMATCH_REPORTS]
    return out


def greedy_mismatches(
    target: Any,
    name: str,
    uid: str,
    spec_turns: list[tuple[list[int], DecodeResult]],
    ar_turns: list[tuple[list[int], DecodeResult]],
) -> list[str]:
    """The first turn where greedy speculative output differs from greedy AR output, as a report (or none).

    They must be equal (docs/method.md §6). The report gives the target's top-2 gap at the difference, so a
    near-tie (bf16 numerics) is told apart from a logic bug.
    """
    for turn, ((ids, s), (_, a)) in enumerate(zip(spec_turns, ar_turns, strict=True)):
        message = describe_mismatch(target, ids, s.tokens, a.tokens)
        if message is not None:
            report = f"{name} {uid} turn {turn + 1}: speculative != autoregressive greedy output, {message}"
            log.warning(report)
            return [report]  # later turns see different histories: nothing more to compare
    return []
