"""PNG plots of a run (matplotlib, without a display)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display: before pyplot is imported

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .results import Results

__all__ = ["PLOTS", "plot"]

PLOTS = {"small_gets": "small_gets.png", "latency": "latency.png"}
"""The file written for each plotted series."""


def plot(results: Results, directory: Path) -> list[Path]:
    """Draw every plot whose series the run has; return the files written."""
    written = []
    title = f"h2pool benchmarks ({results.size}; {results.machine.get('CPU', '')})"
    if results.series.get("small_gets"):
        written.append(_throughput(results.series["small_gets"], title, directory))
    if results.series.get("latency"):
        written.append(_latency(results.series["latency"], title, directory))
    return written


def _throughput(series: dict[str, dict[str, float]], title: str, directory: Path) -> Path:
    """Requests per second against concurrency, a line per client."""
    figure, axes = plt.subplots(figsize=(8, 5))
    levels: set[int] = set()
    for name, points in series.items():
        if points:
            levels.update(int(level) for level in points)
            axes.plot(
                [int(level) for level in points], list(points.values()), marker="o", label=name
            )
    axes.set_xscale("log")
    axes.set_xticks(sorted(levels), [str(level) for level in sorted(levels)])
    axes.minorticks_off()
    axes.set_ylim(bottom=0)
    axes.set_xlabel("concurrent requests")
    axes.set_ylabel("requests/s (12-byte GETs)")
    axes.set_title(f"Throughput against concurrency\n{title}", fontsize=10)
    return _save(figure, axes, directory / PLOTS["small_gets"])


def _latency(series: dict[str, dict[str, float]], title: str, directory: Path) -> Path:
    """Latency at each percentile, a line per client, percentiles evenly spaced."""
    figure, axes = plt.subplots(figsize=(8, 5))
    labels: list[str] = []
    for name, points in series.items():
        labels = [("max" if p == "100" else f"p{p}") for p in points]
        axes.plot(range(len(points)), list(points.values()), marker="o", label=name)
    axes.set_xticks(range(len(labels)), labels)
    axes.set_yscale("log")
    axes.set_xlabel("percentile")
    axes.set_ylabel("latency from scheduled start, ms")
    axes.set_title(f"Latency at a fixed offered load\n{title}", fontsize=10)
    return _save(figure, axes, directory / PLOTS["latency"])


def _save(figure: Figure, axes: Axes, path: Path) -> Path:
    """Grid, legend, and the figure written to ``path`` as PNG."""
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
