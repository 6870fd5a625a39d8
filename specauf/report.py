"""Paper-style ablation tables and plots from a sweep of training runs (Spec-AUF Table 1, DESIGN §1, §6, §7).

    python -m specauf.report multirun/auf_ablation/2026-01-01/12-00-00      tables + plots in <PATH>/report/
    python -m specauf.report PATH --out DIR --title "AUF ablation" --wandb   ... and log them to W&B
    python -m specauf.report wandb:ENTITY/PROJECT[/GROUP]                   read the runs from W&B (online)

Reads every `summary.json` under PATH (a Hydra multirun dir, a parent of several sweeps, or one run dir) and
the run's `eval/eval.json` when present. Runs that differ only in `seed` form one variant (row); τ per
benchmark and the validation metrics are given as mean ± std over seeds. Writes table.md, table.csv,
runs.csv, tau_per_benchmark.png, alpha_k.png and token_acc_vs_tau.png. Every number shown is read from the
inputs or is a mean/std of such numbers; missing data shows as "—" with a note saying why.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import netrc
import os
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from specauf.errors import UserError

# The six τ benchmarks in the paper's column order (DESIGN §7): eval.json key → column title.
BENCHMARKS = {
    "gsm8k": "GSM8K",
    "math500": "MATH-500",
    "humaneval": "HumanEval",
    "mbpp": "MBPP",
    "mt_bench": "MT-Bench",
    "alpaca": "Alpaca",
}
# Spellings other tools use for the same benchmarks (W&B keys typed by hand, other harnesses).
ALIASES = {"math-500": "math500", "math_500": "math500", "mt-bench": "mt_bench", "mtbench": "mt_bench"}
BACKBONES = {"dflash": "DFlash", "domino": "Domino"}
# Paper row order and names; losses not listed keep their config name and sort after these.
LOSSES = {
    "full_ce": "full CE",
    "decay": "decay only",
    "auf": "AUF",
    "auf_decay": "AUF + decay",
    "b_auf": "B-AUF",
    "s_auf": "S-AUF",
    "f_auf": "F-AUF",
    "b_auf_decay": "B-AUF + decay",
    "dpace": "D-PACE",
    "topk_alive": "top-k alive",
}
# Settings that never make two runs different variants: the seed (aggregated over) and bookkeeping.
NON_VARIANT_KEYS = {"seed", "resume", "run_name", "experiment_name", "backbone", "loss"}
NON_VARIANT_PREFIXES = ("hydra", "logger", "trainer.devices", "trainer.accelerator", "trainer.num_nodes")
NON_VARIANT_SUFFIXES = ("dir", "path", "file", "root", "ckpt")
METRICS = {  # summary.json metrics key → column name
    "val/token_acc": "token_acc",
    "val/tf_tau": "tf_tau",
    "val/loss": "val_loss",
    "val/active_ratio": "active_ratio",
}
OUTPUTS = (
    "table.md",
    "table.csv",
    "runs.csv",
    "tau_per_benchmark.png",
    "alpha_k.png",
    "token_acc_vs_tau.png",
)
DASH = "—"


# --- reading runs ----------------------------------------------------------------------------------------


@dataclass
class Run:
    """One training run as read from its summary.json (and eval/eval.json)."""

    path: str
    status: str
    error: str | None = None
    run_name: str | None = None
    choices: dict[str, str] = field(default_factory=dict)
    overrides: dict[str, str] = field(default_factory=dict)
    seed: int | None = None
    block_size: int | None = None
    label_offset: int | None = None
    steps: int | None = None
    minutes: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tau: dict[str, float] = field(default_factory=dict)  # benchmark → τ, only benchmarks with a number
    speedup: dict[str, float] = field(default_factory=dict)
    alpha: dict[str, list[float | None]] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # benchmark → why it has no τ
    n_prompts: dict[str, int] = field(default_factory=dict)
    temperature: float | None = None
    has_eval: bool = False
    variant: Variant | None = None

    @property
    def backbone(self) -> str:
        return str(self.choices.get("backbone", "?"))

    @property
    def loss(self) -> str:
        return str(self.choices.get("loss", "?"))

    @property
    def next_token(self) -> bool | None:
        return None if self.label_offset is None else self.label_offset == 1

    @property
    def tau_avg(self) -> float | None:
        """Mean τ over the benchmarks this run has a number for (the eval.json convention)."""
        return statistics.fmean(self.tau.values()) if self.tau else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def _bench_key(name: str) -> str:
    key = name.strip().lower()
    return ALIASES.get(key, key)


def _parse_overrides(items: Iterable[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        key = key.lstrip("+~")
        out[key] = value if sep else "(deleted)"
    return out


def read_run(summary_path: Path, root: Path) -> Run:
    """A Run from `<run>/summary.json` and, when present, `<run>/eval/eval.json`; never raises on bad files."""
    run_dir = summary_path.parent
    shown = _display_path(run_dir, root)
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
        if not isinstance(summary, dict):
            raise ValueError("not a JSON object")
    except (OSError, ValueError) as err:
        return Run(path=shown, status="unreadable", error=f"summary.json: {err}")
    if summary.get("status") != "finished":
        error = str(summary.get("error") or f"status {summary.get('status')!r}")
        return Run(path=shown, status="failed", error=error)
    run = Run(
        path=shown,
        status="finished",
        run_name=summary.get("run_name"),
        choices={k: str(v) for k, v in (summary.get("choices") or {}).items() if v is not None},
        overrides=_parse_overrides(summary.get("overrides") or []),
        seed=summary.get("seed"),
        block_size=summary.get("block_size"),
        label_offset=summary.get("label_offset"),
        steps=summary.get("steps"),
        minutes=_number(summary.get("minutes")),
        metrics={k: v for k, x in (summary.get("metrics") or {}).items() if (v := _number(x)) is not None},
    )
    eval_path = run_dir / "eval" / "eval.json"
    if eval_path.is_file():
        try:
            _read_eval_json(run, json.loads(eval_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, AttributeError, TypeError) as err:
            run.missing["*"] = f"eval/eval.json unreadable: {err}"
    if not run.has_eval:
        _read_flat_eval(run, summary.get("eval") or {})
    return run


def _read_eval_json(run: Run, results: dict[str, Any]) -> None:
    run.has_eval = True
    run.temperature = _number(results.get("temperature"))
    if run.block_size is None:
        run.block_size = results.get("block_size")
    if run.label_offset is None and results.get("next_token") is not None:
        run.label_offset = int(bool(results["next_token"]))
    for name, bench in (results.get("benchmarks") or {}).items():
        key = _bench_key(name)
        if isinstance(bench.get("n"), int):
            run.n_prompts[key] = bench["n"]
        tau = _number(bench.get("tau"))
        if tau is None:
            run.missing[key] = f"no τ recorded (n={bench.get('n')}, skipped prompts={bench.get('skipped')})"
        else:
            run.tau[key] = tau
        if (speedup := _number(bench.get("speedup"))) is not None:
            run.speedup[key] = speedup
        if isinstance(bench.get("alpha"), list):
            run.alpha[key] = [_number(a) for a in bench["alpha"]]
    for name, reason in (results.get("skipped_benchmarks") or {}).items():
        run.missing.setdefault(_bench_key(name), str(reason).strip().splitlines()[0] if reason else "skipped")


def _read_flat_eval(run: Run, flat: dict[str, Any]) -> None:
    # summary.json's "eval" (and W&B summaries) hold eval/tau/<bench> scalars: τ but no α_k nor skip reasons.
    for key, value in flat.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "eval" and parts[2] != "avg" and (v := _number(value)) is not None:
            if parts[1] == "tau":
                run.tau[_bench_key(parts[2])] = v
                run.has_eval = True
            elif parts[1] == "speedup":
                run.speedup[_bench_key(parts[2])] = v


def _display_path(run_dir: Path, root: Path) -> str:
    try:
        rel = run_dir.resolve().relative_to(root.resolve())
    except ValueError:
        return str(run_dir)
    return str(rel) if str(rel) != "." else str(run_dir)


def load_runs(path: Path) -> list[Run]:
    """Every run under `path` (found by its summary.json, at any depth), in path order."""
    if not path.exists():
        raise UserError(f"{path} does not exist")
    found = [path] if path.is_file() and path.name == "summary.json" else sorted(path.rglob("summary.json"))
    if not found:
        raise UserError(f"no runs found under {path} (looked for */summary.json)")
    root = path.parent if path.is_file() else path
    return [read_run(p, root) for p in found]


def load_wandb_runs(spec: str) -> list[Run]:
    """Runs of `ENTITY/PROJECT[/GROUP]` from the W&B API (needs network and `wandb login`).

    W&B holds each run's config (with `choices`) and summary scalars (val/*, eval/tau/*), not eval.json, so
    α_k and skip reasons are unavailable from this source.
    """
    parts = [p for p in spec.split("/") if p]
    if len(parts) not in (2, 3):
        raise UserError(f"wandb:{spec}: expected wandb:ENTITY/PROJECT or wandb:ENTITY/PROJECT/GROUP")
    try:
        import wandb

        api = wandb.Api(timeout=30)
        filters = {"group": parts[2]} if len(parts) == 3 else None
        fetched = list(api.runs(f"{parts[0]}/{parts[1]}", filters=filters))
    except Exception as err:  # any failure here (auth, network, unknown project) has the same remedy
        reason = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UserError(
            f"could not reach W&B for wandb:{spec} ({reason[:200]}); pass a local multirun directory instead"
        ) from err
    runs = []
    for wrun in fetched:
        config = dict(wrun.config)
        if "choices" not in config:
            continue  # not a specauf training run (e.g. an earlier report or an eval-only run)
        summary = dict(wrun.summary)
        backbone = config.get("backbone") or {}
        run = Run(
            path=wrun.url,
            status="finished" if wrun.state == "finished" else "failed",
            error=None if wrun.state == "finished" else f"W&B state {wrun.state!r}",
            run_name=wrun.name,
            choices={k: str(v) for k, v in config["choices"].items() if v is not None},
            seed=config.get("seed"),
            block_size=backbone.get("block_size"),
            label_offset=backbone.get("label_offset"),
            steps=summary.get("trainer/global_step"),
            metrics={
                k: v for k, x in summary.items() if k.startswith("val/") and (v := _number(x)) is not None
            },
        )
        _read_flat_eval(run, summary)
        runs.append(run)
    if not runs:
        raise UserError(f"no specauf training runs found in wandb:{spec}")
    return runs


# --- variants and aggregation ----------------------------------------------------------------------------


@dataclass
class Variant:
    """Runs that differ only in their seed: one row of the tables."""

    backbone: str
    loss: str
    extras: dict[str, str]
    runs: list[Run] = field(default_factory=list)

    @property
    def label(self) -> str:
        name = LOSSES.get(self.loss, self.loss)
        extra = ", ".join(f"{k}={v}" for k, v in self.extras.items())
        return f"{name} ({extra})" if extra else name

    @property
    def full_label(self) -> str:
        return f"{BACKBONES.get(self.backbone, self.backbone)} · {self.label}"

    @property
    def seeds(self) -> list[Any]:
        return sorted({r.seed for r in self.runs}, key=_seed_key)

    @property
    def block_sizes(self) -> list[int]:
        return sorted({r.block_size for r in self.runs if r.block_size is not None})

    @property
    def eval_runs(self) -> list[Run]:
        return [r for r in self.runs if r.has_eval and r.tau]

    def sort_key(self) -> tuple[Any, ...]:
        order = list(LOSSES)
        loss_rank = order.index(self.loss) if self.loss in order else len(order)
        backbone_rank = list(BACKBONES).index(self.backbone) if self.backbone in BACKBONES else len(BACKBONES)
        return (backbone_rank, self.backbone, loss_rank, self.loss, sorted(self.extras.items()))


def _seed_key(seed: Any) -> tuple[bool, float, str]:
    # Numeric order for numbers (2 before 10), anything else after them as text.
    number = _number(seed)
    return (number is None, number or 0.0, str(seed))


def _is_variant_key(key: str) -> bool:
    leaf = key.rsplit(".", 1)[-1].rsplit("/", 1)[-1].lower()
    return (
        key not in NON_VARIANT_KEYS
        and not key.startswith(NON_VARIANT_PREFIXES)
        and not leaf.endswith(NON_VARIANT_SUFFIXES)
    )


def group_variants(runs: Sequence[Run]) -> list[Variant]:
    """Group finished runs into variants: (backbone, loss) plus every other setting that differs between runs.

    A differing setting that is implied by the others (an `experiment` preset that always goes with one
    backbone) is left out of the labels: it would split no row.
    """
    settings = [{**r.overrides, **r.choices} for r in runs]  # a choice wins over its own override's text
    keys = sorted({k for s in settings for k in s if _is_variant_key(k)})
    differing = [k for k in keys if len({s.get(k) for s in settings}) > 1]
    base = [(r.backbone, r.loss) for r in runs]

    def partition(cols: list[str]) -> list[tuple[Any, ...]]:
        return [(*b, *(s.get(k) for k in cols)) for b, s in zip(base, settings, strict=True)]

    kept = list(differing)
    for key in differing:
        others = [k for k in kept if k != key]
        if len(set(partition(others))) == len(set(partition([*others, key]))):
            kept = others
    variants: dict[tuple[Any, ...], Variant] = {}
    for run, part, s in zip(runs, partition(kept), settings, strict=True):
        extras = {k: s[k] for k in kept if s.get(k) is not None}
        variant = variants.setdefault(part, Variant(run.backbone, run.loss, extras))
        variant.runs.append(run)
        run.variant = variant
    for variant in variants.values():
        variant.runs.sort(key=lambda r: (_seed_key(r.seed), r.path))
    return sorted(variants.values(), key=Variant.sort_key)


@dataclass
class Stat:
    """Mean ± sample std (n−1) of some runs' values; std is None with fewer than two values."""

    values: list[float]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return statistics.fmean(self.values) if self.values else None

    @property
    def std(self) -> float | None:
        return statistics.stdev(self.values) if len(self.values) >= 2 else None

    def text(self, digits: int) -> str:
        if not self.values:
            return DASH
        mean = f"{self.mean:.{digits}f}"
        return mean if self.std is None else f"{mean} ± {self.std:.{digits}f}"


