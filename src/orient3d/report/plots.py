"""Figures from run data, rendered to PNG bytes without pyplot's global state."""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # matplotlib loads when the first figure is drawn (~0.5 s)
    from matplotlib.figure import Figure

__all__ = ["agg_figure", "curves_png", "histograms_png"]

Series = tuple[str, Sequence[float], Sequence[float]]  # label, epochs, values


def agg_figure(**kw: Any) -> Figure:
    """A matplotlib Figure on an Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return buf.getvalue()


def curves_png(panels: Sequence[tuple[str, Sequence[Series]]]) -> bytes:
    """Side-by-side line plots, one panel per metric, one line per run.

    Args:
        panels: ``(metric name, [(run label, epochs, values), ...])`` each.
    """
    n = len(panels)
    fig = agg_figure(figsize=(4.2 * n, 3.4), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (name, series) in zip(axes, panels):
        for label, xs, ys in series:
            ax.plot(xs, ys, marker="." if len(xs) < 30 else None, label=label)
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        lows = [min(ys) for _, _, ys in series]
        highs = [max(ys) for _, _, ys in series]
        if min(lows) > 0 and max(highs) / min(lows) > 20:  # spans decades: log scale
            ax.set_yscale("log")
    handles, labels = axes[0].get_legend_handles_labels()
    if labels:
        fig.legend(
            handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize="small"
        )
    return _png(fig)


def histograms_png(hists: Sequence[tuple[str, Sequence[float]]], xlabel: str = "pose") -> bytes:
    """Small-multiple bar charts of per-pose counts, one per run."""
    n = len(hists)
    cols = min(3, n)
    rows = (n + cols - 1) // cols
    fig = agg_figure(figsize=(4.0 * cols, 2.6 * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    for ax, (label, counts) in zip(axes, hists):
        c = np.asarray(counts, dtype=float)
        ax.bar(np.arange(len(c)), c, color="#4a7ab5")
        ax.set_title(label, fontsize="small")
        ax.set_xlabel(xlabel)
        ax.set_xticks(np.arange(0, len(c), max(1, len(c) // 8)))
    for ax in axes[n:]:
        ax.set_visible(False)
    return _png(fig)
