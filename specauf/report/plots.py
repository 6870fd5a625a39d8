"""The three PNGs: τ per benchmark, α_k per draft position, token accuracy against τ (docs/method.md §6).

Each plot draws into a Figure it is given; a plot without data says so inside the figure instead of
leaving an empty one, so the report's image links always show something.
"""

from __future__ import annotations

import statistics
import textwrap
from collections.abc import Callable
from typing import Any

from specauf.report.curves import plot_curves
from specauf.report.runs import Run, bench_title
from specauf.report.variants import Report, Stat, Variant, stat

# Scatter markers by backbone order (labels' `order`): a backbone without one gets "D".
MARKERS = ("o", "s", "^", "v", "P", "X")


def _marker(v: Variant) -> str:
    order = v.backbone_labels.get("order")
    return MARKERS[order] if isinstance(order, int) and 0 <= order < len(MARKERS) else "D"


def _colors(report: Report) -> dict[int, Any]:
    import matplotlib

    cmap = matplotlib.colormaps["tab10" if len(report.variants) <= 10 else "tab20"]
    return {id(v): cmap(i % cmap.N) for i, v in enumerate(report.variants)}


def _new_figure(width: float, height: float) -> Any:
    # The object API with an explicit Agg canvas: no pyplot state, no GUI backend, whatever the caller uses.
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=120)
    FigureCanvasAgg(fig)
    return fig


def _no_data(fig: Any, title: str, why: str) -> None:
    ax = fig.add_subplot()
    ax.set_axis_off()
    ax.set_title(title)
    ax.text(0.5, 0.5, why, ha="center", va="center", wrap=True, fontsize=11, color="0.3")


def plot_tau_per_benchmark(report: Report, fig: Any) -> None:
    """Grouped bars: τ per benchmark (and avg), one bar per variant, error bars = std over seeds."""
    title = f"{report.title}: τ per benchmark (mean ± std over seeds)"
    if not any(v.eval_runs for v in report.variants):
        _no_data(fig, title, "No run has a τ evaluation (eval/eval.json): nothing to plot.")
        return
    ax = fig.add_subplot()
    groups = [*report.benchmarks, "avg"]
    colors = _colors(report)
    n = len(report.variants)
    width = 0.8 / n
    top = 0.0
    for i, v in enumerate(report.variants):
        get: list[Callable[[Run], float | None]] = [lambda r, b=b: r.tau.get(b) for b in report.benchmarks]
        stats = [stat(v.eval_runs, g) for g in [*get, lambda r: r.tau_avg]]
        for j, s in enumerate(stats):
            x = j + (i - (n - 1) / 2) * width
            if s.mean is None:
                # Say "no data" where the bar would be, rather than leaving a gap that reads as τ = 0.
                ax.text(x, 0.05, "no data", rotation=90, ha="center", va="bottom", fontsize=7, color="0.45")
                continue
            if s.n < len(v.eval_runs):  # fewer seeds than the rest of this variant's bars: say so
                ax.text(x, s.mean + (s.std or 0) + 0.03, f"n={s.n}", ha="center", va="bottom", fontsize=7)
            ax.bar(
                x,
                s.mean,
                width * 0.95,
                yerr=s.std,
                capsize=2,
                color=colors[id(v)],
                hatch="//" if groups[j] == "avg" else None,
                edgecolor="white" if groups[j] != "avg" else "0.2",
                label=v.full_label if j == 0 or not any(t.values for t in stats[:j]) else None,
            )
            top = max(top, s.mean + (s.std or 0))
    ax.set_xticks(range(len(groups)), [bench_title(b) if b != "avg" else "avg" for b in groups])
    ax.axvline(len(groups) - 1.5, color="0.7", lw=0.8, ls="--")
    ax.axhline(1.0, color="0.5", lw=0.8, ls=":")  # τ = 1: every draft rejected
    ax.set_ylim(0, top * 1.15 + 0.1)
    ax.set_ylabel(report.tau_axis_label())
    ax.set_xlabel("benchmark (avg = mean over the benchmarks each run has)")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncols=min(n, 3), loc="upper left", framealpha=0.9)


def run_alpha(run: Run) -> list[float | None]:
    """α_k of one run: the mean over its benchmarks at each k (benchmarks with no cycle reaching k−1 skipped)."""
    curves = list(run.alpha.values())
    length = max((len(c) for c in curves), default=0)
    out: list[float | None] = []
    for k in range(length):
        vals = [c[k] for c in curves if k < len(c) and c[k] is not None]
        out.append(statistics.fmean(vals) if vals else None)
    return out


