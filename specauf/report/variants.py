"""Runs grouped into variants (one table row each) and aggregated over seeds: mean ± sample std."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from specauf.data.benchmarks import BENCHMARK_NAMES
from specauf.report.runs import Run, number

# Settings that never make two runs different variants: the seed (aggregated over) and bookkeeping.
NON_VARIANT_KEYS = {"seed", "resume", "run_name", "experiment_name", "backbone", "loss"}
NON_VARIANT_PREFIXES = ("hydra", "logger", "trainer.devices", "trainer.accelerator", "trainer.num_nodes")
NON_VARIANT_SUFFIXES = ("dir", "path", "file", "root", "ckpt")
DASH = "—"


def label_rank(entry: dict[str, Any], choice: str) -> tuple[Any, ...]:
    """Sort key of a backbone or loss from its labels: by `order`, then the unordered ones by name."""
    order = entry.get("order")
    return (order is None, order if order is not None else 0, str(entry.get("name", choice)), choice)


@dataclass
class Variant:
    """Runs that differ only in their seed: one row of the tables."""

    backbone: str
    loss: str
    extras: dict[str, str]
    runs: list[Run] = field(default_factory=list)
    # The labels of its first run (specauf.report.labels); the runs of a variant share their choices.
    labels: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def backbone_labels(self) -> dict[str, Any]:
        return self.labels.get("backbone") or {"name": self.backbone, "order": None}

    @property
    def loss_labels(self) -> dict[str, Any]:
        return self.labels.get("loss") or {"name": self.loss, "order": None}

    @property
    def backbone_name(self) -> str:
        return str(self.backbone_labels["name"])

    @property
    def label(self) -> str:
        name = str(self.loss_labels["name"])
        extra = ", ".join(f"{k}={v}" for k, v in self.extras.items())
        return f"{name} ({extra})" if extra else name

    @property
    def full_label(self) -> str:
        return f"{self.backbone_name} · {self.label}"

    @property
    def seeds(self) -> list[Any]:
        return sorted({r.seed for r in self.runs}, key=_seed_key)

    @property
    def block_sizes(self) -> list[int]:
        return sorted({r.block_size for r in self.runs if r.block_size is not None})

    @property
    def eval_runs(self) -> list[Run]:
        return [r for r in self.runs if r.has_eval and r.tau]

    def backbone_rank(self) -> tuple[Any, ...]:
        return label_rank(self.backbone_labels, self.backbone)

    def sort_key(self) -> tuple[Any, ...]:
        loss_rank = label_rank(self.loss_labels, self.loss)
        return (*self.backbone_rank(), *loss_rank, sorted(self.extras.items()))


def _seed_key(seed: Any) -> tuple[bool, float, str]:
    # Numeric order for numbers (2 before 10), anything else after them as text.
    value = number(seed)
    return (value is None, value or 0.0, str(seed))


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
        variant = variants.setdefault(part, Variant(run.backbone, run.loss, extras, labels=run.labels))
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


def stat(runs: Iterable[Run], get: Callable[[Run], float | None]) -> Stat:
    """The Stat of `get` over the runs that have a value for it."""
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

    @property
    def backbones(self) -> list[str]:
        """The backbones of the variants, in table order (their labels' order)."""
        ranks: dict[str, tuple[Any, ...]] = {}
        for v in self.variants:
            ranks.setdefault(v.backbone, v.backbone_rank())
        return sorted(ranks, key=ranks.__getitem__)

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
    # The paper's six first, in its column order; any other benchmark a run has (W&B keys, other harnesses)
    # gets a column after them rather than being dropped.
    extra = sorted(
        {b for r in finished for b in [*r.tau, *r.missing] if b not in BENCHMARK_NAMES and b != "*"}
    )
    return Report(
        source=source,
        title=title or "specauf report",
        runs=finished,
        failed=failed,
        variants=group_variants(finished),
        benchmarks=[*BENCHMARK_NAMES, *extra],
    )
