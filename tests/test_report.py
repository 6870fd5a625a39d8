"""specauf.report over fake multirun dirs: tables, CSVs, plots, failed/missing runs, CLI errors."""

from __future__ import annotations

import csv
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from specauf import report as rep

REPO = Path(__file__).resolve().parents[1]
SIX = ("gsm8k", "math500", "humaneval", "mbpp", "mt_bench", "alpaca")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
ALPACA_REASON = "no offline copy of alpaca (set SPECAUF_BENCH_DIR or benchmarks.alpaca.source)"

# τ per benchmark for each (loss, seed): AUF above decay-only everywhere, as in the paper.
TAU = {
    ("auf", 0): [2.5, 2.6, 3.1, 3.0, 2.2, 2.1],
    ("auf", 1): [2.7, 2.8, 3.3, 3.2, 2.4, 2.3],
    ("decay", 0): [2.2, 2.3, 2.8, 2.8, 2.0, 2.0],
    ("decay", 1): [2.4, 2.5, 3.0, 2.9, 2.1, 2.0],
}
TOKEN_ACC = {("auf", 0): 0.40, ("auf", 1): 0.42, ("decay", 0): 0.50, ("decay", 1): 0.54, ("decay", 2): 0.52}
TOKEN_ACC.update({("auf_decay", 0): 0.41, ("auf_decay", 1): 0.43})