def plot_alpha(report: Report, fig: Any) -> None:
    """α_k per draft position, one line per variant (mean over benchmarks, then over seeds; band = std)."""
    title = f"{report.title}: conditional acceptance α_k per draft position"
    if not any(r.alpha for r in report.runs):
        _no_data(fig, title, "No run has α_k (they come from eval/eval.json): nothing to plot.")
        return
    ax = fig.add_subplot()
    colors = _colors(report)
    longest = 0
    for v in report.variants:
        curves = [c for r in v.runs if r.alpha and (c := run_alpha(r))]
        if not curves:
            continue
        length = max(len(c) for c in curves)
        longest = max(longest, length)
        ks, means, stds = [], [], []
        for k in range(length):
            s = Stat([c[k] for c in curves if k < len(c) and c[k] is not None])
            if s.mean is not None:
                ks.append(k + 1)
                means.append(s.mean)
                stds.append(s.std or 0.0)
        ax.plot(
            ks,
            means,
            marker="o",
            ms=3.5,
            lw=1.6,
            color=colors[id(v)],
            label=f"{v.full_label} (n={len(curves)})",
        )
        if len(curves) >= 2:
            lo = [m - s for m, s in zip(means, stds, strict=True)]
            hi = [m + s for m, s in zip(means, stds, strict=True)]
            ax.fill_between(ks, lo, hi, color=colors[id(v)], alpha=0.15, lw=0)
    ax.set_xticks(range(1, longest + 1))
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("draft position k")
    ax.set_ylabel("α_k = #(accepted ≥ k) / #(accepted ≥ k−1)")
    ax.set_title(
        f"{textwrap.fill(title, 110)}\n(mean over benchmarks, then seeds; band = std over seeds)", fontsize=10
    )
    ax.grid(alpha=0.3)
    # α_k falls with k, so the top right corner is the emptiest.
    ax.legend(fontsize=8, loc="upper right", framealpha=0.9)


def plot_token_acc_vs_tau(report: Report, fig: Any) -> None:
    """One point per run: teacher-forced token accuracy (x) against τ avg (y), coloured by variant."""
    title = f"{report.title}: token accuracy vs τ (one point per run)"
    points = [r for r in report.runs if r.tau_avg is not None and "val/token_acc" in r.metrics]
    if not points:
        _no_data(fig, title, "No run has both val/token_acc and a τ evaluation: nothing to plot.")
        return
    ax = fig.add_subplot()
    colors = _colors(report)
    for v in report.variants:
        mine = [r for r in points if r.variant is v]
        if not mine:
            continue
        xs = [r.metrics["val/token_acc"] for r in mine]
        ys = [r.tau_avg for r in mine]
        ax.scatter(
            xs,
            ys,
            s=46,
            color=colors[id(v)],
            marker=_marker(v),
            label=v.full_label,
            edgecolors="0.2",
            linewidths=0.5,
            zorder=3,
        )
        for r, x, y in zip(mine, xs, ys, strict=True):
            ax.annotate(
                f"s{r.seed}", (x, y), textcoords="offset points", xytext=(4, 3), fontsize=7, color="0.35"
            )
    ax.set_xlabel("token accuracy (teacher-forced, full block: val/token_acc)")
    ax.set_ylabel(report.tau_axis_label() + "\nmean over benchmarks")
    left_out = len(report.runs) - len(points)
    # In the title, not inside the axes, where it could cover a point.
    ax.set_title(
        # Wrapped: this figure is narrower than the others and a report title can be long.
        textwrap.fill(title, 70)
        + (f"\n({left_out} finished run(s) without τ or token acc not shown)" if left_out else ""),
        fontsize=10,
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, framealpha=0.9)


def plot_tau_over_steps(report: Report, fig: Any) -> None:
    """Real τ (RealTau's val/tau/avg) and teacher-forced val/tf_tau over training, mean over each variant's seeds."""
    colors = _colors(report)
    ax = fig.add_subplot(1, 1, 1)
    variants = [(v.full_label, colors[id(v)], [r.curves for r in v.runs]) for v in report.variants]
    if not plot_curves(variants, ax):
        fig.clear()
        _no_data(
            fig,
            "τ over steps",
            "No run logged val/tau/avg or val/tf_tau to csv/metrics.csv: nothing to plot.",
        )
        return
    ax.set_title("real τ (solid) and teacher-forced τ (dashed) over training", fontsize=10)


def figures(report: Report) -> list[tuple[str, Any]]:
    """(file name, drawn Figure) of each plot, sized to the number of benchmarks and variants."""
    width = max(9.0, 1.2 * (len(report.benchmarks) + 1) * max(1.0, len(report.variants) / 3))
    plots: list[tuple[str, Callable[[Report, Any], None], tuple[float, float]]] = [
        ("tau_per_benchmark.png", plot_tau_per_benchmark, (min(width, 20.0), 5.5)),
        ("alpha_k.png", plot_alpha, (9.0, 5.5)),
        ("token_acc_vs_tau.png", plot_token_acc_vs_tau, (8.0, 6.0)),
        ("tau_over_steps.png", plot_tau_over_steps, (9.0, 5.5)),
    ]
    out = []
    for name, plot, size in plots:
        fig = _new_figure(*size)
        plot(report, fig)
        fig.tight_layout()
        out.append((name, fig))
    return out