def _stat(runs: Iterable[Run], get: Callable[[Run], float | None]) -> Stat:
    return Stat([v for r in runs if (v := get(r)) is not None])


@dataclass
class Report:
    """Everything the outputs are made from."""

    source: str
    title: str
    runs: list[Run]  # finished
    failed: list[Run]  # failed or unreadable
    variants: list[Variant]
    benchmarks: list[str]  # table columns: the six, then any other benchmark found

    @property
    def block_sizes(self) -> list[int]:
        return sorted({r.block_size for r in self.runs if r.block_size is not None})

    def tau_axis_label(self) -> str:
        sizes = "/".join(str(b) for b in self.block_sizes) or "?"
        mixed = ", ranges differ" if len(self.block_sizes) > 1 or self._mixed_alignment() else ""
        return f"τ (avg emitted length, B={sizes}{mixed})"

    def _mixed_alignment(self) -> bool:
        return len({r.next_token for r in self.runs}) > 1


def build_report(runs: Sequence[Run], source: str, title: str | None = None) -> Report:
    """Split finished from failed runs, group variants, and fix the benchmark columns."""
    finished = [r for r in runs if r.status == "finished"]
    failed = [r for r in runs if r.status != "finished"]
    extra = sorted({b for r in finished for b in [*r.tau, *r.missing] if b not in BENCHMARKS and b != "*"})
    return Report(
        source=source,
        title=title or "specauf report",
        runs=finished,
        failed=failed,
        variants=group_variants(finished),
        benchmarks=[*BENCHMARKS, *extra],
    )


