"""Question 1: is one orientation easier to encode than all 24?

Runs: latent sizes × train.mode in {single, augmented} × seeds. Each model is
measured on its own task (the protocol its mode defaults to: ``single`` on the
test objects as stored, ``augmented`` on them turned by fixed random rotations),
because the question is which task costs the VAE more. Per cell (the runs of one
latent size and any other grid values, differing in mode and seed alone) the test
MSE over seeds gets a 95% Student-t interval (n/a with one seed); the verdict says
which mode is lower and whether the difference lies outside both intervals (with
Welch's p-value). Verdicts are never refused, but every answer gives the test IoU.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orient3d.errors import ConfigError
from orient3d.experiments.cells import (
    cells,
    check_grid_values,
    grid_columns,
    grid_keys,
    param,
    per_class_iou_section,
)
from orient3d.experiments.common import Kind, RunRecord, ci_cell, compare, fmt, jsonable, section
from orient3d.experiments.spec import ExperimentSpec
from orient3d.metrics.stats import Comparison
from orient3d.report.figures import Curve, plot_panels

__all__ = ["KIND", "LatentRow", "Options", "answer", "rows_from_records", "summarize", "verdict"]

QUESTION = (
    "Is it easier (lower test loss) for a VAE to encode objects in one orientation "
    "than in all 24 orientations of the cube?"
)
MODES = ("single", "augmented")
LOWER_SINGLE = "single lower, outside the intervals"
LOWER_ALL = "all-24 lower, outside the intervals"
NOT_DISTINGUISHABLE = "not distinguishable (intervals overlap)"
NO_INTERVAL = "not distinguishable (too few seeds for an interval)"


@dataclass(frozen=True)
class Options:
    metric: str = "test_mse"  # results.json key compared (lower is better)
    x_key: str = "model.latent"  # the grid key on the x axis


@dataclass(frozen=True)
class LatentRow:
    """One latent size: both modes' values over seeds and their comparison."""

    latent: int
    single: list[float]
    augmented: list[float]
    cmp: Comparison  # a = single, b = augmented
    verdict: str
    protocols: dict[str, str]
    grid: dict[str, Any] = field(default_factory=dict)  # the row's other grid values
    iou: dict[str, list[float]] = field(default_factory=dict)  # mode -> test IoU per seed


def verdict(cmp: Comparison) -> str:
    """Which mode is lower and whether the 95% intervals are disjoint."""
    if not cmp.separated:
        defined = all(v == v for v in (cmp.lo_a, cmp.hi_a, cmp.lo_b, cmp.hi_b))
        return NOT_DISTINGUISHABLE if defined else NO_INTERVAL
    return LOWER_SINGLE if cmp.mean_a < cmp.mean_b else LOWER_ALL


def _rows_of(records: Sequence[RunRecord], x_key: str) -> list[tuple[dict[str, Any], Any]]:
    """The rows: (other grid values, x) of each group of runs that differ in mode and seed."""
    out: list[tuple[dict[str, Any], Any]] = []
    for group in cells(records, ignore=("train.mode", "variant")):
        grid = {k: v for k, v in group.values.items() if k != x_key}
        for x in dict.fromkeys(param(r, x_key) for r in group.runs):
            out.append((grid, x))
    return out


def rows_from_records(records: Sequence[RunRecord], options: Options) -> list[LatentRow]:
    """Per cell (grid values but the mode), single against augmented over the seeds."""
    rows = []
    protocols: dict[str, str] = {}
    for r in records:
        if r.config.train.mode in MODES:
            protocols[r.config.train.mode] = str(r.results.get("protocol", "as trained"))
    for grid, x in _rows_of(records, options.x_key):
        runs = {
            m: [
                r
                for r in records
                if r.config.train.mode == m
                and param(r, options.x_key) == x
                and all(r.params.get(k) == v for k, v in grid.items())
            ]
            for m in MODES
        }
        if not any(runs.values()):
            continue
        a, b = ([float(r.results[options.metric]) for r in runs[m]] for m in MODES)
        cmp = compare(a, b)
        iou = {
            m: [float(r.results["test_iou"]) for r in runs[m] if "test_iou" in r.results]
            for m in MODES
        }
        rows.append(LatentRow(x, a, b, cmp, verdict(cmp), protocols, grid, iou))
    order = list(dict.fromkeys(repr(r.grid) for r in rows))
    return sorted(rows, key=lambda r: (order.index(repr(r.grid)), r.latent))


