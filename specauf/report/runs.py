"""Reading training runs: `summary.json` and `eval/eval.json` on disk, or a project's runs on W&B.

Reading never raises on one bad run: an unreadable or failed run becomes a Run with that status and its
error, so a report of a sweep still says which runs are missing and why.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from specauf.data.benchmarks import BENCHMARK_TITLES
from specauf.errors import UserError
from specauf.report.curves import read_curves
from specauf.report.labels import run_labels

if TYPE_CHECKING:
    from specauf.report.variants import Variant

# Spellings other tools use for the names in BENCHMARK_TITLES (W&B keys typed by hand, other harnesses).
ALIASES = {"math-500": "math500", "math_500": "math500", "mt-bench": "mt_bench", "mtbench": "mt_bench"}


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
    # "backbone" / "loss" → name, order (and for losses support, decay, form): see specauf.report.labels.
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)
    variant: Variant | None = None
    # metric → [(step, value)] of real τ and TF-τ over training (specauf.report.curves), when logged to CSV.
    curves: dict[str, list[tuple[int, float]]] = field(default_factory=dict)

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


def number(value: Any) -> float | None:
    """`value` as a float, or None for anything that is not a real number (bools, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value):
        return None
    return float(value)


def bench_key(name: str) -> str:
    key = name.strip().lower()
    return ALIASES.get(key, key)


def bench_title(key: str) -> str:
    """The column title of a benchmark; one the evaluator does not know (read from W&B, say) keeps its key."""
    return BENCHMARK_TITLES.get(key, key)


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
        minutes=number(summary.get("minutes")),
        metrics={k: v for k, x in (summary.get("metrics") or {}).items() if (v := number(x)) is not None},
    )
    eval_path = run_dir / "eval" / "eval.json"
    if eval_path.is_file():
        try:
            _read_eval_json(run, json.loads(eval_path.read_text(encoding="utf-8")))
        except (OSError, ValueError, AttributeError, TypeError) as err:
            run.missing["*"] = f"eval/eval.json unreadable: {err}"
    if not run.has_eval:
        _read_flat_eval(run, summary.get("eval") or {})
    # After eval.json: an old summary without block_size gets it from there, and the labels may need it.
    run.labels = run_labels(summary.get("labels"), run.choices, run.block_size)
    run.curves = read_curves(run_dir)
    return run


def _read_eval_json(run: Run, results: dict[str, Any]) -> None:
    run.has_eval = True
    run.temperature = number(results.get("temperature"))
    if run.block_size is None:
        run.block_size = results.get("block_size")
    if run.label_offset is None and results.get("next_token") is not None:
        run.label_offset = int(bool(results["next_token"]))
    for name, bench in (results.get("benchmarks") or {}).items():
        key = bench_key(name)
        if isinstance(bench.get("n"), int):
            run.n_prompts[key] = bench["n"]
        tau = number(bench.get("tau"))
        if tau is None:
            run.missing[key] = f"no τ recorded (n={bench.get('n')}, skipped prompts={bench.get('skipped')})"
        else:
            run.tau[key] = tau
        if (speedup := number(bench.get("speedup"))) is not None:
            run.speedup[key] = speedup
        if isinstance(bench.get("alpha"), list):
            run.alpha[key] = [number(a) for a in bench["alpha"]]
    for name, reason in (results.get("skipped_benchmarks") or {}).items():
        run.missing.setdefault(bench_key(name), str(reason).strip().splitlines()[0] if reason else "skipped")


def _read_flat_eval(run: Run, flat: dict[str, Any]) -> None:
    # summary.json's "eval" (and W&B summaries) hold eval/tau/<bench> scalars: τ but no α_k nor skip reasons.
    for key, value in flat.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] == "eval" and parts[2] != "avg" and (v := number(value)) is not None:
            if parts[1] == "tau":
                run.tau[bench_key(parts[2])] = v
                run.has_eval = True
            elif parts[1] == "speedup":
                run.speedup[bench_key(parts[2])] = v


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
                k: v for k, x in summary.items() if k.startswith("val/") and (v := number(x)) is not None
            },
        )
        _read_flat_eval(run, summary)
        labels = _plain(config.get("labels") or summary.get("labels"))
        run.labels = run_labels(labels, run.choices, run.block_size)
        runs.append(run)
    if not runs:
        raise UserError(f"no specauf training runs found in wandb:{spec}")
    return runs


def _plain(value: Any) -> Any:
    # W&B hands nested summary values back as its own dict-like type, not a Mapping.
    if hasattr(value, "items"):
        return {str(k): _plain(v) for k, v in value.items()}
    return value