# --- tables ----------------------------------------------------------------------------------------------


def _bench_title(key: str) -> str:
    return BENCHMARKS.get(key, key)


def _tau_range(block_size: int | None, next_token: bool | None) -> str:
    if block_size is None or next_token is None:
        return "?"
    return f"[1, {block_size + 1 if next_token else block_size}]"


def _run_name(run: Run) -> str:
    label = run.variant.full_label if run.variant else run.path
    return f"{label}, seed {run.seed} (`{run.path}`)"


def _common(values: Iterable[Any]) -> Any:
    distinct = set(values)
    return distinct.pop() if len(distinct) == 1 else None


def _caption(report: Report, runs: list[Run]) -> list[str]:
    """What the τ numbers of these runs mean: B, alignment, decoding, prompts per benchmark."""
    lines = []
    by_shape: dict[tuple[Any, Any], list[Run]] = {}
    for r in runs:
        by_shape.setdefault((r.block_size, r.next_token), []).append(r)
    if len(by_shape) == 1:
        (block, nt), _ = next(iter(by_shape.items()))
        kind = "next-token (drafts B tokens)" if nt else "same-position (drafts B−1 tokens)"
        if nt is None:
            kind = "alignment unknown"
        lines.append(f"Block size B={block}, {kind}: τ ∈ {_tau_range(block, nt)}.")
    else:
        parts = []
        for (block, nt), members in sorted(by_shape.items(), key=str):
            rows = sorted({m.variant.label for m in members if m.variant})
            kind = "next-token" if nt else "same-position"
            parts.append(f"B={block} {kind}, τ ∈ {_tau_range(block, nt)}: {', '.join(rows)}")
        lines.append(
            "**Mixed block sizes / alignments in this table; τ ranges differ, compare rows with care:** "
            + "; ".join(parts)
            + "."
        )
    with_eval = [r for r in runs if r.has_eval]
    temps = {r.temperature for r in with_eval if r.temperature is not None}
    if temps:
        decoding = ", ".join("greedy" if t == 0 else f"T={t:g}" for t in sorted(temps))
        lines.append(f"Decoding: {decoding}{' (mixed!)' if len(temps) > 1 else ''}.")
    counts = {r.n_prompts.get(b) for r in with_eval for b in r.tau if r.n_prompts.get(b) is not None}
    per_bench = {
        b: sorted({r.n_prompts[b] for r in with_eval if b in r.n_prompts}) for b in report.benchmarks
    }
    if len(counts) == 1:
        lines.append(f"{counts.pop()} prompts per benchmark.")
    elif counts:
        text = ", ".join(f"{_bench_title(b)} {'/'.join(map(str, n))}" for b, n in per_bench.items() if n)
        mixed = any(len(n) > 1 for n in per_bench.values())
        lines.append(f"Prompts per benchmark: {text}{' (differs between runs)' if mixed else ''}.")
    return lines


