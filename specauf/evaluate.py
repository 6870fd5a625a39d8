"""Measure a drafter: τ, acceptance and speedup on the τ benchmarks (DESIGN §6, §7).

`python -m specauf.evaluate ckpt=PATH [benchmarks=six|cpu] [logger=wandb|csv]` (see conf/evaluate.yaml). The
trainer calls `evaluate_suite` after fit; `load_checkpoint` rebuilds a drafter and its target from a training
checkpoint.
"""

from __future__ import annotations

import importlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from tqdm import tqdm

from specauf.checkpointing import checkpoint_file
from specauf.cli import USER_ERRORS, debug, finish_wandb, print_user_error
from specauf.config import register_resolvers
from specauf.data.benchmarks import BenchmarkSuite, BenchPrompt
from specauf.decoding import DecodeResult, SpeculativeDecoder, describe_mismatch
from specauf.errors import CheckpointError, UserError

log = logging.getLogger(__name__)
register_resolvers()

MAX_MISMATCH_REPORTS = 5  # per benchmark: enough to see a pattern without flooding the results


# --- prompts ---------------------------------------------------------------------------------------------


def chat_prompt_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """Token ids of `messages` under the tokenizer's chat template, ready for the assistant's reply.

    Thinking off, as the benchmarks are run (DESIGN §7): templates that know `enable_thinking` (Qwen3) get
    False; others never see the flag.
    """
    kwargs = {}
    if "enable_thinking" in str(getattr(tokenizer, "chat_template", None) or ""):
        kwargs["enable_thinking"] = False
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False, **kwargs)
    # The template already holds any BOS: the tokenizer must not add another.
    return tokenizer(text, add_special_tokens=False).input_ids


def context_limit(target: Any) -> int | None:
    """The target's longest supported sequence (max_position_embeddings), or None when it does not say."""
    limit = getattr(target.config.get_text_config(), "max_position_embeddings", None)
    return int(limit) if limit else None


class _TooLong(Exception):
    def __init__(self, turn: int, length: int) -> None:
        super().__init__(f"turn {turn + 1} prompt has {length} tokens")


def run_conversation(
    decoder: SpeculativeDecoder, prompt: BenchPrompt, max_new_tokens: int, limit: int | None
) -> list[tuple[list[int], DecodeResult]]:
    """Decode every user turn of `prompt`; a later turn sees the model's own earlier answers (MT-Bench).

    Returns (prompt ids, result) per turn. Raises `_TooLong` when a turn's prompt leaves no room for
    `max_new_tokens` inside the target's context.
    """
    tokenizer = decoder.target.tokenizer
    messages: list[dict[str, str]] = []
    out = []
    for i, turn in enumerate(prompt.turns):
        messages.append({"role": "user", "content": turn})
        ids = chat_prompt_ids(tokenizer, messages)
        if limit is not None and len(ids) > limit - max_new_tokens:
            raise _TooLong(i, len(ids))
        result = decoder.generate(ids, max_new_tokens)
        out.append((ids, result))
        messages.append(
            {"role": "assistant", "content": tokenizer.decode(result.tokens, skip_special_tokens=True)}
        )
    return out


# --- metrics ---------------------------------------------------------------------------------------------


def acceptance_stats(accepted: Sequence[int], num_drafted: int) -> tuple[list[int], list[float | None]]:
    """Histogram of accepted drafts per cycle (0..D) and α_k = #(accepted ≥ k) / #(accepted ≥ k−1), k = 1..D.

    α_k is None where no cycle reached k − 1 accepted drafts.
    """
    hist = [0] * (num_drafted + 1)
    for a in accepted:
        hist[a] += 1
    at_least = [sum(hist[k:]) for k in range(num_drafted + 1)]
    alpha = [at_least[k] / at_least[k - 1] if at_least[k - 1] else None for k in range(1, num_drafted + 1)]
    return hist, alpha


def _mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def _rate(tokens: int, seconds: float) -> float | None:
    return tokens / seconds if seconds > 0 and tokens > 0 else None