def write_run(
    run_dir: Path,
    loss: str,
    seed: int,
    taus: list[float] | None,
    *,
    skip_alpaca: bool = False,
    backbone: str = "dflash",
    extra_overrides: tuple[str, ...] = (),
) -> None:
    """A finished run's summary.json and (when `taus` is given) eval/eval.json, shaped like the real ones."""
    run_dir.mkdir(parents=True)
    block, offset = 16, int(backbone == "domino")
    summary = {
        "status": "finished",
        "run_name": f"loss={loss},seed={seed}",
        "run_dir": str(run_dir),
        "choices": {
            "target": "smollm2_135m",
            "backbone": backbone,
            "loss": loss,
            "data": "sharegpt",
            "experiment": "auf_ablation",
            "logger": "csv",
            "hydra/launcher": "basic",
        },
        "overrides": [
            f"loss={loss}",
            f"seed={seed}",
            "trainer.devices=1",
            f"hydra.run.dir=/tmp/x{seed}",
            *extra_overrides,
        ],
        "block_size": block,
        "label_offset": offset,
        "seed": seed,
        "steps": 100,
        "minutes": 1.5,
        "checkpoint": str(run_dir / "checkpoints" / "last.ckpt"),
        "metrics": {
            "val/token_acc": TOKEN_ACC[(loss, seed)],
            "val/tf_tau": 1.5 + seed / 10,
            "val/loss": 3.0,
            "val/active_ratio": 0.3,
        },
    }
    if taus is not None:
        benches = {}
        for name, tau in zip(SIX, taus, strict=True):
            if name == "alpaca" and skip_alpaca:
                continue
            d = block - 1 + offset
            alpha = [round(0.35 + 0.15 * tau - 0.04 * k, 3) for k in range(d - 2)] + [None, None]
            benches[name] = {
                "n": 4,
                "tau": tau,
                "histogram": [1] * (d + 1),
                "alpha": alpha,
                "tokens_per_s": 10.0,
                "speedup": tau / 1.5,
                "source": f"file:/data/{name}",
            }
        present = [t for n, t in zip(SIX, taus, strict=True) if n in benches]
        results = {
            "target": "smollm2_135m",
            "drafter": "DFlashDrafter",
            "block_size": block,
            "num_drafted": block - 1 + offset,
            "next_token": bool(offset),
            "tau_max": block + offset,
            "temperature": 0.0,
            "benchmarks": benches,
            "tau/avg": sum(present) / len(present),
            "skipped_benchmarks": {"alpaca": ALPACA_REASON} if skip_alpaca else {},
        }
        (run_dir / "eval").mkdir()
        (run_dir / "eval" / "eval.json").write_text(json.dumps(results))
        summary["eval"] = {f"eval/tau/{n}": b["tau"] for n, b in benches.items()}
    (run_dir / "summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def sweep(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 variants × 2 seeds (AUF seed 1 without Alpaca), a decay run without eval, a failed run (read-only)."""
    root = tmp_path_factory.mktemp("sweep") / "multirun"
    write_run(root / "0", "auf", 0, TAU[("auf", 0)])
    write_run(root / "1", "auf", 1, TAU[("auf", 1)], skip_alpaca=True)
    write_run(root / "2", "decay", 0, TAU[("decay", 0)])
    write_run(root / "3", "decay", 1, TAU[("decay", 1)])
    write_run(root / "4", "decay", 2, None)
    (root / "5").mkdir()
    (root / "5" / "summary.json").write_text(
        json.dumps({"status": "failed", "error": "Traceback...\nRuntimeError: CUDA out of memory"})
    )
    return root


@pytest.fixture(scope="module")
def made(sweep: Path) -> Path:
    """The report of `sweep`, made once for the tests that read it."""
    assert rep.main([str(sweep), "--title", "AUF ablation"]) == 0
    return sweep / "report"


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def _table_rows(md: str) -> list[list[str]]:
    """Cells of the first markdown table (the τ table), header first."""
    lines = md.split("## τ per benchmark")[1].split("\n## ")[0].splitlines()
    return [
        [c.strip() for c in line.strip("|").split("|")]
        for line in lines
        if line.startswith("|") and "---" not in line
    ]


def test_variants_and_seeds(sweep: Path) -> None:
    report = rep.build_report(rep.load_runs(sweep), str(sweep))
    assert [v.loss for v in report.variants] == ["decay", "auf"]  # paper order, not alphabetical
    assert [len(v.runs) for v in report.variants] == [3, 2]
    # experiment/logger/hydra/trainer.devices are equal or bookkeeping: no extra settings in the labels.
    assert all(v.extras == {} for v in report.variants)
    assert len(report.failed) == 1 and report.failed[0].path == "5"


def test_table_md_shape_and_values(made: Path) -> None:
    md = (made / "table.md").read_text()
    header, *rows = _table_rows(md)
    assert header == [
        "loss",
        "seeds",
        "GSM8K",
        "MATH-500",
        "HumanEval",
        "MBPP",
        "MT-Bench",
        "Alpaca",
        "avg",
        "token acc",
        "TF τ",
    ]
    assert [r[0] for r in rows] == ["decay only", "AUF"]  # one row per variant
    decay, auf = rows
    assert decay[1] == "3 (2 with τ)" and auf[1] == "2"
    # GSM8K: decay mean(2.2, 2.4) = 2.30, sample std 0.141; AUF mean(2.5, 2.7) = 2.60 (best, bold).
    assert decay[2] == "2.30 ± 0.14"
    assert auf[2] == "**2.60 ± 0.14**"
    # Alpaca: only AUF seed 0 has it.
    assert auf[7].strip("*") == "2.10 (n=1)"
    # Token accuracy over all three decay runs (the one without eval counts): mean 0.52, std 0.02.
    assert decay[9] == "**0.520 ± 0.020**"
    auf_avgs = [statistics.fmean(TAU[("auf", 0)]), statistics.fmean(TAU[("auf", 1)][:5])]
    assert auf[8] == f"{statistics.fmean(auf_avgs):.2f} ± {statistics.stdev(auf_avgs):.2f}"
    assert "Block size B=16, same-position" in md and "τ ∈ [1, 16]" in md and "greedy" in md
    assert "4 prompts per benchmark" in md


def test_notes_failed_and_missing(made: Path) -> None:
    md = (made / "table.md").read_text()
    assert "## Failed runs (1)" in md and "`5` (failed): RuntimeError: CUDA out of memory" in md
    assert f"— Alpaca: no τ in 1 of 4 evaluated runs: {ALPACA_REASON}" in md
    assert "Averages cover different benchmark sets" in md
    assert "5 benchmarks (GSM8K, MATH-500, HumanEval, MBPP, MT-Bench): DFlash · AUF, seed 1" in md
    assert "1 run without τ evaluation" in md and "DFlash · decay only, seed 2 (`4`)" in md
    assert "1 failed" in md


def test_csvs(made: Path) -> None:
    table = _csv(made / "table.csv")
    assert [r["loss"] for r in table] == ["decay", "auf"]
    decay, auf = table
    assert decay["n_seeds"] == "3" and decay["n_runs_with_tau"] == "2"
    for i, bench in enumerate(SIX):
        vals = [TAU[("decay", 0)][i], TAU[("decay", 1)][i]]
        assert float(decay[f"tau_{bench}_mean"]) == pytest.approx(statistics.fmean(vals), abs=1e-5)
        assert float(decay[f"tau_{bench}_std"]) == pytest.approx(statistics.stdev(vals), abs=1e-5)
    assert auf["tau_alpaca_n"] == "1" and auf["tau_alpaca_std"] == ""  # one value: no std, not 0
    assert auf["tau_avg_benchmarks"] == "5/6"
    assert float(decay["token_acc_mean"]) == pytest.approx(0.52)
    runs = _csv(made / "runs.csv")
    assert len(runs) == 6
    by_dir = {r["run_dir"]: r for r in runs}
    assert by_dir["5"]["status"] == "failed" and "out of memory" in by_dir["5"]["error"]
    assert by_dir["4"]["tau_avg"] == "" and by_dir["4"]["token_acc"] == "0.52"
    assert by_dir["1"]["tau_alpaca"] == "" and by_dir["1"]["n_benchmarks"] == "5"
    assert float(by_dir["0"]["tau_avg"]) == pytest.approx(statistics.fmean(TAU[("auf", 0)]))


def test_pngs_are_real(made: Path) -> None:
    for name in ("tau_per_benchmark.png", "alpha_k.png", "token_acc_vs_tau.png"):
        data = (made / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 20_000, name
    assert not list(made.glob(".*"))  # no temp files left behind


def test_alpha_mean_skips_none() -> None:
    run = rep.Run(path="x", status="finished", alpha={"a": [0.8, 0.6, None], "b": [0.6, None, None]})
    assert rep._run_alpha(run) == [pytest.approx(0.7), pytest.approx(0.6), None]


def test_consistent_coverage_and_mixed_backbones(tmp_path: Path) -> None:
    write_run(tmp_path / "a" / "0", "auf", 0, TAU[("auf", 0)], skip_alpaca=True)
    write_run(tmp_path / "b" / "0", "decay", 0, TAU[("decay", 0)], skip_alpaca=True, backbone="domino")
    report = rep.build_report(rep.load_runs(tmp_path), str(tmp_path))
    md = rep.markdown_report(report)
    assert "every average here covers 5 benchmarks" in md and "Alpaca: no τ in 2 of 2" in md
    assert "## τ per benchmark: DFlash" in md and "## τ per benchmark: Domino" in md
    assert "next-token (drafts B tokens): τ ∈ [1, 17]" in md
    rows = [line for line in md.split("## Per-variant summary")[0].splitlines() if line.startswith("| ")]
    assert rows and not any("±" in line for line in rows)  # one seed each: no std anywhere


def test_differing_override_splits_variants(tmp_path: Path) -> None:
    write_run(tmp_path / "0", "auf", 0, TAU[("auf", 0)])
    write_run(tmp_path / "1", "auf", 1, TAU[("auf", 1)], extra_overrides=("backbone.num_layers=2",))
    report = rep.build_report(rep.load_runs(tmp_path), str(tmp_path))
    assert sorted(v.label for v in report.variants) == ["AUF", "AUF (backbone.num_layers=2)"]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    env.pop("WANDB_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "specauf.report", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_empty_dir_is_one_line_error(tmp_path: Path) -> None:
    proc = _cli(str(tmp_path))
    assert proc.returncode == 1
    assert (
        proc.stderr.strip() == f"specauf: error: no runs found under {tmp_path} (looked for */summary.json)"
    )


def test_main_writes_outputs_and_prints_table(
    sweep: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert rep.main([str(sweep), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(rep.OUTPUTS)
    printed = capsys.readouterr().out
    assert "GSM8K" in printed and "decay only" in printed and "2.30 ± 0.14" in printed


def test_cli_wandb_source_unreachable(tmp_path: Path) -> None:
    proc = _cli("wandb:nobody/nothing", "--out", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "could not reach W&B" in proc.stderr
    assert "pass a local multirun directory instead" in proc.stderr


def test_all_failed_writes_report_and_exits_1(tmp_path: Path) -> None:
    (tmp_path / "0").mkdir()
    (tmp_path / "0" / "summary.json").write_text(json.dumps({"status": "failed", "error": "ValueError: bad"}))
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "summary.json").write_text("{not json")  # a run killed mid-write
    assert rep.main([str(tmp_path)]) == 1
    md = (tmp_path / "report" / "table.md").read_text()
    assert "## Failed runs (2)" in md and "`1` (unreadable): summary.json:" in md
    assert "No finished runs" in md
    assert (tmp_path / "report" / "tau_per_benchmark.png").read_bytes()[:8] == PNG_MAGIC


def test_wandb_offline_logs_tables_and_images(
    made: Path, sweep: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANDB_MODE", "offline")
    report = rep.build_report(rep.load_runs(sweep), str(sweep))
    paths = {name: made / name for name in rep.OUTPUTS}
    where = rep.log_to_wandb(report, paths, "specauf-test", None)
    assert "offline" in where
    files = {p.name.split("_0_")[0] for p in (made / "wandb").rglob("files/media/*/report/*")}
    assert files == {"variants", "runs", "tau_per_benchmark", "alpha_k", "token_acc_vs_tau"}


def test_claims_answer_the_papers_three_questions(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    for seed in (0, 1):
        write_run(root / f"auf{seed}", "auf", seed, TAU[("auf", seed)])
        write_run(root / f"decay{seed}", "decay", seed, TAU[("decay", seed)])
        # AUF + decay: AUF's τ plus a small alternating offset, inside the seed spread.
        offset = 0.01 if seed == 0 else -0.02
        write_run(root / f"ad{seed}", "auf_decay", seed, [t + offset for t in TAU[("auf", seed)]])
    report = rep.build_report(rep.load_runs(root), str(root))
    found = rep.claims(report)
    assert len(found) == 3
    beats, acc, inert = found
    # AUF is above decay on every benchmark in both seeds (the TAU table): 6 of 6.
    assert "AUF has the higher mean τ on 6 of 6 benchmarks" in beats
    gsm = statistics.fmean(TAU[("auf", s)][0] - TAU[("decay", s)][0] for s in (0, 1))
    assert f"GSM8K {gsm:+.3f} (higher in 2 of 2 seeds" in beats
    assert acc.startswith(
        "**DFlash: token accuracy.** decay only has the higher token accuracy: decay only 0.520 ± 0.028 vs AUF"
    )
    assert "within noise" in inert and "decay looks inert under AUF" in inert
    assert f"{-0.005:+.3f}" in inert  # mean of +0.01 and −0.02
    md = rep.markdown_report(report)
    assert "## The paper's claims, checked on these runs" in md


def test_claims_absent_without_the_variants_they_compare(tmp_path: Path) -> None:
    write_run(tmp_path / "a", "auf", 0, TAU[("auf", 0)])
    report = rep.build_report(rep.load_runs(tmp_path), str(tmp_path))
    assert rep.claims(report) == []
    assert "paper's claims" not in rep.markdown_report(report)


def test_token_accuracy_within_noise_is_no_clear_difference(tmp_path: Path) -> None:
    root = tmp_path / "sweep"
    accs = {("auf", 0): 0.50, ("auf", 1): 0.56, ("decay", 0): 0.55, ("decay", 1): 0.52}
    for (loss, seed), acc in accs.items():
        write_run(root / f"{loss}{seed}", loss, seed, TAU[(loss, seed)])
        path = root / f"{loss}{seed}" / "summary.json"
        summary = json.loads(path.read_text())
        summary["metrics"]["val/token_acc"] = acc
        path.write_text(json.dumps(summary))
    report = rep.build_report(rep.load_runs(root), str(root))
    acc = next(c for c in rep.claims(report) if "token accuracy" in c)
    # decay − AUF = +0.005 against a seed spread of ±0.03: no winner is named.
    assert acc.startswith(
        "**DFlash: token accuracy.** no clear difference in token accuracy: decay only 0.535"
    )
    assert "+0.005, within noise" in acc
