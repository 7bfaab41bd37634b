"""Experiment figures: matplotlib plots from arrays, written as PNG files.

Pure functions of their inputs: no pyplot global state (each plot builds its own
:class:`~matplotlib.figure.Figure` on an Agg canvas), so they are safe in worker
processes and tests. Every function returns the path it wrote.

- :func:`plot_curves`: lines with shaded confidence bands (e.g. test MSE against
  latent size, log-x, or against epoch), an optional horizontal reference line.
- :func:`plot_pose_histograms`: one bar chart of pose counts per model, side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["Curve", "plot_curves", "plot_pose_histograms"]


@dataclass(frozen=True)
class Curve:
    """One line with its band: ``mean[i]`` at ``x[i]``, band ``[lo[i], hi[i]]`` (nan: none)."""

    label: str
    x: Sequence[float]
    mean: Sequence[float]
    lo: Sequence[float] | None = None
    hi: Sequence[float] | None = None


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    fig.savefig(out, format="png", dpi=100)
    return out


def plot_curves(
    path: str | Path,
    curves: Sequence[Curve],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    hline: tuple[float, str] | None = None,
) -> Path:
    """Lines with shaded bands (one per curve) in one panel; ``hline = (y, label)``."""
    fig = Figure(figsize=(6.0, 4.0), layout="constrained")
    ax = fig.add_subplot()
    for c in curves:
        x = np.asarray(c.x, dtype=float)
        m = np.asarray(c.mean, dtype=float)
        (line,) = ax.plot(x, m, marker="o", markersize=4, label=c.label)
        if c.lo is not None and c.hi is not None:
            lo, hi = np.asarray(c.lo, dtype=float), np.asarray(c.hi, dtype=float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.any():
                ax.fill_between(x[ok], lo[ok], hi[ok], alpha=0.25, color=line.get_color())
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    if logx:
        ax.set_xscale("log", base=2)
        xs = sorted({float(v) for c in curves for v in c.x})
        ax.set_xticks(xs, [f"{v:g}" for v in xs])
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    if curves or hline is not None:
        ax.legend(fontsize=8)
    return _save(fig, path)


def plot_pose_histograms(
    path: str | Path,
    hists: Sequence[tuple[str, Sequence[float]]],
    *,
    title: str = "",
    xlabel: str = "canonical pose h",
) -> Path:
    """Bar charts of pose counts, one panel per ``(label, counts)``, in a row."""
    n = max(1, len(hists))
    fig = Figure(figsize=(3.2 * n, 2.8), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False)[0]
    for ax, (label, counts) in zip(axes, hists):
        c = np.asarray(counts, dtype=float)
        ax.bar(np.arange(c.shape[0]), c, color="tab:blue")
        ax.set_title(label, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.tick_params(labelsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