def _bench_result(
    runs: list[list[DecodeResult]],
    ar_runs: list[list[DecodeResult]] | None,
    num_drafted: int,
    skipped: list[str],
) -> dict[str, Any]:
    # DFlash convention: τ per prompt (over all its cycles, both turns of MT-Bench), then the mean of those.
    accepted = [a for turns in runs for r in turns for a in r.accepted]
    per_prompt = [
        (sum(r.num_decoded for r in turns) / n)
        for turns in runs
        if (n := sum(r.num_cycles for r in turns)) > 0
    ]
    hist, alpha = acceptance_stats(accepted, num_drafted)
    decoded = sum(r.num_decoded for turns in runs for r in turns)
    seconds = sum(r.decode_seconds for turns in runs for r in turns)
    out: dict[str, Any] = {
        "n": len(runs),
        "skipped": len(skipped),
        "skipped_uids": skipped,
        "tau": _mean(per_prompt),
        "tau_pooled": _mean([a + 1 for a in accepted]),
        "num_cycles": len(accepted),
        "histogram": hist,
        "alpha": alpha,
        "new_tokens": sum(len(r.tokens) for turns in runs for r in turns),
        "decoded_tokens": decoded,
        "decode_seconds": seconds,
        "prefill_seconds": sum(r.prefill_seconds for turns in runs for r in turns),
        "tokens_per_s": _rate(decoded, seconds),
    }
    if ar_runs is not None:
        ar_decoded = sum(r.num_decoded for turns in ar_runs for r in turns)
        ar_seconds = sum(r.decode_seconds for turns in ar_runs for r in turns)
        out["ar_tokens_per_s"] = _rate(ar_decoded, ar_seconds)
        out["ar_decoded_tokens"] = ar_decoded
        out["ar_decode_seconds"] = ar_seconds
        # Speedup = AR time per output token / speculative time per output token (DESIGN §6), prefill excluded.
        spec_rate, ar_rate = out["tokens_per_s"], out["ar_tokens_per_s"]
        out["speedup"] = spec_rate / ar_rate if spec_rate and ar_rate else None
    return out


def flat_metrics(results: dict[str, Any]) -> dict[str, float]:
    """Scalars for a logger: eval/tau/<bench>, eval/tau/avg, eval/speedup/<bench>, eval/speedup/avg."""
    flat: dict[str, float] = {}
    for name, bench in results["benchmarks"].items():
        for key in ("tau", "speedup"):
            if bench.get(key) is not None:
                flat[f"eval/{key}/{name}"] = float(bench[key])
    for key in ("tau/avg", "speedup/avg"):
        if results.get(key) is not None:
            flat[f"eval/{key}"] = float(results[key])
    return flat


# --- the suite -------------------------------------------------------------------------------------------