def _md_row(cells: Iterable[str]) -> str:
    # A "|" inside a label (an override value) would split the cell.
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _best(cells: list[Stat], digits: int) -> set[int]:
    """Rows whose mean, as printed, is the column's highest; none when every row ties (nothing to show)."""
    shown = {i: round(c.mean, digits) for i, c in enumerate(cells) if c.mean is not None}
    if len(shown) < 2 or len(set(shown.values())) == 1:
        return set()
    top = max(shown.values())
    return {i for i, m in shown.items() if m == top}


def tau_table(report: Report, variants: list[Variant]) -> list[str]:
    """The paper's table for one backbone: τ per benchmark, avg, token accuracy and TF τ, best in bold."""
    benches = report.benchmarks
    header = ["loss", "seeds", *map(_bench_title, benches), "avg", "token acc", "TF τ"]
    columns: list[list[str]] = []
    stats: list[list[Stat]] = []
    for v in variants:
        ev = v.eval_runs
        row = [_stat(ev, lambda r, b=b: r.tau.get(b)) for b in benches]
        row.append(_stat(ev, lambda r: r.tau_avg))
        row.append(_stat(v.runs, lambda r: r.metrics.get("val/token_acc")))
        row.append(_stat(v.runs, lambda r: r.metrics.get("val/tf_tau")))
        stats.append(row)
    same_cover = len({frozenset(r.tau) for v in variants for r in v.eval_runs}) <= 1
    comparable = len({(r.block_size, r.next_token) for v in variants for r in v.runs}) == 1
    bold: set[tuple[int, int]] = set()
    if comparable:
        for j in range(len(benches) + 3):
            if j == len(benches) and not same_cover:
                continue  # averages over different benchmark sets are not ranked
            digits = 3 if j == len(benches) + 1 else 2
            bold |= {(i, j) for i in _best([row[j] for row in stats], digits)}
    for i, (v, row) in enumerate(zip(variants, stats, strict=True)):
        n_eval = len(v.eval_runs)
        seeds = str(len(v.seeds))
        if len(v.runs) != len(v.seeds):
            seeds += f" ({len(v.runs)} runs)"
        if n_eval != len(v.runs):
            seeds += f" ({n_eval} with τ)"
        cells = []
        for j, s in enumerate(row):
            text = s.text(3 if j == len(benches) + 1 else 2)
            expected = n_eval if j <= len(benches) else len(v.runs)
            if s.values and s.n < expected:
                text += f" (n={s.n})"
            cells.append(f"**{text}**" if (i, j) in bold else text)
        columns.append([v.label, seeds, *cells])
    lines = ["| " + " | ".join(header) + " |", "|---|---:|" + "---:|" * (len(header) - 2)]
    lines += [_md_row(c) for c in columns]
    return lines


def summary_table(report: Report) -> list[str]:
    """One compact row per variant: the headline numbers and what they were measured on."""
    has_speedup = any(r.speedup for r in report.runs)
    header = ["variant", "B", "τ range", "seeds", "τ avg", "token acc", "TF τ", "val loss", "active ratio"]
    header += ["speedup"] if has_speedup else []
    header += ["steps", "minutes"]
    lines = ["| " + " | ".join(header) + " |", "|---|---:|---|---|" + "---:|" * (len(header) - 4)]
    for v in report.variants:
        nts = {r.next_token for r in v.runs}
        ranges = sorted({_tau_range(r.block_size, r.next_token) for r in v.runs})
        cells = [
            v.full_label,
            "/".join(map(str, v.block_sizes)) or "?",
            "/".join(ranges) + (" (next-token)" if nts == {True} else ""),
            ", ".join(map(str, v.seeds)),
            _stat(v.eval_runs, lambda r: r.tau_avg).text(2),
            _stat(v.runs, lambda r: r.metrics.get("val/token_acc")).text(3),
            _stat(v.runs, lambda r: r.metrics.get("val/tf_tau")).text(2),
            _stat(v.runs, lambda r: r.metrics.get("val/loss")).text(3),
            _stat(v.runs, lambda r: r.metrics.get("val/active_ratio")).text(3),
        ]
        if has_speedup:
            cells.append(
                _stat(v.runs, lambda r: statistics.fmean(r.speedup.values()) if r.speedup else None).text(2)
            )
        cells += [_stat(v.runs, lambda r: r.steps).text(0), _stat(v.runs, lambda r: r.minutes).text(1)]
        lines.append(_md_row(cells))
    return lines


# The Spec-AUF paper's three claims, checked wherever a report has the variants they compare.
AUF_LOSSES = ("auf", "b_auf", "s_auf", "f_auf")
WITH_DECAY = {"auf": "auf_decay", "b_auf": "b_auf_decay"}


def _by_seed(variant: Variant, get: Callable[[Run], float | None]) -> dict[Any, float]:
    """seed → value, for seeds with exactly one run that has the value (a paired comparison needs one)."""
    out: dict[Any, list[float]] = {}
    for r in variant.runs:
        if (v := get(r)) is not None:
            out.setdefault(r.seed, []).append(v)
    return {seed: vals[0] for seed, vals in out.items() if len(vals) == 1}


def _difference(
    a: Variant, b: Variant, get: Callable[[Run], float | None]
) -> tuple[float, float | None, str]:
    """mean(b) − mean(a), twice its standard error (None under 2 seeds each), and 'b higher in k of n seeds'."""
    sa, sb = _stat(a.runs, get), _stat(b.runs, get)
    delta = (sb.mean or 0.0) - (sa.mean or 0.0)
    two_se = (
        2 * math.sqrt(sa.std**2 / sa.n + sb.std**2 / sb.n)
        if sa.std is not None and sb.std is not None
        else None
    )
    pa, pb = _by_seed(a, get), _by_seed(b, get)
    seeds = [s for s in pa if s in pb]
    higher = sum(pb[s] > pa[s] for s in seeds)
    return delta, two_se, f"{higher} of {len(seeds)} seed{'s' if len(seeds) != 1 else ''}"


def _signed(x: float, digits: int = 3) -> str:
    text = f"{x:+.{digits}f}"
    # A difference that rounds to zero reads "+0.000" either way, not "-0.000".
    return f"+{text[1:]}" if float(text) == 0 else text


