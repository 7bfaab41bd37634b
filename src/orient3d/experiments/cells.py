"""Cells: the runs that are replicates of one another, and what every kind shows of them.

A *cell* is the set of runs whose params differ in ``seed`` alone (same variant,
same grid values). Only the runs of one cell are replicates: every mean and
interval of a summary is taken within a cell, never across grid values or
variants. :func:`cells` is the one place that groups runs so; every kind uses it.

Intervals (:func:`ci_cell`, :func:`prop_cell`):

- a quantity measured once per run (test MSE, test IoU, poses used) gets the
  mean over the cell's seeds and a 95% Student-t interval; with fewer than two
  seeds the interval is undefined (JSON null, shown as "n/a"). Bounded
  quantities (IoU, normalized entropy) have the interval clipped to their range;
- a proportion of objects (consistency, recovery accuracy, upright agreement,
  success rate) gets a 95% Wilson score interval on the pooled object counts:
  ``k = Σ_seeds fraction_s × n_s`` successes out of ``n = Σ_seeds n_s`` objects.
  It stays inside [0, 1] and is defined for one seed, but it treats objects of
  all seeds as independent trials: it shows the uncertainty from the finite set
  of test objects, not the spread between training seeds.
"""

from __future__ import annotations

import math
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orient3d.errors import ConfigError
from orient3d.experiments.common import RunRecord, ci_cell, jsonable, section
from orient3d.experiments.spec import ExperimentSpec, key_labels
from orient3d.metrics.stats import format_ci, wilson_ci
from orient3d.report.figures import Curve, plot_panels

__all__ = [
    "Cell",
    "cells",
    "cells_json",
    "check_grid_values",
    "ci_text",
    "grid_columns",
    "grid_keys",
    "iou_cell",
    "iou_shortfalls",
    "iou_text",
    "lever_figure",
    "one_key_levers",
    "param",
    "per_class_iou_section",
    "prop_cell",
    "refusal",
    "val_iou",
]

SEED = "seed"


@dataclass(frozen=True)
class Cell:
    """Runs that differ in seed alone; ``values``: their params without the seed."""

    values: dict[str, Any]
    runs: tuple[RunRecord, ...]

    @property
    def n(self) -> int:
        """Replicates (runs) in the cell."""
        return len(self.runs)

    def grid(self, keys: Sequence[str]) -> list[Any]:
        """The cell's value of each of ``keys`` (None where it has none)."""
        return [self.values.get(k) for k in keys]

    def label(self, keys: Sequence[str] | None = None) -> str:
        """``"latent=4, beta=0.5"`` over ``keys`` (all values by default); "" if none."""
        keys = list(self.values) if keys is None else keys
        names = key_labels(keys)
        return ", ".join(f"{names[k]}={self.values[k]}" for k in keys if k in self.values)


def cells(records: Iterable[RunRecord], ignore: Sequence[str] = ()) -> list[Cell]:
    """Runs grouped by every param except the seed (and ``ignore``), in order of first run.

    ``ignore`` lets a kind put runs that differ in a key it compares itself (for
    example ``train.mode`` in single_vs_all) into one group; the seed is always
    ignored, and nothing else is.
    """
    skip = {SEED, *ignore}
    groups: dict[tuple[tuple[str, str], ...], tuple[dict[str, Any], list[RunRecord]]] = {}
    for r in records:
        values = {k: v for k, v in r.params.items() if k not in skip}
        key = tuple((k, repr(v)) for k, v in sorted(values.items()))
        groups.setdefault(key, (values, []))[1].append(r)
    return [Cell(v, tuple(runs)) for v, runs in groups.values()]


def grid_keys(spec: ExperimentSpec, skip: Iterable[str] = ()) -> list[str]:
    """The spec's grid keys, without ``skip`` (keys a kind already shows its own way)."""
    drop = set(skip)
    return [k for k, _ in spec.grid if k not in drop]


def grid_columns(keys: Sequence[str]) -> list[str]:
    """Table headers of grid keys: their short labels (``model.latent`` -> ``latent``)."""
    names = key_labels(keys)
    return [names[k] for k in keys]


def cells_json(groups: Sequence[Cell], keys: Sequence[str]) -> list[dict[str, Any]]:
    """summary.json's record of the cells: grid values, variant, n and the runs."""
    return [
        {
            "grid": {k: c.values.get(k) for k in keys},
            "variant": c.values.get("variant"),
            "n": c.n,
            "runs": [r.rel for r in c.runs],
        }
        for c in groups
    ]


