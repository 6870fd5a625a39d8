"""specauf.report.claims: the paper's three claims (docs/method.md §1), checked on a sweep's numbers."""

from __future__ import annotations

import statistics
from pathlib import Path

from specauf import report as rep
from tests.report.fakes import TAU, write_run


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
    for (loss, seed), token_acc in accs.items():
        write_run(root / f"{loss}{seed}", loss, seed, TAU[(loss, seed)], token_acc=token_acc)
    report = rep.build_report(rep.load_runs(root), str(root))
    acc = next(c for c in rep.claims(report) if "token accuracy" in c)
    # decay − AUF = +0.005 against a seed spread of ±0.03: no winner is named.
    assert acc.startswith(
        "**DFlash: token accuracy.** no clear difference in token accuracy: decay only 0.535"
    )
    assert "+0.005, within noise" in acc