def _join(items: Sequence[Any]) -> str:
    s = [str(i) for i in items]
    return s[0] if len(s) == 1 else ", ".join(s[:-1]) + " and " + s[-1]


def answer(rows: Sequence[LatentRow], metric: str = "test MSE") -> str:
    """One sentence answering question 1, computed from the rows."""
    if not rows:
        return "No runs finished, so question 1 has no answer yet."
    lower = [r.latent for r in rows if r.verdict == LOWER_SINGLE]
    higher = [r.latent for r in rows if r.verdict == LOWER_ALL]
    unclear = [r.latent for r in rows if r.latent not in lower + higher]
    ratios = [r.cmp.mean_a / r.cmp.mean_b for r in rows if r.cmp.mean_b > 0]
    ratio = f"single/all-24 {metric} ratio {min(ratios):.2f}–{max(ratios):.2f}"
    seeds = min(min(len(r.single), len(r.augmented)) for r in rows)
    n = len(rows)
    if len(lower) == n:
        head = (
            f"Yes: at every latent size tested ({_join(lower)}) the VAE trained on one "
            f"orientation reached a lower {metric} than the one trained on all 24, "
            f"outside the 95% intervals over {seeds} seeds"
        )
    elif lower:
        head = (
            f"Mostly yes: one orientation gave a lower {metric} outside the 95% intervals "
            f"({seeds} seeds) at {len(lower)} of {n} latent sizes ({_join(lower)})"
        )
    elif higher:
        head = (
            f"No: all 24 orientations gave the lower {metric}, outside the 95% intervals "
            f"({seeds} seeds), at {len(higher)} of {n} latent sizes ({_join(higher)})"
        )
    else:
        where = "the one latent size" if n == 1 else f"any of the {n} latent sizes"
        head = (
            f"Not shown: the {metric} of the two trainings did not differ beyond the 95% "
            f"intervals ({seeds} seeds) at {where} tested ({_join([r.latent for r in rows])})"
        )
    tail = []
    if lower and len(lower) < n and unclear:
        tail.append(f"not distinguishable at {_join(unclear)}")
    if lower and higher:
        tail.append(f"all-24 lower at {_join(higher)}")
    return "; ".join([head, *tail, ratio, _iou_clause(rows)]) + "."


def _iou_clause(rows: Sequence[LatentRow]) -> str:
    """The test IoU of the models behind the answer: its range over the rows, per mode."""
    parts = []
    for mode, label in (("single", "one orientation"), ("augmented", "all 24")):
        means = [sum(v) / len(v) for r in rows if (v := r.iou.get(mode))]
        if means:
            lo, hi = min(means), max(means)
            parts.append(f"{label} {fmt(lo)}" + (f"–{fmt(hi)}" if hi > lo else ""))
    return "test IoU of the models: " + (", ".join(parts) if parts else "not recorded")


def by_grid(rows: Sequence[LatentRow]) -> dict[str, list[LatentRow]]:
    """Rows split by their other grid values (label ``"beta=0.5"``; "" without any)."""
    out: dict[str, list[LatentRow]] = {}
    for r in rows:
        out.setdefault(", ".join(f"{k.split('.')[-1]}={v}" for k, v in r.grid.items()), []).append(
            r
        )
    return out


def answers(rows: Sequence[LatentRow], metric: str) -> str:
    """:func:`answer` per value of the other grid keys (``"At beta=0.5: ..."``)."""
    parts = by_grid(rows)
    if len(parts) <= 1:
        return answer(rows, metric)
    return " ".join(f"At {k}: {answer(v, metric)}" for k, v in parts.items())


def _plot(rows: Sequence[LatentRow], out: Path, metric: str, xlabel: str) -> str:
    panels = []
    for name, group in by_grid(rows).items():
        curves = []
        for mode, label in (
            ("single", "one orientation (single)"),
            ("augmented", "all 24 (augmented)"),
        ):
            a = mode == "single"
            proto = group[0].protocols.get(mode, "")
            curves.append(
                Curve(
                    f"{label}, {proto}",
                    [r.latent for r in group],
                    [r.cmp.mean_a if a else r.cmp.mean_b for r in group],
                    [r.cmp.lo_a if a else r.cmp.lo_b for r in group],
                    [r.cmp.hi_a if a else r.cmp.hi_b for r in group],
                )
            )
        panels.append((name, curves))
    plot_panels(
        out / "figures" / "single_vs_all.png",
        panels,
        xlabel=xlabel,
        ylabel=f"{metric} (mean, 95% CI over seeds)",
        title="One orientation vs all 24",
        logx=True,
    )
    return "figures/single_vs_all.png"


