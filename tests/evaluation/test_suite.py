"""`specauf.evaluation`: real τ over a benchmark suite (offline fixtures), multi-turn prompts, skips."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from specauf.data.benchmarks import Benchmark, BenchmarkSuite
from specauf.decoding import SpeculativeDecoder
from specauf.drafters.dflash import DFlashDrafter
from specauf.evaluation import chat_prompt_ids, evaluate_suite, flat_metrics, run_conversation
from specauf.target import Target, tiny_random
from tests.checkpoints import TINY_TARGET

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "benchmarks"


@pytest.fixture(autouse=True)
def _no_env_data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SPECAUF_DATA_DIR", raising=False)


@pytest.fixture(scope="module")
def target() -> Target:
    return tiny_random(**TINY_TARGET)


@pytest.fixture(scope="module")
def drafter(target: Target) -> DFlashDrafter:
    torch.manual_seed(0)
    return DFlashDrafter.from_target(target, num_layers=1, block_size=4, init_std=0.2)


def offline(name: str, n: int, max_new_tokens: int) -> Benchmark:
    return Benchmark(
        name, n=n, max_new_tokens=max_new_tokens, data_dir=str(FIXTURES), use_hub=False, use_packages=False
    )


def small_suite(**benchmarks: tuple[int, int]) -> BenchmarkSuite:
    return BenchmarkSuite(**{name: offline(name, n, new) for name, (n, new) in benchmarks.items()})


def test_evaluate_suite_metrics_and_reports(target, drafter, tmp_path):
    suite = small_suite(gsm8k=(2, 12), mt_bench=(2, 8))
    results = evaluate_suite(target, drafter, suite, out_dir=tmp_path, progress=False)
    assert results["block_size"] == 4 and results["num_drafted"] == 3 and results["next_token"] is False
    assert results["tau_max"] == 4
    for name, b in results["benchmarks"].items():
        assert b["n"] == 2 and b["skipped"] == 0, name
        assert 1.0 <= b["tau"] <= 4.0
        assert sum(b["histogram"]) == b["num_cycles"] > 0
        assert all(a is None or 0.0 <= a <= 1.0 for a in b["alpha"]) and len(b["alpha"]) == 3
        assert b["tokens_per_s"] > 0 and b["ar_tokens_per_s"] > 0 and b["speedup"] > 0
        assert b["greedy_mismatches"] == 0  # fp32 CPU: speculative == autoregressive greedy
        assert b["decoded_tokens"] == b["new_tokens"] - b["n"] * (2 if name == "mt_bench" else 1)
    taus = [b["tau"] for b in results["benchmarks"].values()]
    assert results["tau/avg"] == pytest.approx(sum(taus) / 2)

    flat = flat_metrics(results)
    assert set(flat) == {
        "eval/tau/gsm8k", "eval/tau/mt_bench", "eval/tau/avg",
        "eval/speedup/gsm8k", "eval/speedup/mt_bench", "eval/speedup/avg",
    }  # fmt: skip
    assert json.loads((tmp_path / "eval.json").read_text())["benchmarks"]["gsm8k"]["n"] == 2
    md = (tmp_path / "eval.md").read_text()
    assert "| benchmark | n | skipped | τ | tokens/s | AR tokens/s | speedup |" in md
    assert "| gsm8k | 2 | 0 |" in md and "| α_3 |" in md
    assert not list(tmp_path.glob(".eval*"))  # no temp files left behind


def test_mt_bench_second_turn_sees_the_first_answer(target, drafter):
    (prompt,) = small_suite(mt_bench=(1, 8)).load()["mt_bench"]
    assert len(prompt.turns) == 2
    decoder = SpeculativeDecoder(target, drafter)
    turns = run_conversation(decoder, prompt, 8, limit=None)
    assert len(turns) == 2
    (ids1, first), (ids2, second) = turns
    answer = target.tokenizer.decode(first.tokens, skip_special_tokens=True)
    expected = chat_prompt_ids(
        target.tokenizer,
        [
            {"role": "user", "content": prompt.turns[0]},
            {"role": "assistant", "content": answer},
            {"role": "user", "content": prompt.turns[1]},
        ],
    )
    assert ids2 == expected and ids2[: len(ids1)] == ids1
    # Both turns' cycles count for the prompt.
    results = evaluate_suite(target, drafter, small_suite(mt_bench=(1, 8)), ar_baseline=False, progress=False)
    bench = results["benchmarks"]["mt_bench"]
    assert bench["num_cycles"] == first.num_cycles + second.num_cycles
    assert bench["tau"] == pytest.approx((first.num_decoded + second.num_decoded) / bench["num_cycles"])
    assert "speedup" not in bench and results["speedup/avg"] is None


def test_overlong_prompt_is_skipped_and_counted(target, drafter, caplog):
    suite = small_suite(gsm8k=(6, 4))
    prompts = suite.load()["gsm8k"]
    lengths = {p.uid: len(chat_prompt_ids(target.tokenizer, [{"role": "user", "content": p.turns[0]}]))
               for p in prompts}  # fmt: skip
    # A context that fits the shorter prompts and their 4 new tokens, not the longer ones.
    cut = sorted(lengths.values())[3]
    short_target = tiny_random(**TINY_TARGET, max_position_embeddings=cut + 4)
    too_long = sorted(uid for uid, n in lengths.items() if n > cut)
    assert too_long
    with caplog.at_level(logging.WARNING, logger="specauf.evaluation"):
        results = evaluate_suite(short_target, drafter, suite, ar_baseline=False, progress=False)
    bench = results["benchmarks"]["gsm8k"]
    assert bench["skipped"] == len(too_long) and sorted(bench["skipped_uids"]) == too_long
    assert bench["n"] == 6 - len(too_long)
    for uid in too_long:
        assert f"gsm8k {uid}: skipped" in caplog.text


@pytest.mark.parametrize("batch_size", [2, 5])
def test_batched_evaluation_equals_batch_one(target, drafter, batch_size):
    # Multi-turn (MT-Bench's turn 2 after each prompt's own turn 1) and single-turn, spec and AR batched.
    suite = small_suite(gsm8k=(3, 12), mt_bench=(2, 8))
    one = evaluate_suite(target, drafter, suite, progress=False)
    many = evaluate_suite(target, drafter, suite, progress=False, batch_size=batch_size)
    assert many["batch_size"] == batch_size
    for name, b in one["benchmarks"].items():
        m = many["benchmarks"][name]
        for key in ("n", "tau", "histogram", "new_tokens", "decoded_tokens", "greedy_mismatches"):
            assert m[key] == b[key], (name, key)
        assert m["tokens_per_s"] > 0 and m["speedup"] > 0


def test_batched_evaluation_skips_overlong_prompts(target, drafter):
    suite = small_suite(gsm8k=(6, 4))
    lengths = sorted(
        len(chat_prompt_ids(target.tokenizer, [{"role": "user", "content": p.turns[0]}]))
        for p in suite.load()["gsm8k"]
    )
    short_target = tiny_random(**TINY_TARGET, max_position_embeddings=lengths[3] + 4)
    one = evaluate_suite(short_target, drafter, suite, ar_baseline=False, progress=False)
    many = evaluate_suite(short_target, drafter, suite, ar_baseline=False, progress=False, batch_size=4)
    assert many["benchmarks"]["gsm8k"]["skipped_uids"] == one["benchmarks"]["gsm8k"]["skipped_uids"]
    assert many["benchmarks"]["gsm8k"]["tau"] == one["benchmarks"]["gsm8k"]["tau"]


def test_next_token_drafter_reports_its_range(target):
    torch.manual_seed(0)
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=4, label_offset=1)
    results = evaluate_suite(target, drafter, small_suite(gsm8k=(1, 6)), ar_baseline=False, progress=False)
    assert results["next_token"] is True and results["num_drafted"] == 4 and results["tau_max"] == 5
    assert len(results["benchmarks"]["gsm8k"]["histogram"]) == 5