def _within_noise(delta: float, two_se: float | None) -> bool:
    """|delta| ≤ 2 SE; False with no noise estimate (under 2 seeds per variant)."""
    return two_se is not None and abs(delta) <= two_se


def _noise(delta: float, two_se: float | None) -> str:
    return ", within noise" if _within_noise(delta, two_se) else ""


def claims(report: Report) -> list[str]:
    """Bullets answering the paper's claims for each backbone whose variants allow it (else nothing):

    1. AUF beats decay-only on τ, per benchmark; 2. decay is inert under AUF (AUF + decay ≈ AUF);
    3. decay-only has the higher token accuracy. Differences are mean(B) − mean(A) over seeds; "within
    noise" means |difference| ≤ 2 standard errors of the difference (needs ≥ 2 seeds per variant).
    """
    out: list[str] = []
    index = {(v.backbone, v.loss, tuple(sorted(v.extras.items()))): v for v in report.variants}
    for (backbone, loss, extras), auf in index.items():
        if loss not in AUF_LOSSES:
            continue
        name = BACKBONES.get(backbone, backbone)
        decay = index.get((backbone, "decay", extras))
        both = [b for b in report.benchmarks if _stat(auf.eval_runs, lambda r, b=b: r.tau.get(b)).n]
        if decay is not None and decay.eval_runs:
            both = [b for b in both if _stat(decay.eval_runs, lambda r, b=b: r.tau.get(b)).n]
            per = []
            wins = 0
            for b in both:
                delta, two_se, seeds = _difference(decay, auf, lambda r, b=b: r.tau.get(b))
                wins += delta > 0
                per.append(f"{_bench_title(b)} {_signed(delta)} (higher in {seeds}{_noise(delta, two_se)})")
            delta, two_se, seeds = _difference(decay, auf, lambda r: r.tau_avg)
            noise = "" if two_se is None else f" ± {two_se:.3f} (2 SE)"
            out.append(
                f"**{name}: {auf.label} vs decay only, τ.** {auf.label} has the higher mean τ on {wins} of "
                f"{len(both)} benchmarks; avg τ {_signed(delta)}{noise}, higher in {seeds}. Per benchmark: "
                + "; ".join(per)
                + "."
            )
        if decay is not None:
            acc = lambda r: r.metrics.get("val/token_acc")  # noqa: E731
            delta, two_se, seeds = _difference(auf, decay, acc)
            sa, sd = _stat(auf.runs, acc), _stat(decay.runs, acc)
            if sa.n and sd.n:
                if _within_noise(delta, two_se):
                    verdict = "no clear difference in"
                else:
                    verdict = (
                        "decay only has the higher" if delta > 0 else f"{auf.label} has the higher (or equal)"
                    )
                out.append(
                    f"**{name}: token accuracy.** {verdict} token accuracy: decay only {sd.text(3)} vs "
                    f"{auf.label} {sa.text(3)} ({_signed(delta)}{_noise(delta, two_se)}, decay higher in "
                    f"{seeds})."
                )
        paired = index.get((backbone, WITH_DECAY.get(loss, ""), extras))
        if paired is not None and paired.eval_runs and auf.eval_runs:
            delta, two_se, seeds = _difference(auf, paired, lambda r: r.tau_avg)
            if two_se is None:
                verdict = "one seed: no noise estimate"
            elif _within_noise(delta, two_se):
                verdict = f"within noise (2 SE = {two_se:.3f}): decay looks inert under {auf.label}"
            else:
                verdict = f"outside noise (2 SE = {two_se:.3f}): decay is not inert under {auf.label}"
            out.append(
                f"**{name}: is decay inert under {auf.label}?** avg τ of {paired.label} minus {auf.label}: "
                f"{_signed(delta)}, {verdict} ({paired.label} higher in {seeds})."
            )
    return out


def _notes(report: Report) -> list[str]:
    """Footnotes: missing benchmarks and why, what each average covers, runs without τ, conventions."""
    notes = [
        "Mean ± std over seeds (sample std, n−1; shown only with ≥ 2 seeds). `(n=k)`: only k runs of the "
        "row have this number. Token acc = teacher-forced accuracy on the full block (`val/token_acc`); "
        "TF τ = teacher-forced acceptance length, 1 + leading hits per block (`val/tf_tau`). Best mean per "
        "column in bold (only among rows with the same B and alignment).",
    ]
    with_eval = [r for r in report.runs if r.has_eval and r.tau]
    for b in report.benchmarks:
        lacking = [r for r in with_eval if b not in r.tau]
        if not lacking:
            continue
        reasons: dict[str, int] = {}
        for r in lacking:
            reason = r.missing.get(b) or r.missing.get("*") or "not in this run's evaluation"
            reasons[reason] = reasons.get(reason, 0) + 1
        why = "; ".join(f"{reason} ({n} run{'s' if n > 1 else ''})" for reason, n in reasons.items())
        notes.append(
            f"{DASH} {_bench_title(b)}: no τ in {len(lacking)} of {len(with_eval)} evaluated runs: {why}."
        )
    covers: dict[frozenset[str], list[Run]] = {}
    for r in with_eval:
        covers.setdefault(frozenset(r.tau), []).append(r)

    def describe(bset: frozenset[str]) -> str:
        names = ", ".join(_bench_title(b) for b in report.benchmarks if b in bset)
        return f"{len(bset)} benchmark{'s' if len(bset) != 1 else ''} ({names})"

    if len(covers) == 1:
        notes.append(
            f"avg = mean τ over the benchmarks with data; every average here covers {describe(next(iter(covers)))}."
        )
    elif covers:
        groups = "; ".join(
            f"{describe(bset)}: " + ", ".join(_run_name(r) for r in members)
            for bset, members in sorted(covers.items(), key=lambda kv: -len(kv[0]))
        )
        notes.append(
            "**Averages cover different benchmark sets, so the avg column is not directly comparable "
            f"across these runs** (avg = mean τ over the benchmarks each run has): {groups}."
        )
    no_eval = [r for r in report.runs if not (r.has_eval and r.tau)]
    if no_eval:
        notes.append(
            f"{len(no_eval)} run{'s' if len(no_eval) > 1 else ''} without τ evaluation (no eval/eval.json with "
            "τ, no eval/tau/* in summary.json): their validation metrics count, they have no τ: "
            + ", ".join(_run_name(r) for r in no_eval)
            + "."
        )
    for v in report.variants:
        if len(v.runs) != len(v.seeds):
            notes.append(
                f"{v.full_label}: {len(v.runs)} runs for {len(v.seeds)} seeds; every run is averaged."
            )
    return notes