def evaluate_suite(
    target: Any,
    drafter: torch.nn.Module | None,
    suite: BenchmarkSuite,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    ar_baseline: bool = True,
    out_dir: Path | str | None = None,
    max_prompts: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """τ, acceptance histogram, α_k, tokens/s and (with `ar_baseline`) the speedup per benchmark (DESIGN §6).

    Each prompt gets the target's chat template and is decoded up to its benchmark's `max_new_tokens`, batch
    1; with `ar_baseline` it is decoded again through the same loop with block size 1. Target and drafter must
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
        spec = SpeculativeDecoder(target, drafter, temperature=temperature, top_p=top_p, seed=seed)
        ar = SpeculativeDecoder(target, None, temperature=temperature, top_p=top_p, seed=seed)
        limit = context_limit(target)
        total = sum(len(p[:max_prompts]) for p in prompts_by_bench.values())
        first = next((p[0] for p in prompts_by_bench.values() if p[:max_prompts]), None)
        if first is not None:
            # Untimed warm-up of both decoders: the first calls pay one-off costs (CUDA context, kernel
            # selection; ~10x a normal step in bf16), which would otherwise land on whichever runs first.
            ids = chat_prompt_ids(target.tokenizer, [{"role": "user", "content": first.turns[0]}])[-64:]
            new_tokens = 2 * spec.max_tau
            if limit is None or len(ids) + new_tokens <= limit:
                for decoder in (spec, ar) if ar_baseline else (spec,):
                    decoder.generate(ids, new_tokens, eos_ids=[])
        benchmarks: dict[str, dict[str, Any]] = {}
        with tqdm(total=total, desc="τ eval", unit="prompt", disable=not progress, dynamic_ncols=True) as bar:
            for name, prompts in prompts_by_bench.items():
                bar.set_postfix_str(name)
                benchmarks[name] = _evaluate_benchmark(
                    target,
                    spec,
                    ar if ar_baseline else None,
                    name,
                    prompts[:max_prompts],
                    suite.benchmarks[name].max_new_tokens,
                    limit,
                    bar,
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
        # Next-token drafters (Domino) draft all B slots, so τ reaches B + 1 instead of B (DESIGN §5).
        "next_token": drafter is not None and spec.num_drafted == spec.block_size,
        "tau_max": spec.max_tau,
        "temperature": temperature,
        "top_p": top_p,
        "ar_baseline": ar_baseline,
        "device": str(target.device),
        "dtype": str(target.dtype).removeprefix("torch."),
        "benchmarks": benchmarks,
        "tau/avg": _mean(taus),
        "speedup/avg": _mean(speedups),
        "skipped_benchmarks": dict(suite.skipped),
    }
    if out_dir is not None:
        write_reports(results, Path(out_dir))
    return results


def _evaluate_benchmark(
    target: Any,
    spec: SpeculativeDecoder,
    ar: SpeculativeDecoder | None,
    name: str,
    prompts: list[BenchPrompt],
    max_new_tokens: int,
    limit: int | None,
    bar: tqdm,
) -> dict[str, Any]:
    runs: list[list[DecodeResult]] = []
    ar_runs: list[list[DecodeResult]] | None = [] if ar is not None else None
    skipped: list[str] = []
    mismatches: list[str] = []
    for prompt in prompts:
        try:
            spec_turns = run_conversation(spec, prompt, max_new_tokens, limit)
            ar_turns = run_conversation(ar, prompt, max_new_tokens, limit) if ar is not None else None
        except _TooLong as err:
            log.warning(
                "%s %s: skipped, %s and the target's context is %s tokens (max_new_tokens %d)",
                name,
                prompt.uid,
                err,
                limit,
                max_new_tokens,
            )
            skipped.append(prompt.uid)
            bar.update()
            continue
        runs.append([r for _, r in spec_turns])
        if ar_turns is not None:
            ar_runs.append([r for _, r in ar_turns])
            if spec.temperature == 0.0:
                mismatches += _greedy_mismatches(target, name, prompt.uid, spec_turns, ar_turns)
        bar.update()
    out = _bench_result(runs, ar_runs, spec.num_drafted, skipped)
    out["max_new_tokens"] = max_new_tokens
    if ar is not None and spec.temperature == 0.0:
        out["greedy_mismatches"] = len(mismatches)
        out["mismatch_reports"] = mismatches[:MAX_MISMATCH_REPORTS]
    return out


def _greedy_mismatches(
    target: Any,
    name: str,
    uid: str,
    spec_turns: list[tuple[list[int], DecodeResult]],
    ar_turns: list[tuple[list[int], DecodeResult]],
) -> list[str]:
    # Greedy speculative decoding must equal greedy AR decoding (DESIGN §6). A difference is reported with the
    # target's top-2 gap there, so a near-tie (bf16 numerics) is told apart from a logic bug.
    for turn, ((ids, s), (_, a)) in enumerate(zip(spec_turns, ar_turns, strict=True)):
        message = describe_mismatch(target, ids, s.tokens, a.tokens)
        if message is not None:
            report = f"{name} {uid} turn {turn + 1}: speculative != autoregressive greedy output, {message}"
            log.warning(report)
            return [report]  # later turns see different histories: nothing more to compare
    return []


# --- reports ---------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def header_line(results: dict[str, Any]) -> str:
    mode = (
        "greedy"
        if results["temperature"] == 0
        else f"T={results['temperature']:g}, top-p {results['top_p']:g}"
    )
    kind = "next-token" if results["next_token"] else "same-position"
    return (
        f"target {results['target']}, drafter {results['drafter']}, block size {results['block_size']} "
        f"({results['num_drafted']} drafted, {kind}; τ ∈ [1, {results['tau_max']}]), {mode}, "
        f"{results['device']} {results['dtype']}"
    )


def markdown_report(results: dict[str, Any]) -> str:
    """The per-benchmark table and the α_k table, as markdown."""
    benches = results["benchmarks"]
    lines = [
        "# τ evaluation",
        "",
        header_line(results),
        "",
        "| benchmark | n | skipped | τ | tokens/s | AR tokens/s | speedup |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, b in benches.items():
        lines.append(
            f"| {name} | {b['n']} | {b['skipped']} | {_fmt(b['tau'])} | {_fmt(b['tokens_per_s'], 1)} | "
            f"{_fmt(b.get('ar_tokens_per_s'), 1)} | {_fmt(b.get('speedup'), 2)} |"
        )
    lines.append(f"| **avg** | | | {_fmt(results['tau/avg'])} | | | {_fmt(results['speedup/avg'], 2)} |")
    if benches and results["num_drafted"] > 0:
        lines += [
            "",
            "Conditional acceptance α_k = #(accepted ≥ k) / #(accepted ≥ k−1):",
            "",
            "| k | " + " | ".join(benches) + " |",
            "|---|" + "---:|" * len(benches),
        ]
        for k in range(results["num_drafted"]):
            cells = " | ".join(_fmt(b["alpha"][k]) for b in benches.values())
            lines.append(f"| α_{k + 1} | {cells} |")
    for name, reason in results["skipped_benchmarks"].items():
        lines += ["", f"Skipped benchmark {name}: {reason.splitlines()[0]}"]
    for b in benches.values():
        for report in b.get("mismatch_reports", []):
            lines += ["", f"Mismatch: {report}"]
    return "\n".join(lines) + "\n"


def _write_atomic(path: Path, text: str) -> None:
    # A reader (or a crash) never sees half a report: write a sibling temp file, then rename over.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_reports(results: dict[str, Any], out_dir: Path) -> None:
    """eval.json (everything) and eval.md (the tables) in `out_dir`, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_atomic(out_dir / "eval.json", json.dumps(results, indent=2) + "\n")
    _write_atomic(out_dir / "eval.md", markdown_report(results))


def print_table(results: dict[str, Any], console: Any = None) -> None:
    """The per-benchmark table on the terminal."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    table = Table(title=header_line(results), header_style="bold")
    for col in ("benchmark", "n", "skipped", "τ", "α_1", "tokens/s", "AR tokens/s", "speedup"):
        table.add_column(col, justify="left" if col == "benchmark" else "right")
    for name, b in results["benchmarks"].items():
        alpha1 = b["alpha"][0] if b["alpha"] else None
        table.add_row(
            name,
            str(b["n"]),
            str(b["skipped"]),
            _fmt(b["tau"]),
            _fmt(alpha1),
            _fmt(b["tokens_per_s"], 1),
            _fmt(b.get("ar_tokens_per_s"), 1),
            _fmt(b.get("speedup"), 2),
        )
    table.add_row("avg", "", "", _fmt(results["tau/avg"]), "", "", "", _fmt(results["speedup/avg"], 2))
    console.print(table)


# --- checkpoints -----------------------------------------------------------------------------------------


def _import_qualname(path: str) -> Any:
    """The object named `package.module.Class` (or `module.Outer.Inner`)."""
    parts = path.split(".")
    for i in range(len(parts) - 1, 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"no importable module in {path!r}")


def load_checkpoint(
    path: str | os.PathLike,
    target: Any = None,
    *,
    device: str | torch.device | None = None,
    dtype: torch.dtype | None = None,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Rebuild `(drafter, target, meta)` from a checkpoint saved by `specauf.train`.

    `path` is a .ckpt file or a run directory (→ checkpoints/last.ckpt). The target is built from the
    training config's `target` section unless one is given; either way its name and feature layers must be
    the ones the drafter was trained on. `device`/`dtype` move both (the target is loaded in `dtype` directly
    when its factory takes one). `meta` is the checkpoint's "specauf" entry plus path, global_step, epoch.
    """
    path = Path(path).expanduser()
    if path.is_dir() and (path / "config.json").is_file():  # an export from `python -m specauf.export`
        from specauf.export import load_exported_checkpoint

        return load_exported_checkpoint(path, target, device=device, dtype=dtype)
    path = checkpoint_file(path)
    try:
        # weights_only: a checkpoint from specauf.train holds tensors and plain containers only, and this
        # refuses to run code hidden in a pickle.
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle, EOF and storage errors all mean the same thing to the user
        detail = " ".join(str(err).split())[:200]
        raise CheckpointError(
            f"cannot read checkpoint {path}: the file is corrupt or truncated ({type(err).__name__}: {detail}). "
            "Fix: use another checkpoint of the run (e.g. an earlier step) or re-run the training"
        ) from err
    if not isinstance(checkpoint, dict) or "specauf" not in checkpoint:
        raise CheckpointError(
            f"{path} is not a specauf checkpoint (no 'specauf' entry). Fix: pass a .ckpt written by "
            "`python -m specauf.train` (its run directory's checkpoints/last.ckpt)"
        )
    meta = dict(checkpoint["specauf"])
    meta.update(path=str(path), global_step=checkpoint.get("global_step"), epoch=checkpoint.get("epoch"))

    try:
        cls = _import_qualname(meta["drafter_class"])
    except (ImportError, AttributeError) as err:
        raise CheckpointError(
            f"{path}: drafter class {meta['drafter_class']!r} cannot be imported ({err}). Fix: install the "
            "specauf version that trained it"
        ) from err
    drafter = cls(**meta["drafter_config"])
    prefix = "drafter."
    state = {k[len(prefix) :]: v for k, v in checkpoint.get("state_dict", {}).items() if k.startswith(prefix)}
    if not state:
        raise CheckpointError(f"{path}: the state_dict holds no '{prefix}*' weights; is the file complete?")
    try:
        drafter.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"{path}: the weights do not fit {type(drafter).__name__} ({str(err).splitlines()[0]}). "
            "Fix: load it with the specauf version that wrote it"
        ) from err

    if target is None:
        target_cfg = (meta.get("config") or {}).get("config", {}).get("target")
        if not target_cfg or "_target_" not in target_cfg:
            raise CheckpointError(
                f"{path}: the saved training config has no target section. Fix: build the target yourself "
                "and pass it (load_checkpoint(path, target=...))"
            )
        overrides = {}
        if dtype is not None and "dtype" in target_cfg:
            overrides["dtype"] = str(dtype).removeprefix("torch.")  # load in the wanted dtype directly
        target = instantiate(target_cfg, **overrides)
    if meta.get("target_name") is not None and target.name != meta["target_name"]:
        raise CheckpointError(
            f"{path}: the drafter was trained for target {meta['target_name']!r}, but the target is "
            f"{target.name!r}. Fix: evaluate it with the target it was trained on"
        )
    saved_layers = meta.get("target_layer_ids")
    if saved_layers and list(target.layer_ids) != list(saved_layers):
        raise CheckpointError(
            f"{path}: the drafter reads target layers {list(saved_layers)}, the target gives "
            f"{list(target.layer_ids)}. Fix: build the target with layer_ids={list(saved_layers)}"
        )
    placement = {k: v for k, v in (("device", device), ("dtype", dtype)) if v is not None}
    if placement:
        target.to(**placement)
        drafter.to(**placement)
    drafter.eval()
    return drafter, target, meta