def param(r: RunRecord, key: str) -> Any:
    """A run's value of a dotted key: its params (grid, variant), else its config."""
    if key in r.params:
        return r.params[key]
    node: Any = r.config
    for part in key.split("."):
        node = getattr(node, part)
    return node


def check_grid_values(spec: ExperimentSpec, key: str, allowed: Sequence[Any], kind: str) -> None:
    """ConfigError naming ``key`` if the grid gives it a value the kind cannot show."""
    for k, values in spec.grid:
        bad = [v for v in values if k == key and v not in allowed]
        if bad:
            raise ConfigError(
                f"grid.{key}: {kind} cannot show {', '.join(map(repr, bad))} "
                f"(it measures {', '.join(map(str, allowed))} only)"
            )


# ------------------------------------------------------------------------- intervals


def prop_cell(fractions: Sequence[float], counts: Sequence[float | None]) -> dict[str, Any]:
    """A proportion over seeds: Wilson interval on the pooled object counts.

    ``fractions[i]`` of ``counts[i]`` objects in run ``i``; ``k = Σ f·n``, ``n = Σ n``.
    The mean is ``k / n`` (the seeds' mean when every run counts the same objects).
    Without a count for every run the interval is undefined (null).
    """
    fr = [float(f) for f in fractions]
    if not fr:
        return {"mean": None, "lo": None, "hi": None, "n": 0}
    if any(c is None or not c > 0 for c in counts) or len(counts) != len(fr):
        return jsonable({"mean": float(np.mean(fr)), "lo": None, "hi": None, "n": len(fr)})
    n = float(sum(float(c) for c in counts if c is not None))
    k = sum(f * float(c) for f, c in zip(fr, counts) if c is not None)
    p, lo, hi = wilson_ci(min(max(k, 0.0), n), n)
    return jsonable(
        {"mean": p, "lo": lo, "hi": hi, "n": len(fr), "objects": n, "interval": "wilson"}
    )


def ci_text(c: Mapping[str, Any]) -> str:
    """A cell as text: ``"0.5 [0.4, 0.6]"``, ``"0.5 [n/a]"`` or ``"n/a"``."""
    mean, lo, hi = (c.get(k) for k in ("mean", "lo", "hi"))
    return format_ci(
        math.nan if mean is None else float(mean),
        None if lo is None else float(lo),
        None if hi is None else float(hi),
    )


# ------------------------------------------------------------------------------ IoU


def _iou(r: RunRecord) -> float | None:
    v = r.results.get("test_iou")
    return None if v is None else float(v)


