"""τ evaluation over a benchmark suite, checkpoint loading, and the `python -m specauf.evaluate` entry point."""

from __future__ import annotations

import json
import logging
from functools import partial
from pathlib import Path

import pytest
import torch

from specauf.data.benchmarks import Benchmark, BenchmarkSuite
from specauf.decoding import SpeculativeDecoder
from specauf.drafters.dflash import DFlashDrafter
from specauf.evaluate import (
    CheckpointError,
    acceptance_stats,
    chat_prompt_ids,
    evaluate_suite,
    flat_metrics,
    load_checkpoint,
    run_conversation,
)
from specauf.losses import AUF
from specauf.module import DrafterModule
from specauf.target import Target, tiny_random
from tests.conftest import REPO, run_cli

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "benchmarks"
TINY_TARGET = {
    "num_layers": 2,
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_feature_layers": 1,
    "seed": 0,
}


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


# --- evaluate_suite --------------------------------------------------------------------------------------


def test_acceptance_stats():
    hist, alpha = acceptance_stats([0, 1, 3, 3, 2], 3)
    assert hist == [1, 1, 1, 2]
    assert alpha == pytest.approx([4 / 5, 3 / 4, 2 / 3])
    assert acceptance_stats([0, 0], 2) == ([2, 0, 0], [0.0, None])  # nothing reached one accept


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
    with caplog.at_level(logging.WARNING, logger="specauf.evaluate"):
        results = evaluate_suite(short_target, drafter, suite, ar_baseline=False, progress=False)
    bench = results["benchmarks"]["gsm8k"]
    assert bench["skipped"] == len(too_long) and sorted(bench["skipped_uids"]) == too_long
    assert bench["n"] == 6 - len(too_long)
    for uid in too_long:
        assert f"gsm8k {uid}: skipped" in caplog.text


def test_next_token_drafter_reports_its_range(target):
    torch.manual_seed(0)
    drafter = DFlashDrafter.from_target(target, num_layers=1, block_size=4, label_offset=1)
    results = evaluate_suite(target, drafter, small_suite(gsm8k=(1, 6)), ar_baseline=False, progress=False)
    assert results["next_token"] is True and results["num_drafted"] == 4 and results["tau_max"] == 5
    assert len(results["benchmarks"]["gsm8k"]["histogram"]) == 5


# --- checkpoints -----------------------------------------------------------------------------------------


def save_checkpoint(path: Path, target: Target, drafter: DFlashDrafter) -> Path:
    """A checkpoint in the trainer's format, written by the module's own hook (as Lightning would)."""
    config = {"target": {"_target_": "specauf.target.tiny_random", **TINY_TARGET}, "run_name": "loss=auf"}
    module = DrafterModule(
        drafter, target, AUF(), partial(torch.optim.AdamW), run_config={"config": config, "choices": {}}
    )
    checkpoint = {"state_dict": module.state_dict(), "global_step": 7, "epoch": 0}
    module.on_save_checkpoint(checkpoint)
    torch.save(checkpoint, path)
    return path


def drafts(drafter: DFlashDrafter, target: Target) -> torch.Tensor:
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    ctx = drafter.context_kv(target.features(ids), torch.arange(5)[None])
    return drafter.draft(torch.tensor([9]), torch.tensor([5]), ctx, target.embed, target.lm_head_weight)


def test_checkpoint_round_trip(target, drafter, tmp_path):
    path = save_checkpoint(tmp_path / "last.ckpt", target, drafter)
    loaded, built_target, meta = load_checkpoint(path)
    assert type(loaded) is DFlashDrafter and loaded.config == drafter.config
    assert built_target.name == target.name and meta["global_step"] == 7
    for a, b in zip(loaded.state_dict().values(), drafter.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(drafts(loaded, built_target), drafts(drafter, target))
    # A given target is used as is; a run directory finds checkpoints/last.ckpt.
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    path.rename(tmp_path / "run" / "checkpoints" / "last.ckpt")
    _, same, _ = load_checkpoint(tmp_path / "run", target=target)
    assert same is target


def test_checkpoint_errors(target, drafter, tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*Fix"):
        load_checkpoint(tmp_path / "nope.ckpt")
    good = save_checkpoint(tmp_path / "good.ckpt", target, drafter).read_bytes()
    (tmp_path / "truncated.ckpt").write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"truncated\.ckpt: the file is corrupt or truncated"):
        load_checkpoint(tmp_path / "truncated.ckpt")
    (tmp_path / "garbage.ckpt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(tmp_path / "garbage.ckpt")
    torch.save({"state_dict": {}, "global_step": 1}, tmp_path / "lightning.ckpt")
    with pytest.raises(CheckpointError, match="not a specauf checkpoint"):
        load_checkpoint(tmp_path / "lightning.ckpt")
    other = tiny_random(**{**TINY_TARGET, "seed": 1})
    with pytest.raises(CheckpointError, match="trained for target"):
        load_checkpoint(tmp_path / "good.ckpt", target=other)


# --- the entry point (run as a user would: `python -m specauf.evaluate ...`) ---------------------------------


def test_cli_evaluates_a_checkpoint(target, drafter, tmp_path):
    ckpt = save_checkpoint(tmp_path / "last.ckpt", target, drafter)
    out = tmp_path / "eval"
    proc = run_cli(
        "specauf.evaluate", f"ckpt={ckpt}", "benchmarks=cpu", "logger=csv", f"hydra.run.dir={out}",
        f"benchmarks.data_dir={FIXTURES}", "benchmarks.gsm8k.max_new_tokens=6", "benchmarks.mt_bench.n=1",
        "benchmarks.mt_bench.max_new_tokens=6", "benchmarks.math500=null", "benchmarks.humaneval=null",
        "benchmarks.mbpp=null", "benchmarks.alpaca=null", "max_prompts=2", cwd=REPO,
        env={"OMP_NUM_THREADS": "1"},  # shared cores: one thread is faster for a tiny model
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((out / "eval.json").read_text())
    assert set(results["benchmarks"]) == {"gsm8k", "mt_bench"}
    assert results["benchmarks"]["gsm8k"]["n"] == 2 and results["benchmarks"]["mt_bench"]["n"] == 1
    assert results["run_name"] == "eval-loss=auf" and results["checkpoint"]["global_step"] == 7
    assert (out / "eval.md").exists()
    metrics = (out / "csv" / "metrics.csv").read_text()
    assert "eval/tau/avg" in metrics and "eval/tau/gsm8k" in metrics
    assert "gsm8k" in proc.stdout and "speedup" in proc.stdout  # the table


def test_cli_user_error_is_one_line(tmp_path):
    proc = run_cli(
        "specauf.evaluate", f"ckpt={tmp_path}/missing.ckpt", "logger=csv", f"hydra.run.dir={tmp_path}/out",
        cwd=REPO,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.startswith("specauf: error: no checkpoint at") and "Traceback" not in proc.stderr
