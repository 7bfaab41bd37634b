"""Experiment figures: matplotlib plots from arrays, written as PNG files.

Pure functions of their inputs: no pyplot global state (each plot builds its own
:class:`~matplotlib.figure.Figure` on an Agg canvas), so they are safe in worker
processes and tests. Every function returns the path it wrote.

- :func:`plot_curves`: lines with shaded confidence bands (e.g. test MSE against
  latent size, log-x, or against epoch), an optional horizontal reference line.
- :func:`plot_panels`: the same, one panel per setting side by side (e.g. one
  panel per value of a grid key that is not on the x axis).
- :func:`plot_pose_histograms`: one bar chart of pose counts per model, side by side.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from orient3d.report.plots import agg_figure

if TYPE_CHECKING:  # matplotlib loads when the first figure is drawn (~0.5 s)
    from matplotlib.figure import Figure

__all__ = ["Curve", "plot_curves", "plot_panels", "plot_pose_histograms"]


@dataclass(frozen=True)
class Curve:
    """One line with its band: ``mean[i]`` at ``x[i]``, band ``[lo[i], hi[i]]`` (nan: none)."""

    label: str
    x: Sequence[Any]  # numbers, or categories (placed in order)
    mean: Sequence[float]
    lo: Sequence[float] | None = None
    hi: Sequence[float] | None = None


def _save(fig: Figure, path: str | Path) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, format="png", dpi=100)
    return out


def _positions(curves: Sequence[Curve]) -> tuple[dict[Any, float], bool]:
    """Where each x value goes: itself when every x is a number, else its rank (categories)."""
    xs = [v for c in curves for v in c.x]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in xs):
        return {v: float(v) for v in xs}, True
    cats = list(dict.fromkeys(str(v) for v in xs))
    return {v: float(cats.index(str(v))) for v in xs}, False


def _draw(
    ax: Any,
    curves: Sequence[Curve],
    *,
    logx: bool,
    logy: bool,
    hline: tuple[float, str] | None,
) -> None:
    """One panel: lines with shaded bands (vertical bars where a line has one point)."""
    pos, numeric = _positions(curves)
    for c in curves:
        x = np.asarray([pos[v] for v in c.x], dtype=float)
        m = np.asarray(c.mean, dtype=float)
        (line,) = ax.plot(x, m, marker="o", markersize=4, label=c.label)
        if c.lo is not None and c.hi is not None:
            lo, hi = np.asarray(c.lo, dtype=float), np.asarray(c.hi, dtype=float)
            ok = np.isfinite(lo) & np.isfinite(hi)
            if ok.sum() > 1:
                ax.fill_between(x[ok], lo[ok], hi[ok], alpha=0.25, color=line.get_color())
            elif ok.any():
                err = np.vstack([m[ok] - lo[ok], hi[ok] - m[ok]])
                ax.errorbar(x[ok], m[ok], yerr=err, fmt="none", capsize=4, color=line.get_color())
    if hline is not None:
        ax.axhline(hline[0], color="grey", linestyle="--", linewidth=1, label=hline[1])
    ticks = sorted(set(pos.values()))
    if not numeric:
        names = {p: str(v) for v, p in pos.items()}
        ax.set_xticks(ticks, [names[t] for t in ticks])
    elif logx and ticks and min(ticks) > 0:
        ax.set_xscale("log", base=2)
        ax.set_xticks(ticks, [f"{v:g}" for v in ticks])
    if logy:
        ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    if curves or hline is not None:
        ax.legend(fontsize=8)


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
    """Lines with shaded bands (one per curve) in one panel; ``hline = (y, label)``.

    Non-numeric x values (e.g. a data source) are placed in order as categories.
    """
    return plot_panels(
        path, [(title, curves)], xlabel=xlabel, ylabel=ylabel, logx=logx, logy=logy, hline=hline
    )


def plot_panels(
    path: str | Path,
    panels: Sequence[tuple[str, Sequence[Curve]]],
    *,
    xlabel: str,
    ylabel: str,
    title: str = "",
    logx: bool = False,
    logy: bool = False,
    hline: tuple[float, str] | None = None,
) -> Path:
    """:func:`plot_curves` side by side: one panel per ``(panel title, curves)``, shared y."""
    n = max(1, len(panels))
    fig = agg_figure(figsize=(6.0 if n == 1 else 4.2 * n, 4.0), layout="constrained")
    axes = fig.subplots(1, n, squeeze=False, sharey=True)[0]
    for i, (ax, (name, curves)) in enumerate(zip(axes, panels)):
        _draw(ax, curves, logx=logx, logy=logy, hline=hline)
        ax.set_xlabel(xlabel)
        if i == 0:
            ax.set_ylabel(ylabel)
        shown = name or (title if n == 1 else "")
        if shown:
            ax.set_title(shown, fontsize=10)
    if title and n > 1:
        fig.suptitle(title, fontsize=10)
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
    fig = agg_figure(figsize=(3.2 * n, 2.8), layout="constrained")
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
