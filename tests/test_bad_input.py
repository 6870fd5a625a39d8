"""Bad input gets one clear line, not a traceback, and leaves nothing behind that looks like a result.

Extends tests/test_train.py::test_bad_input_fails_at_start_with_a_clear_message (unknown loss, missing data
file, missing target, typo key, missing gamma), tests/evaluation/test_suite.py (an overlong prompt) and
tests/data/; corrupt and foreign checkpoints are in test_loading.py, the resume and export refusals in
test_resume.py and test_export_layout.py.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException

from specauf.data.benchmarks import Benchmark, BenchmarkSuite
from specauf.data.module import ChatDataModule
from specauf.drafters.dflash import DFlashDrafter
from specauf.evaluation import evaluate_suite, markdown_report
from specauf.target import tiny_random
from tests.conftest import CONF, REPO, TINY, run_cli

TINY_TARGET = {"num_layers": 2, "hidden_size": 32, "intermediate_size": 64, "num_feature_layers": 1}
BENCH_FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmarks"


def data_module(tokenizer, source: Path) -> ChatDataModule:
    return ChatDataModule(tokenizer, 8, 0, source=str(source), max_length=96, num_anchors=4, batch_size=2,
                          val_size=2, min_supervised_tokens=4, cache=False)  # fmt: skip


def one_error_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("specauf: error:")]
    assert len(lines) == 1, stderr[-2000:]
    assert "Traceback" not in stderr
    return lines[0]


def assert_nothing_valid_left(run_dir: Path) -> None:
    """A failed run leaves a failed summary and its log, never a checkpoint or metrics that look like a run."""
    assert json.loads((run_dir / "summary.json").read_text())["status"] == "failed"
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "csv").exists()


# --- configuration ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "error", "text"),
    [
        ("foo=1", ConfigCompositionException, "foo"),
        ("trainer.max_stepz=5", ConfigCompositionException, "max_stepz"),
        ("guard.max_consecutive=3", ConfigCompositionException, "max_consecutive"),
        ("backbone=dflsh", ConfigCompositionException, "dflash"),  # the message lists the options
        ("data=sharegtp", ConfigCompositionException, "sharegpt"),
    ],
    ids=["unknown-key", "nested-typo", "guard-typo", "unknown-backbone", "unknown-data"],
)
def test_config_mistakes_fail_at_compose_time(override, error, text):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"), pytest.raises(error) as err:
        compose("train", overrides=[override])
    assert text in str(err.value) + str(err.value.__cause__)


def test_unknown_key_on_the_command_line_leaves_no_run_behind(tmp_path):
    run_dir = tmp_path / "run"
    proc = run_cli("specauf.train", *TINY, "guard.max_consecutiv=3", f"hydra.run.dir={run_dir}", cwd=REPO,
                   timeout=120)  # fmt: skip
    assert proc.returncode == 1
    assert "max_consecutiv" in proc.stderr and "Traceback" not in proc.stderr
    assert not run_dir.exists()


# --- data ---------------------------------------------------------------------------------------------------


def test_malformed_data_file_is_one_line_and_leaves_nothing(tmp_path, chat_file, isolated_cache):
    lines = chat_file.read_text().splitlines()
    lines[2] = lines[2][:40]  # a line cut mid-record
    broken = tmp_path / "broken.jsonl"
    broken.write_text("\n".join(lines) + "\n")
    run_dir = tmp_path / "run"
    proc = run_cli("specauf.train", *TINY, f"data.source={broken}", f"hydra.run.dir={run_dir}", cwd=REPO,
                   timeout=120)  # fmt: skip
    assert proc.returncode == 1
    line = one_error_line(proc.stderr)
    assert line.startswith(f"specauf: error: {broken}: line 3 is not valid JSON")
    assert_nothing_valid_left(run_dir)


def _unusable_chats(path: Path) -> Path:
    records = [
        {"messages": []},
        {"messages": [{"role": "user", "content": "hello?"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "   "}]},
        {"conversations": [{"from": "human", "value": "only a question"}]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in records * 5))
    return path


def test_no_usable_conversation_is_a_clear_error(tmp_path):
    target = tiny_random(**TINY_TARGET)
    source = _unusable_chats(tmp_path / "unusable.jsonl")
    with pytest.raises(ValueError, match=r"unusable\.jsonl: no usable conversations remain") as err:
        data_module(target.tokenizer, source).setup()
    assert "\n" not in str(err.value)


def test_no_usable_conversation_says_why(tmp_path):
    target = tiny_random(**TINY_TARGET)
    source = _unusable_chats(tmp_path / "unusable.jsonl")
    with pytest.raises(ValueError, match=r"no usable conversations remain.*no assistant turn"):
        data_module(target.tokenizer, source).setup()


def test_target_without_chat_template_is_named(chat_file):
    target = tiny_random(**TINY_TARGET)
    target.tokenizer.chat_template = None  # a base model's tokenizer
    with pytest.raises(
        ValueError, match=r"has no chat template, so assistant turns cannot be located\. Fix: use"
    ):
        data_module(target.tokenizer, chat_file).setup()


# --- evaluation ---------------------------------------------------------------------------------------------


def test_every_prompt_longer_than_the_context(caplog):
    # Extends test_evaluate's single overlong prompt: a benchmark with nothing left still reports, not crashes.
    target = tiny_random(**TINY_TARGET, max_position_embeddings=16)
    torch.manual_seed(0)
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=4)
    bench = Benchmark("gsm8k", n=3, max_new_tokens=4, data_dir=str(BENCH_FIXTURES), use_hub=False,
                      use_packages=False)  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="specauf.evaluation"):
        results = evaluate_suite(
            target, drafter, BenchmarkSuite(gsm8k=bench), ar_baseline=False, progress=False
        )
    gsm8k = results["benchmarks"]["gsm8k"]
    assert gsm8k["n"] == 0 and gsm8k["skipped"] == 3 and gsm8k["tau"] is None
    assert results["tau/avg"] is None and caplog.text.count("skipped") == 3
    assert "| gsm8k | 0 | 3 | – |" in markdown_report(results)
