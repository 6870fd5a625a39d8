"""The Spec-AUF paper's three claims (docs/method.md §1), checked wherever a report has the variants they compare.

Which variants those are comes from the runs' loss labels, not from loss names: an AUF variant has support
"auf" and no decay; its decay-only baseline is the variant of the same backbone and settings with full
support and decay; its "+ decay" partner has the same loss form with decay.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from specauf.report.runs import Run, bench_title
from specauf.report.variants import Report, Variant, stat


def _is_auf(v: Variant) -> bool:
    return v.loss_labels.get("support") == "auf" and v.loss_labels.get("decay") is False


def _is_decay_only(v: Variant) -> bool:
    return v.loss_labels.get("support") == "full" and v.loss_labels.get("decay") is True


def _with_decay(auf: Variant) -> Callable[[Variant], bool]:
    form = auf.loss_labels.get("form")
    return lambda v: (
        form is not None and v.loss_labels.get("form") == form and v.loss_labels.get("decay") is True
    )


def _by_seed(variant: Variant, get: Callable[[Run], float | None]) -> dict[Any, float]:
    """seed → value, for seeds with exactly one run that has the value (a paired comparison needs one)."""
    out: dict[Any, list[float]] = {}
    for r in variant.runs:
        if (v := get(r)) is not None:
            out.setdefault(r.seed, []).append(v)
    return {seed: vals[0] for seed, vals in out.items() if len(vals) == 1}


def difference(a: Variant, b: Variant, get: Callable[[Run], float | None]) -> tuple[float, float | None, str]:
    """mean(b) − mean(a), twice its standard error (None under 2 seeds each), and 'b higher in k of n seeds'."""
    sa, sb = stat(a.runs, get), stat(b.runs, get)
    delta = (sb.mean or 0.0) - (sa.mean or 0.0)
    two_se = (
        2 * math.sqrt(sa.std**2 / sa.n + sb.std**2 / sb.n)
        if sa.std is not None and sb.std is not None
        else None
    )
    pa, pb = _by_seed(a, get), _by_seed(b, get)
    seeds = [s for s in pa if s in pb]
    higher = sum(pb[s] > pa[s] for s in seeds)
    return delta, two_se, f"{higher} of {len(seeds)} seed{'s' if len(seeds) != 1 else ''}"


def signed(x: float, digits: int = 3) -> str:
    text = f"{x:+.{digits}f}"
    # A difference that rounds to zero reads "+0.000" either way, not "-0.000".
    return f"+{text[1:]}" if float(text) == 0 else text


def within_noise(delta: float, two_se: float | None) -> bool:
    """|delta| ≤ 2 SE; False with no noise estimate (under 2 seeds per variant)."""
    return two_se is not None and abs(delta) <= two_se


def _noise(delta: float, two_se: float | None) -> str:
    return ", within noise" if within_noise(delta, two_se) else ""


def claims(report: Report) -> list[str]:
    """Bullets answering the paper's claims for each backbone whose variants allow it (else nothing):

    1. AUF beats decay-only on τ, per benchmark; 2. decay is inert under AUF (AUF + decay ≈ AUF);
    3. decay-only has the higher token accuracy. Differences are mean(B) − mean(A) over seeds; "within
    noise" means |difference| ≤ 2 standard errors of the difference (needs ≥ 2 seeds per variant).
    """
    out: list[str] = []
    for auf in report.variants:
        if not _is_auf(auf):
            continue
        peers = [v for v in report.variants if v.backbone == auf.backbone and v.extras == auf.extras]
        decay = next((v for v in peers if _is_decay_only(v)), None)
        paired = next((v for v in peers if _with_decay(auf)(v)), None)
        out += _claims_of(report, auf, decay, paired)
    return out


def _claims_of(report: Report, auf: Variant, decay: Variant | None, paired: Variant | None) -> list[str]:
    out: list[str] = []
    name = auf.backbone_name
    both = [b for b in report.benchmarks if stat(auf.eval_runs, lambda r, b=b: r.tau.get(b)).n]
    if decay is not None and decay.eval_runs:
        both = [b for b in both if stat(decay.eval_runs, lambda r, b=b: r.tau.get(b)).n]
        per = []
        wins = 0
        for b in both:
            delta, two_se, seeds = difference(decay, auf, lambda r, b=b: r.tau.get(b))
            wins += delta > 0
            per.append(f"{bench_title(b)} {signed(delta)} (higher in {seeds}{_noise(delta, two_se)})")
        delta, two_se, seeds = difference(decay, auf, lambda r: r.tau_avg)
        noise = "" if two_se is None else f" ± {two_se:.3f} (2 SE)"
        out.append(
            f"**{name}: {auf.label} vs decay only, τ.** {auf.label} has the higher mean τ on {wins} of "
            f"{len(both)} benchmarks; avg τ {signed(delta)}{noise}, higher in {seeds}. Per benchmark: "
            + "; ".join(per)
            + "."
        )
    if decay is not None:
        acc = lambda r: r.metrics.get("val/token_acc")  # noqa: E731
        delta, two_se, seeds = difference(auf, decay, acc)
        sa, sd = stat(auf.runs, acc), stat(decay.runs, acc)
        if sa.n and sd.n:
            if within_noise(delta, two_se):
                verdict = "no clear difference in"
            else:
                verdict = (
                    "decay only has the higher" if delta > 0 else f"{auf.label} has the higher (or equal)"
                )
            out.append(
                f"**{name}: token accuracy.** {verdict} token accuracy: decay only {sd.text(3)} vs "
                f"{auf.label} {sa.text(3)} ({signed(delta)}{_noise(delta, two_se)}, decay higher in "
                f"{seeds})."
            )
    if paired is not None and paired.eval_runs and auf.eval_runs:
        delta, two_se, seeds = difference(auf, paired, lambda r: r.tau_avg)
        if two_se is None:
            verdict = "one seed: no noise estimate"
        elif within_noise(delta, two_se):
            verdict = f"within noise (2 SE = {two_se:.3f}): decay looks inert under {auf.label}"
        else:
            verdict = f"outside noise (2 SE = {two_se:.3f}): decay is not inert under {auf.label}"
        out.append(
            f"**{name}: is decay inert under {auf.label}?** avg τ of {paired.label} minus {auf.label}: "
            f"{signed(delta)}, {verdict} ({paired.label} higher in {seeds})."
        )
    return out