def iou_cell(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Test IoU of the runs (results.json): mean and t interval clipped to [0, 1]."""
    return ci_cell([v for r in runs if (v := _iou(r)) is not None], bounds=(0.0, 1.0))


def iou_text(runs: Sequence[RunRecord]) -> str:
    """``"test IoU 0.8 [0.75, 0.85]"`` of the runs, for an answer."""
    return f"test IoU {ci_text(iou_cell(runs))}"


def val_iou(r: RunRecord) -> float | None:
    """Validation IoU of the run's selected epoch (``best_epoch`` of results.json, read
    in metrics.jsonl); None when the run has no validation split."""
    best = r.results.get("best_epoch")
    rows = [m for m in r.metrics if m.get("val_iou") is not None]
    if best is not None:
        rows = [m for m in rows if m.get("epoch") == best]
    return float(rows[-1]["val_iou"]) if rows else None


def iou_shortfalls(runs: Sequence[RunRecord], floor: float) -> list[tuple[str, float]]:
    """``(run, IoU)`` of the runs whose validation IoU (:func:`val_iou`) lies below
    ``floor`` or is missing (nan). The validation split, not the test set, decides
    whether a model reconstructs well enough for its poses to mean something; it also
    holds only the classes the model trained on, where held-out classes are tested."""
    out = []
    for r in runs:
        v = val_iou(r)
        if v is None or not v >= floor:
            out.append((r.name, math.nan if v is None else v))
    return out


def refusal(short: Sequence[tuple[str, float]], floor: float) -> str:
    """The sentence of a refused pose verdict, naming the runs below the IoU floor."""
    names = ", ".join(f"{n} ({'missing' if v != v else f'{v:.3g}'})" for n, v in short)
    return (
        f"Refused: a pose verdict needs models that reconstruct (validation IoU of the "
        f"selected epoch at least {floor:g}), and {len(short)} run(s) fell short: {names}"
    )


def per_class_iou_section(
    groups: Sequence[Cell], keys: Sequence[str], title: str = "Test IoU per class"
) -> dict[str, Any] | None:
    """One table: per cell, the test IoU of each class (results.json), mean over seeds."""
    names: list[str] = []
    for c in groups:
        for r in c.runs:
            for name in r.results.get("test_iou_per_class") or {}:
                if name not in names:
                    names.append(name)
    if not names:
        return None
    cols = ["variant"] * any("variant" in c.values for c in groups) + grid_columns(keys)
    rows = []
    for c in groups:
        head = [c.values["variant"]] if cols[:1] == ["variant"] else []
        per = [r.results.get("test_iou_per_class") or {} for r in c.runs]
        vals = [ci_cell([p[n] for p in per if n in p], bounds=(0.0, 1.0)) for n in names]
        rows.append([*head, *c.grid(keys), c.n, *vals])
    text = (
        "Test IoU of each class's test objects under the run's own protocol (results.json), "
        "mean and 95% Student-t interval over the seeds of each cell (clipped to [0, 1]; "
        "n/a with one seed)."
    )
    return section(title, text, [*cols, "seeds", *names], rows)


def one_key_levers(groups: Sequence[Cell]) -> dict[str, list[Cell]]:
    """Variants read as levers: for each config key in which some cells differ from a
    reference cell in that key alone, with numeric values, the reference and those
    cells, as cells whose ``values`` are ``{key: value}`` (ordered by value).

    The reference is the cell that differs in one key alone from the most others (the
    first such on a tie); so ``[variants]`` such as ``beta-0.25 = ["model.beta=0.25"]``
    and ``beta-4`` beside a plain cell give the key ``model.beta`` three points.
    Replicates are compared by their first run's config (cells differ in more than
    the seed only through it).
    """
    from orient3d.config import config_differences, flatten, to_dict

    if len(groups) < 2:
        return {}
    configs = [c.runs[0].config for c in groups]

    def single(i: int, j: int) -> str | None:
        keys = [k for k in config_differences(configs[i], configs[j]) if k != SEED]
        return keys[0] if len(keys) == 1 else None

    n = len(groups)
    ref = max(range(n), key=lambda i: sum(single(i, j) is not None for j in range(n) if j != i))
    by_key: dict[str, list[int]] = {}
    for j in range(n):
        key = single(ref, j) if j != ref else None
        if key is not None:
            by_key.setdefault(key, [ref]).append(j)
    levers = {}
    for key, members in by_key.items():
        xs = [flatten(to_dict(configs[i])).get(key) for i in members]
        if all(isinstance(x, int | float) and not isinstance(x, bool) for x in xs):
            ranked = sorted(zip(xs, members), key=lambda p: typing.cast(float, p[0]))
            levers[key] = [Cell({key: x}, groups[i].runs) for x, i in ranked]
    return levers


# --------------------------------------------------------------------------- figures


def lever_figure(
    out: Path,
    name: str,
    groups: Sequence[Cell],
    x_key: str,
    stat: Callable[[Cell], Mapping[str, Any]],
    *,
    series: Callable[[Cell], str],
    ylabel: str,
    title: str,
    hline: tuple[float, str] | None = None,
    series_keys: Sequence[str] = ("variant", "train.mode"),
) -> str | None:
    """A "lever on x, answer on y" figure: ``x_key`` on x, one line per ``series``.

    Cells that differ in keys other than ``x_key`` and ``series_keys`` (those the
    series tells apart) go to separate panels. ``stat(cell)`` gives ``{"mean",
    "lo", "hi"}``; None where no cell has ``x_key``. Returns the figure's path relative to ``out``.
    """
    have = [c for c in groups if x_key in c.values and stat(c).get("mean") is not None]
    if not have:
        return None
    panel_keys = [k for k in have[0].values if k != x_key and k not in series_keys]
    panels: dict[str, dict[str, list[Cell]]] = {}
    for c in have:
        panels.setdefault(c.label(panel_keys), {}).setdefault(series(c), []).append(c)
    drawn = []
    for pname, lines in panels.items():
        curves = []
        for label, cs in lines.items():
            st = [stat(c) for c in cs]
            nan = math.nan
            curves.append(
                Curve(
                    label,
                    [c.values[x_key] for c in cs],
                    [nan if s["mean"] is None else s["mean"] for s in st],
                    [nan if s.get("lo") is None else s["lo"] for s in st],
                    [nan if s.get("hi") is None else s["hi"] for s in st],
                )
            )
        drawn.append((pname, curves))
    xs = [c.values[x_key] for c in have]
    numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in xs)
    logx = numeric and min(xs) > 0 and max(xs) >= 8 * min(xs)
    rel = f"figures/{name}.png"
    label = key_labels([x_key])[x_key]
    plot_panels(out / rel, drawn, xlabel=label, ylabel=ylabel, title=title, logx=logx, hline=hline)
    return rel