def markdown_report(report: Report) -> str:
    """table.md: one τ table per backbone, the per-variant summary, notes, failed runs, the plots."""
    n_eval = sum(1 for r in report.runs if r.has_eval and r.tau)
    lines = [
        f"# {report.title}",
        "",
        f"Source: `{report.source}`: {len(report.runs) + len(report.failed)} runs, {len(report.runs)} finished "
        f"({n_eval} with τ evaluation), {len(report.failed)} failed.",
    ]
    common = [(g, _common(r.choices.get(g) for r in report.runs)) for g in ("target", "data", "experiment")]
    if report.runs and (text := ", ".join(f"{g} `{c}`" for g, c in common if c)):
        lines.append(f"Common settings: {text}.")
    backbones = sorted({v.backbone for v in report.variants}, key=lambda b: (b not in BACKBONES, b))
    if len(backbones) > 1:
        lines += [
            "",
            "This report mixes backbones: DFlash is same-position (τ ∈ [1, B]) and Domino next-token "
            "(τ ∈ [1, B + 1]); each has its own table.",
        ]
    for backbone in backbones:
        variants = [v for v in report.variants if v.backbone == backbone]
        runs = [r for v in variants for r in v.runs]
        lines += ["", f"## τ per benchmark: {BACKBONES.get(backbone, backbone)}", ""]
        lines += [
            " ".join(
                [
                    "τ = average emitted length per verification cycle (accepted drafts + 1), mean over "
                    "prompts; mean ± std over seeds.",
                    *_caption(report, runs),
                ]
            ),
            "",
        ]
        lines += tau_table(report, variants)
    if found := claims(report):
        lines += ["", "## The paper's claims, checked on these runs", "", *(f"- {c}" for c in found)]
        lines += [
            "",
            'Differences are mean over seeds of the second variant minus the first; "within noise": '
            "|difference| ≤ 2 standard errors of the difference (seed-to-seed spread, ≥ 2 seeds each).",
        ]
    if report.variants:
        lines += ["", "## Per-variant summary", "", *summary_table(report)]
    else:
        lines += ["", "No finished runs: nothing to tabulate."]
    lines += ["", "## Notes", ""] + [f"- {n}" for n in _notes(report)]
    if report.failed:
        lines += ["", f"## Failed runs ({len(report.failed)})", ""]
        for r in report.failed:
            error = (r.error or "").strip().splitlines()
            # The last line of a traceback names the exception; a one-line error is its own summary.
            lines.append(f"- `{r.path}` ({r.status}): {error[-1][:300] if error else 'no error recorded'}")
    if report.variants:
        lines += ["", "## Plots", ""]
        lines += [f"![{name}]({name}.png)" for name in ("tau_per_benchmark", "alpha_k", "token_acc_vs_tau")]
    return "\n".join(lines) + "\n"


def variant_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    """table.csv: one row per variant; empty cells where there is no data."""
    cols = [
        "variant",
        "backbone",
        "loss",
        "settings",
        "block_size",
        "next_token",
        "n_seeds",
        "seeds",
        "n_runs",
    ]
    cols += ["n_runs_with_tau"]
    for b in [*report.benchmarks, "avg"]:
        cols += [f"tau_{b}_mean", f"tau_{b}_std", f"tau_{b}_n"]
    cols += ["tau_avg_benchmarks"]
    for name in [*METRICS.values(), "speedup_avg", "steps", "minutes"]:
        cols += [f"{name}_mean", f"{name}_std"]
    rows = []
    for v in report.variants:
        ev = v.eval_runs
        row: list[Any] = [
            v.full_label,
            v.backbone,
            v.loss,
            ";".join(f"{k}={x}" for k, x in v.extras.items()),
            "/".join(map(str, v.block_sizes)),
            "/".join(sorted({str(r.next_token) for r in v.runs})),
            len(v.seeds),
            " ".join(map(str, v.seeds)),
            len(v.runs),
            len(ev),
        ]
        for b in report.benchmarks:
            s = _stat(ev, lambda r, b=b: r.tau.get(b))
            row += [s.mean, s.std, s.n]
        s = _stat(ev, lambda r: r.tau_avg)
        row += [s.mean, s.std, s.n, "/".join(sorted({str(len(r.tau)) for r in ev}))]
        getters: list[Callable[[Run], Any]] = [lambda r, k=k: r.metrics.get(k) for k in METRICS]
        getters += [
            lambda r: statistics.fmean(r.speedup.values()) if r.speedup else None,
            lambda r: r.steps,
            lambda r: r.minutes,
        ]
        for get in getters:
            s = _stat(v.runs, get)
            row += [s.mean, s.std]
        rows.append(row)
    return cols, rows


def run_rows(report: Report) -> tuple[list[str], list[list[Any]]]:
    """runs.csv: one row per run, failed ones included (with their error's last line)."""
    cols = [
        "run_dir",
        "status",
        "run_name",
        "variant",
        "backbone",
        "loss",
        "seed",
        "block_size",
        "next_token",
    ]
    cols += ["steps", "minutes", *(f"tau_{b}" for b in report.benchmarks), "tau_avg", "n_benchmarks"]
    cols += [*METRICS.values(), "speedup_avg", "error"]
    rows = []
    for r in [*report.runs, *report.failed]:
        finished = r.status == "finished"
        rows.append(
            [
                r.path,
                r.status,
                r.run_name,
                r.variant.full_label if r.variant else None,
                r.choices.get("backbone"),
                r.choices.get("loss"),
                r.seed,
                r.block_size,
                r.next_token,
                r.steps,
                r.minutes,
                *(r.tau.get(b) for b in report.benchmarks),
                r.tau_avg,
                len(r.tau) if finished else None,
                *(r.metrics.get(k) for k in METRICS),
                statistics.fmean(r.speedup.values()) if r.speedup else None,
                (r.error or "").strip().splitlines()[-1][:500] if r.error else None,
            ]
        )
    return cols, rows