# --- the entry point -------------------------------------------------------------------------------------


def resolve_device(device: str) -> torch.device:
    """`auto` → cuda if available, else cpu; anything else as given."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} but no CUDA GPU is visible. Fix: device=cpu (or device=auto)")
    return torch.device(device)


def evaluate(cfg: DictConfig) -> dict[str, Any]:
    """Load the checkpoint, run the suite, report (terminal, eval.json/eval.md, logger)."""
    device = resolve_device(cfg.device)
    dtype_name = cfg.dtype or ("bfloat16" if device.type == "cuda" else "float32")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype_name not in dtypes:
        raise UserError(
            f"dtype must be one of {', '.join(dtypes)} (or null for the default), got {dtype_name!r}"
        )
    torch.manual_seed(cfg.seed)
    drafter, target, meta = load_checkpoint(cfg.ckpt, device=device, dtype=dtypes[dtype_name])
    log.info(
        "drafter %s (step %s) for target %s", meta["drafter_class"], meta.get("global_step"), target.name
    )
    if cfg.run_name is None:
        trained = (meta.get("config") or {}).get("config", {}).get("run_name") or Path(cfg.ckpt).stem
        with open_dict(cfg):
            cfg.run_name = f"eval-{trained}"

    suite = instantiate(cfg.benchmarks)
    results = evaluate_suite(
        target,
        drafter,
        suite,
        temperature=cfg.temperature,
        top_p=cfg.top_p,
        seed=cfg.seed,
        ar_baseline=cfg.ar_baseline,
        out_dir=None,
        max_prompts=cfg.max_prompts,
    )
    results["checkpoint"] = {k: meta.get(k) for k in ("path", "global_step", "epoch", "target_name")}
    results["choices"] = (meta.get("config") or {}).get("choices")
    results["run_name"] = cfg.run_name
    out_dir = Path(cfg.out_dir)
    write_reports(results, out_dir)
    if not results["benchmarks"]:
        log.warning(
            "no benchmark was evaluated (benchmarks=%s)", HydraConfig.get().runtime.choices.get("benchmarks")
        )
    print_table(results)
    print(f"reports: {out_dir / 'eval.md'}, {out_dir / 'eval.json'}")
    _log_results(cfg, results)
    return results


def _log_results(cfg: DictConfig, results: dict[str, Any]) -> None:
    if not cfg.get("logger"):
        return
    logger = instantiate(cfg.logger)
    logger.log_hyperparams(
        {
            "eval": OmegaConf.to_container(cfg, resolve=True),
            "checkpoint": results["checkpoint"],
            "train_choices": results["choices"],
        }
    )
    logger.log_metrics(flat_metrics(results))
    experiment = getattr(logger, "experiment", None)
    if type(logger).__name__ == "WandbLogger" and experiment is not None:
        import wandb

        columns = [
            "benchmark",
            "n",
            "skipped",
            "tau",
            "alpha_1",
            "tokens_per_s",
            "ar_tokens_per_s",
            "speedup",
        ]
        rows = [
            [
                name,
                b["n"],
                b["skipped"],
                b["tau"],
                b["alpha"][0] if b["alpha"] else None,
                b["tokens_per_s"],
                b.get("ar_tokens_per_s"),
                b.get("speedup"),
            ]
            for name, b in results["benchmarks"].items()
        ]
        experiment.log({"eval/table": wandb.Table(columns=columns, data=rows)})
    logger.finalize("success")


@hydra.main(config_path="../conf", config_name="evaluate", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    multirun = HydraConfig.get().mode == RunMode.MULTIRUN
    try:
        return evaluate(cfg)["tau/avg"]
    except USER_ERRORS as err:
        if debug():
            raise
        print_user_error(err)
        if multirun:
            return None  # one bad run must not stop the rest of the sweep
        raise SystemExit(1) from None
    except Exception:
        if multirun:
            log.exception("evaluation failed; continuing with the rest of the sweep")
            return None
        raise
    finally:
        finish_wandb()


if __name__ == "__main__":
    main()
