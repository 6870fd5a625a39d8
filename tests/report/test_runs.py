"""specauf.report.runs: reading summary.json and eval/eval.json into Runs, and the benchmark columns."""

from __future__ import annotations

import json
from pathlib import Path

from specauf import report as rep
from specauf.data.benchmarks import BENCHMARK_NAMES, BENCHMARK_TITLES
from tests.report.fakes import SIX, TAU, write_run


def test_summary_json_fixture_is_what_the_report_reads(sweep: Path) -> None:
    # Guards the fakes: the report must see the failed run's error from its summary.json.
    summary = json.loads((sweep / "5" / "summary.json").read_text())
    run = rep.read_run(sweep / "5" / "summary.json", sweep)
    assert run.status == "failed" and run.error == summary["error"]


def test_fakes_name_the_evaluators_benchmarks() -> None:
    # The fakes write eval.json keys as the evaluator does; a renamed benchmark must show up here first.
    assert SIX == BENCHMARK_NAMES


def test_benchmark_spellings_and_unknown_benchmarks(tmp_path: Path) -> None:
    write_run(tmp_path / "0", "auf", 0, TAU[("auf", 0)])
    eval_path = tmp_path / "0" / "eval" / "eval.json"
    results = json.loads(eval_path.read_text())
    benches = results["benchmarks"]
    benches["MT-Bench"] = benches.pop("mt_bench")  # another harness's spelling of a known benchmark
    benches["my_bench"] = {**benches["gsm8k"], "tau": 1.9}  # one the evaluator does not know
    eval_path.write_text(json.dumps(results))
    run = rep.read_run(tmp_path / "0" / "summary.json", tmp_path)
    assert run.tau["mt_bench"] == TAU[("auf", 0)][4] and run.tau["my_bench"] == 1.9
    report = rep.build_report([run], str(tmp_path))
    # The paper's six in the evaluator's order, then the unknown one, titled by its key.
    assert report.benchmarks == [*BENCHMARK_NAMES, "my_bench"]
    header = next(line for line in rep.markdown_report(report).splitlines() if line.startswith("| loss"))
    titles = [c.strip() for c in header.strip("|").split("|")][2:-3]
    assert titles == [*(BENCHMARK_TITLES[b] for b in BENCHMARK_NAMES), "my_bench"]