def _csv_text(cols: list[str], rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(cols)
    for row in rows:
        # 12 significant digits: no visible rounding, but 2.85 rather than the float noise 2.8499999999999996.
        writer.writerow(["" if x is None else float(f"{x:.12g}") if isinstance(x, float) else x for x in row])
    return buf.getvalue()


# --- plots -----------------------------------------------------------------------------------------------


def _colors(report: Report) -> dict[int, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(report.variants) <= 10 else "tab20"]
    return {id(v): cmap(i % cmap.N) for i, v in enumerate(report.variants)}


def _new_figure(width: float, height: float) -> Any:
    # The object API with an explicit Agg canvas: no pyplot state, no GUI backend, whatever the caller uses.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _no_data(fig: Any, title: str, why: str) -> None:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, fontsize=11, color="0.3")


def plot_tau_per_benchmark(report: Report, fig: Any) -> None:
    """Grouped bars: τ per benchmark (and avg), one bar per variant, error bars = std over seeds."""
    title = f"{report.title}: τ per benchmark (mean ± std over seeds)"
    if not any(v.eval_runs for v in report.variants):
        _no_data(fig, title, "No run has a τ evaluation (eval/eval.json): nothing to plot.")
        return
    ax = fig.add_subplot()
    groups = [*report.benchmarks, "avg"]
    colors = _colors(report)
    n = len(report.variants)
    width = 0.8 / n
    top = 0.0
    for i, v in enumerate(report.variants):
        get: list[Callable[[Run], float | None]] = [lambda r, b=b: r.tau.get(b) for b in report.benchmarks]
        stats = [_stat(v.eval_runs, g) for g in [*get, lambda r: r.tau_avg]]
        for j, s in enumerate(stats):
            x = j + (i - (n - 1) / 2) * width
            if s.mean is None:
                # Say "no data" where the bar would be, rather than leaving a gap that reads as τ = 0.
                ax.text(x, 0.05, "no data", rotation=90, ha="center", va="bottom", fontsize=7, color="0.45")
                continue
            if s.n < len(v.eval_runs):  # fewer seeds than the rest of this variant's bars: say so
                ax.text(x, s.mean + (s.std or 0) + 0.03, f"n={s.n}", ha="center", va="bottom", fontsize=7)
            ax.bar(
                x,
                s.mean,
                width * 0.95,
                yerr=s.std,
                capsize=2,
                color=colors[id(v)],
                hatch="//" if groups[j] == "avg" else None,
                edgecolor="white" if groups[j] != "avg" else "0.2",
                label=v.full_label if j == 0 or not any(t.values for t in stats[:j]) else None,
            )
            top = max(top, s.mean + (s.std or 0))
    ax.set_xticks(range(len(groups)), [_bench_title(b) if b != "avg" else "avg" for b in groups])
    ax.axvline(len(groups) - 1.5, color="0.7", lw=0.8, ls="--")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")  # τ = 1: every draft rejected
    ax.set_ylim(0, top * 1.15 + 0.1)
    ax.set_ylabel(report.tau_axis_label())
    ax.set_xlabel("benchmark (avg = mean over the benchmarks each run has)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(n, 3), loc="upper left", framealpha=0.9)


def _run_alpha(run: Run) -> list[float | None]:
    """α_k of one run: the mean over its benchmarks at each k (benchmarks with no cycle reaching k−1 skipped)."""
    curves = list(run.alpha.values())
    length = max((len(c) for c in curves), default=0)
    out: list[float | None] = []
    for k in range(length):
        vals = [c[k] for c in curves if k < len(c) and c[k] is not None]
        out.append(statistics.fmean(vals) if vals else None)
    return out


def plot_alpha(report: Report, fig: Any) -> None:
    """α_k per draft position, one line per variant (mean over benchmarks, then over seeds; band = std)."""
    title = f"{report.title}: conditional acceptance α_k per draft position"
    if not any(r.alpha for r in report.runs):
        _no_data(fig, title, "No run has α_k (they come from eval/eval.json): nothing to plot.")
        return
    ax = fig.add_subplot()
    colors = _colors(report)
    longest = 0
    for v in report.variants:
        curves = [c for r in v.runs if r.alpha and (c := _run_alpha(r))]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        longest = max(longest, length)
        ks, means, stds = [], [], []
        for k in range(length):
            s = Stat([c[k] for c in curves if k < len(c) and c[k] is not None])
            if s.mean is not None:
                ks.append(k + 1)
                means.append(s.mean)
                stds.append(s.std or 0.0)
        ax.plot(
            ks,
            means,
            marker="o",
            ms=3.5,
            lw=1.6,
            color=colors[id(v)],
            label=f"{v.full_label} (n={len(curves)})",
        )
        if len(curves) >= 2:
            lo = [m - s for m, s in zip(means, stds, strict=True)]
            hi = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(ks, lo, hi, color=colors[id(v)], alpha=0.15, lw=0)
    ax.set_xticks(range(1, longest + 1))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("draft position k")
    ax.set_ylabel("α_k = #(accepted ≥ k) / #(accepted ≥ k−1)")
    ax.set_title(
        f"{textwrap.fill(title, 110)}\n(mean over benchmarks, then seeds; band = std over seeds)", fontsize=10
    )
    ax.grid(alpha=0.3)
    # α_k falls with k, so the top right corner is the emptiest.
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9)


def plot_token_acc_vs_tau(report: Report, fig: Any) -> None:
    """One point per run: teacher-forced token accuracy (x) against τ avg (y), coloured by variant."""
    title = f"{report.title}: token accuracy vs τ (one point per run)"
    points = [r for r in report.runs if r.tau_avg is not None and "val/token_acc" in r.metrics]
    if not points:
        _no_data(fig, title, "No run has both val/token_acc and a τ evaluation: nothing to plot.")
        return
    ax = fig.add_subplot()
    colors = _colors(report)
    markers = {"dflash": "o", "domino": "s"}
    for v in report.variants:
        mine = [r for r in points if r.variant is v]
        if not mine:
            continue
        xs = [r.metrics["val/token_acc"] for r in mine]
        ys = [r.tau_avg for r in mine]
        ax.scatter(
            xs,
            ys,
            s=46,
            color=colors[id(v)],
            marker=markers.get(v.backbone, "D"),
            label=v.full_label,
            edgecolors="0.2",
            linewidths=0.5,
            zorder=3,
        )
        for r, x, y in zip(mine, xs, ys, strict=True):
            ax.annotate(
                f"s{r.seed}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color="0.35"
            )
    ax.set_xlabel("token accuracy (teacher-forced, full block: val/token_acc)")
    ax.set_ylabel(report.tau_axis_label() + "\nmean over benchmarks")
    left_out = len(report.runs) - len(points)
    # In the title, not inside the axes, where it could cover a point.
    ax.set_title(
        # Wrapped: this figure is narrower than the others and a report title can be long.
        textwrap.fill(title, 70)
        + (f"\n({left_out} finished run(s) without τ or token acc not shown)" if left_out else ""),
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, framealpha=0.9)


# --- writing ---------------------------------------------------------------------------------------------


def _write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    # A reader (or a crash) never sees half a file: write a sibling temp file, then rename over.
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_text(path: Path, text: str) -> None:
    _write_atomic(path, lambda p: p.write_text(text, encoding="utf-8"))


def write_report(report: Report, out_dir: Path) -> dict[str, Path]:
    """Write the six outputs (OUTPUTS) to `out_dir`; returns name → path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {name: out_dir / name for name in OUTPUTS}
    _write_text(paths["table.md"], markdown_report(report))
    _write_text(paths["table.csv"], _csv_text(*variant_rows(report)))
    _write_text(paths["runs.csv"], _csv_text(*run_rows(report)))
    width = max(9.0, 1.2 * (len(report.benchmarks) + 1) * max(1.0, len(report.variants) / 3))
    plots: list[tuple[str, Callable[[Report, Any], None], tuple[float, float]]] = [
        ("tau_per_benchmark.png", plot_tau_per_benchmark, (min(width, 20.0), 5.5)),
        ("alpha_k.png", plot_alpha, (9.0, 5.5)),
        ("token_acc_vs_tau.png", plot_token_acc_vs_tau, (8.0, 6.0)),
    ]
    for name, plot, size in plots:
        fig = _new_figure(*size)
        plot(report, fig)
        fig.tight_layout()
        _write_atomic(paths[name], lambda p, fig=fig: fig.savefig(p, format="png"))
    return paths


def _wandb_mode() -> str | None:
    """None (let wandb read WANDB_MODE) when set; else online only if logged in, so reports never prompt."""
    if os.environ.get("WANDB_MODE"):
        return None
    if os.environ.get("WANDB_API_KEY"):
        return "online"
    host = urlparse(os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")).hostname
    try:
        logged_in = netrc.netrc().authenticators(host or "api.wandb.ai") is not None
    except (OSError, netrc.NetrcParseError):
        logged_in = False
    return "online" if logged_in else "offline"


def log_to_wandb(report: Report, paths: dict[str, Path], project: str, group: str | None) -> str:
    """Log table.csv and runs.csv as wandb.Tables and the PNGs as wandb.Images to a new run; returns where."""
    import wandb

    run = None
    try:
        run = wandb.init(
            project=project,
            group=group,
            job_type="report",
            name=f"report: {report.title}",
            dir=str(paths["table.md"].parent),
            mode=_wandb_mode(),
            config={"source": report.source, "runs": len(report.runs), "failed": len(report.failed)},
        )
        payload: dict[str, Any] = {}
        for key, (cols, rows) in {"variants": variant_rows(report), "runs": run_rows(report)}.items():
            payload[f"report/{key}"] = wandb.Table(columns=cols, data=rows)
        for name in ("tau_per_benchmark", "alpha_k", "token_acc_vs_tau"):
            payload[f"report/{name}"] = wandb.Image(str(paths[f"{name}.png"]))
        run.log(payload)
        offline = run.settings.mode == "offline" or bool(getattr(run, "offline", False))
        return (
            f"W&B (offline, upload later with `wandb sync {Path(run.dir).parent}`)"
            if offline
            else f"W&B: {run.url}"
        )
    finally:
        if run is not None:
            wandb.finish()


# --- CLI -------------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m specauf.report",
        description="Paper-style τ tables (markdown + CSV) and plots from a sweep of specauf training runs.",
    )
    p.add_argument(
        "path", help="a Hydra multirun dir, a parent of several, one run dir, or wandb:ENTITY/PROJECT[/GROUP]"
    )
    p.add_argument("--out", type=Path, help="output dir (default: PATH/report)")
    p.add_argument("--title", help="title of the tables and plots")
    p.add_argument("--wandb", action="store_true", help="also log the tables and plots to a new W&B run")
    p.add_argument(
        "--wandb-project",
        help="W&B project for that run (default: the source's, else specauf); implies --wandb",
    )
    p.add_argument("--wandb-group", help="W&B group for that run; implies --wandb")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `python -m specauf.report`; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except UserError as err:
        if os.environ.get("SPECAUF_DEBUG"):
            raise
        print(f"specauf: error: {err}", file=sys.stderr)
        return 1


def _run(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markdown import Markdown

    if args.path.startswith("wandb:"):
        spec = args.path.removeprefix("wandb:")
        runs = load_wandb_runs(spec)
        out = args.out or Path("reports") / ("wandb-" + spec.strip("/").replace("/", "-"))
        default_project, default_group = spec.split("/")[1], [*spec.split("/"), None][2]
    else:
        path = Path(args.path).expanduser()
        runs = load_runs(path)
        out = args.out or (path if path.is_dir() else path.parent) / "report"
        default_project, default_group = "specauf", None
    report = build_report(runs, args.path, args.title)
    paths = write_report(report, out)
    console = Console()
    if not console.is_terminal:  # piped into a log: rich would assume 80 columns and squeeze the table
        console = Console(width=200)
    console.print(Markdown(markdown_report(report)))
    console.print(f"wrote {', '.join(str(paths[n]) for n in OUTPUTS)}")
    if args.wandb or args.wandb_project or args.wandb_group:
        where = log_to_wandb(
            report, paths, args.wandb_project or default_project, args.wandb_group or default_group
        )
        console.print(f"logged the tables and plots to {where}")
    if not report.runs:
        print(
            f"specauf: error: all {len(report.failed)} runs under {args.path} failed (see {paths['table.md']})",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
