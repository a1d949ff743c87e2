"""The benchmarks' PNG plots, drawn with matplotlib's Agg renderer (no display needed).

matplotlib comes with the `bench` extra (``.venv/bin/pip install -e '.[bench]'``). Figures
are built with the object API, not pyplot, so no GUI backend or global state is involved;
the PNGs carry no version or date metadata, so a re-run changes them only when the numbers
do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

SIZE = (7.0, 4.2)  # inches
DPI = 110
OURS, BASELINE, GOAL = "#1f6fb4", "#d9822b", "#5a9e4b"


def _figure() -> tuple[Any, Any]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise SystemExit("the plots need matplotlib: .venv/bin/pip install -e '.[bench]'") from None
    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    return figure, figure.subplots()


def _save(figure: Any, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    # Agg, explicitly; no "Software" tag, so equal numbers give an equal file.
    figure.savefig(path, format="png", metadata={"Software": None})
    return path


def _thousands(value: float, _position: int = 0) -> str:
    return f"{value:,.0f}" if value >= 1 else f"{value:g}"


def _log_log(axes: Any) -> None:
    """Both axes logarithmic, labelled with plain thousands (1,000 not 10^3)."""
    from matplotlib.ticker import FuncFormatter

    axes.set_xscale("log")
    axes.set_yscale("log")
    axes.xaxis.set_major_formatter(FuncFormatter(_thousands))
    axes.yaxis.set_major_formatter(FuncFormatter(_thousands))


def takes_vs_depth(
    path: Path,
    depths: Sequence[int],
    ours: Sequence[float],
    ours_range: Sequence[tuple[float, float]],
    kazoo: Sequence[float],
    goal: float | None = None,
) -> Path:
    """Takes/s against queue depth, log-log: ours (median, range as error bars) and kazoo's
    LockingQueue."""
    figure, axes = _figure()
    low = [max(0.0, median - lo) for median, (lo, _) in zip(ours, ours_range, strict=True)]
    high = [max(0.0, hi - median) for median, (_, hi) in zip(ours, ours_range, strict=True)]
    axes.errorbar(
        depths,
        ours,
        yerr=[low, high],
        marker="o",
        color=OURS,
        capsize=3,
        label="QueueConsumer (median of rounds, range)",
    )
    axes.plot(depths, kazoo, marker="s", color=BASELINE, label="kazoo LockingQueue")
    if goal is not None:
        axes.axhline(goal, color=GOAL, linestyle="--", linewidth=1, label=f"goal {goal:,.0f}/s")
    _log_log(axes)
    axes.set_xlabel("queue depth (entries)")
    axes.set_ylabel("takes/s (take + consume)")
    axes.set_title("Queue takes against depth")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend()
    return _save(figure, path)


def throughput_vs_concurrency(
    path: Path,
    concurrency: Sequence[int],
    rates: Sequence[float],
    job_seconds: float,
    goal: float | None = None,
) -> Path:
    """Jobs/s against the executor's concurrency, log-log, with the ideal concurrency / job
    duration for comparison."""
    figure, axes = _figure()
    axes.plot(concurrency, rates, marker="o", color=OURS, label="job-executor (measured)")
    ideal = [c / job_seconds for c in concurrency]
    axes.plot(
        concurrency,
        ideal,
        linestyle=":",
        color="grey",
        label=f"ideal: concurrency / {job_seconds * 1000:g} ms",
    )
    for c, rate in zip(concurrency, rates, strict=True):
        axes.annotate(
            f"{rate:,.0f}" if rate >= 10 else f"{rate:.1f}",
            (c, rate),
            textcoords="offset points",
            xytext=(0, 7),
            ha="center",
            fontsize=8,
        )
    if goal is not None:
        axes.axhline(goal, color=GOAL, linestyle="--", linewidth=1, label=f"goal {goal:,.0f}/s")
    _log_log(axes)
    axes.set_xticks(list(concurrency))
    axes.set_xlabel("--concurrency (jobs in flight per process)")
    axes.set_ylabel("jobs/s")
    axes.set_title("Executor throughput against concurrency")
    axes.grid(True, which="major", alpha=0.3)
    axes.legend()
    return _save(figure, path)


def latency_cdf(
    path: Path,
    series: Mapping[str, Sequence[float]],
    marks: Mapping[str, float],
    goal_ms: float | None = None,
) -> Path:
    """The distribution of latencies (ms) as cumulative curves, one per series, with
    `marks` (label -> value, e.g. the p50 and p99 shown in the table) as vertical lines."""
    figure, axes = _figure()
    colors = [OURS, BASELINE, "#7b5ea7", "#999999"]
    for (label, values), color in zip(series.items(), colors, strict=False):
        ordered = sorted(values)
        if not ordered:
            continue
        fractions = [(i + 1) / len(ordered) for i in range(len(ordered))]
        axes.step(
            ordered, fractions, where="post", color=color, label=f"{label} ({len(ordered)} samples)"
        )
    for (label, value), style in zip(marks.items(), ("--", "-.", ":", "--"), strict=False):
        axes.axvline(value, color=OURS, linestyle=style, linewidth=1)
        # Left of its line, at the bottom: a CDF's lower right is where the curves are not.
        axes.annotate(
            f"{label} {value:.1f} ms",
            (value, 0.02),
            xytext=(-2, 0),
            textcoords="offset points",
            rotation=90,
            va="bottom",
            ha="right",
            fontsize=8,
            color=OURS,
        )
    if goal_ms is not None:
        axes.axvline(goal_ms, color=GOAL, linewidth=1.5, label=f"goal p99 < {goal_ms:g} ms")
    axes.set_ylim(0, 1.02)
    largest = max([*marks.values(), *(max(v) for v in series.values() if v), goal_ms or 0])
    axes.set_xlim(0, largest * 1.08 or 1)
    axes.set_xlabel("dispatch latency: created → started (ms)")
    axes.set_ylabel("fraction of jobs")
    axes.set_title("Dispatch latency distribution")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="center right")
    return _save(figure, path)