def _table(rows: Sequence[LatentRow], keys: Sequence[str]) -> list[list[Any]]:
    return [
        [
            *(r.grid.get(k) for k in keys),
            r.latent,
            ci_cell(r.single),
            ci_cell(r.augmented),
            r.cmp.mean_a / r.cmp.mean_b if r.cmp.mean_b else None,
            r.cmp.p_value,
            r.verdict,
            ci_cell(r.iou.get("single", []), bounds=(0.0, 1.0)),
            ci_cell(r.iou.get("augmented", []), bounds=(0.0, 1.0)),
        ]
        for r in rows
    ]


def _row_name(r: LatentRow, x_label: str) -> str:
    """The key of a row's verdict: its x value, or ``"beta=0.5, latent=2"``."""
    if not r.grid:
        return str(r.latent)
    return ", ".join(
        [*(f"{k.split('.')[-1]}={v}" for k, v in r.grid.items()), f"{x_label}={r.latent}"]
    )


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    """Table, verdicts, the figure and the answer of question 1, per grid cell."""
    rows = rows_from_records(records, options)
    metric = options.metric.replace("test_", "test ").replace("mse", "MSE").replace("iou", "IoU")
    keys = grid_keys(spec, skip=(options.x_key, "train.mode"))
    x_label = grid_columns([options.x_key])[0]
    fig = _plot(
        rows, out, metric, f"{x_label} (x axis)" if x_label != "latent" else "latent size Z"
    )
    protos = rows[0].protocols if rows else {}
    text = (
        f"The {metric} of VAEs trained on one orientation (single, measured "
        f"{protos.get('single', '?')}) and on all 24 (augmented, measured "
        f"{protos.get('augmented', '?')}), per cell of the grid (runs that differ in seed "
        "alone); mean and 95% Student-t interval over the seeds (n/a with one seed), "
        "Welch's two-sided p-value, the verdict (which is lower and whether the intervals "
        "are disjoint), and each mode's test IoU (clipped to [0, 1])."
    )
    columns = [
        *grid_columns(keys),
        x_label,
        f"single {metric}",
        f"all-24 {metric}",
        "ratio",
        "Welch p",
        "verdict",
        "single test IoU",
        "all-24 test IoU",
    ]
    sections = [section("Test error against latent size", text, columns, _table(rows, keys), [fig])]
    per_class = per_class_iou_section(cells(records), grid_keys(spec))
    if per_class is not None:
        sections.append(per_class)
    return jsonable(
        {
            "name": spec.name,
            "answers": [
                {"question": (spec.questions or (QUESTION,))[0], "answer": answers(rows, metric)}
            ],
            "sections": sections,
            "verdicts": {_row_name(r, x_label): r.verdict for r in rows},
            "rows": [
                {
                    "grid": r.grid,
                    "latent": r.latent,
                    "single": r.single,
                    "augmented": r.augmented,
                    "p_value": r.cmp.p_value,
                    "verdict": r.verdict,
                    "test_iou": r.iou,
                }
                for r in rows
            ],
        }
    )


def check(spec: ExperimentSpec, options: Options) -> None:
    """Refuse, before training, what the comparison cannot show.

    A grid value of ``train.mode`` other than single/augmented; an ``x_key`` that
    is no config key; two variants that train the same mode in one cell (their
    runs would be pooled as if they were seeds).
    """
    from orient3d.experiments.spec import expand_runs

    check_grid_values(spec, "train.mode", MODES, "single_vs_all")
    runs = expand_runs(spec)
    seen: dict[tuple[str, str], str] = {}
    for run in runs:
        try:
            x = run.params.get(options.x_key, None)
            if x is None:
                node: Any = run.config
                for part in options.x_key.split("."):
                    node = getattr(node, part)
                x = node
        except AttributeError:
            raise ConfigError(f"options.x_key: {options.x_key!r} is no config key") from None
        rest = {k: v for k, v in run.params.items() if k not in ("seed", "variant", "train.mode")}
        slot = (repr(sorted(rest.items())) + repr(x), run.config.train.mode)
        variant = str(run.params.get("variant", ""))
        if seen.setdefault(slot, variant) != variant:
            raise ConfigError(
                f"variants: {seen[slot]!r} and {variant!r} both train mode "
                f"{run.config.train.mode} at the same grid values; single_vs_all compares "
                "one single and one augmented setting per cell"
            )


KIND = Kind(questions=(QUESTION,), options=Options, summarize=summarize, check=check)
