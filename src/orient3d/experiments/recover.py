"""Recovery: does a model trained on one orientation know which way up an object is?

Runs: the ``single`` models of a latent-size grid (the same names as in
single_vs_all, so ``reuse = ["../single_vs_all"]`` or the same folder takes them
without training again). Each finished run gets ``recover.json`` (see
:func:`orient3d.experiments.analysis.recovery`): the fraction of randomly rotated
test objects whose rotation the search recovers, modulo symmetry. Per cell (runs
that differ in seed alone) the accuracy gets a 95% Wilson interval on the pooled
object counts of its seeds, against the chance level ``mean |Stab| / 24``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orient3d.experiments.analysis import recovery
from orient3d.experiments.cells import (
    cells,
    check_grid_values,
    grid_columns,
    grid_keys,
    iou_cell,
    lever_figure,
    param,
    per_class_iou_section,
    prop_cell,
)
from orient3d.experiments.common import Kind, RunRecord, fmt, jsonable, section
from orient3d.experiments.spec import ExperimentSpec, RunSpec

__all__ = ["KIND", "Options", "answer", "summarize", "table_rows"]

QUESTION = (
    "Can a VAE trained on one orientation recover the orientation of randomly rotated "
    "test objects (modulo symmetry) by searching over the 24 rotations?"
)


@dataclass(frozen=True)
class Options:
    n: int = 0  # test objects to rotate and recover (0: all)
    x_key: str = "model.latent"  # the grid key on the x axis


def table_rows(records: Sequence[RunRecord], options: Options) -> list[dict[str, Any]]:
    """Per cell (runs differing in seed alone): accuracies, their Wilson interval, chance.

    The interval is the Wilson score interval on the pooled objects of the cell's
    seeds (``k`` = objects recovered, ``n`` = objects tried, from ``recover.json``).
    """
    measured = [r for r in records if r.config.train.mode == "single" and r.extra.get("recover")]
    rows = []
    for cell in cells(measured):
        recs = [r.extra["recover"] for r in cell.runs]
        acc = [float(x["accuracy"]) for x in recs]
        p = prop_cell(acc, [x.get("n") for x in recs])
        rows.append(
            {
                "x": param(cell.runs[0], options.x_key),
                "grid": {
                    k: v for k, v in cell.values.items() if k not in (options.x_key, "train.mode")
                },
                "values": acc,
                "mean": p["mean"],
                "lo": p["lo"],
                "hi": p["hi"],
                "objects": p.get("objects"),
                "chance": min(float(x.get("chance", 1 / 24)) for x in recs),
                "test_iou": iou_cell(cell.runs),
                "cell": cell,
            }
        )
    order = list(dict.fromkeys(repr(r["grid"]) for r in rows))
    return sorted(rows, key=lambda r: (order.index(repr(r["grid"])), r["x"]))


def _where(row: dict[str, Any]) -> str:
    grid = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in row["grid"].items())
    return f"latent size {row['x']}" + (f" ({grid})" if grid else "")


def answer(rows: Sequence[dict[str, Any]]) -> str:
    """One sentence from the per-cell accuracies, with the test IoU of the models."""
    if not rows:
        return "No single-orientation run has a recovery measurement yet."
    best = max(rows, key=lambda r: r["mean"])
    worst = min(rows, key=lambda r: r["mean"])
    chance = max(r["chance"] for r in rows)
    above = [r for r in rows if r["lo"] is not None and r["lo"] > chance]
    undefined = sum(r["lo"] is None for r in rows)
    ious = [r["test_iou"]["mean"] for r in rows if r["test_iou"]["mean"] is not None]
    iou = (
        f"test IoU of the models {fmt(min(ious))}–{fmt(max(ious))}"
        if ious and min(ious) < max(ious)
        else f"test IoU of the models {fmt(ious[0]) if ious else 'not recorded'}"
    )
    tail = f" ({undefined} without an interval: objects not counted)" if undefined else ""
    return (
        f"Searching over the 24 rotations, single-orientation VAEs recovered the "
        f"orientation of {ci_pct(best)} of rotated test objects at {_where(best)} "
        f"(the best) and {ci_pct(worst)} at {_where(worst)} (the worst), against "
        f"chance {fmt(100 * chance, 2)}%; the 95% interval lies above chance in "
        f"{len(above)} of {len(rows)} cells{tail}; {iou}."
    )


def ci_pct(row: dict[str, Any]) -> str:
    """``"85% [80, 89]"`` (Wilson interval in percent) or ``"85% [n/a]"``."""
    text = f"{fmt(100 * row['mean'], 3)}%"
    if row["lo"] is None or row["hi"] is None:
        return text + " [n/a]"
    return text + f" [{fmt(100 * row['lo'], 3)}, {fmt(100 * row['hi'], 3)}]"


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    rows = table_rows(records, options)
    chance = max((r["chance"] for r in rows), default=1 / 24)
    fig = lever_figure(
        out,
        "recover",
        [r["cell"] for r in rows],
        options.x_key,
        lambda c: next(r for r in rows if r["cell"] is c),
        series=lambda c: "single-orientation VAE",
        ylabel="recovery accuracy (95% Wilson interval)",
        title="Orientation recovery by exhaustive search",
        hline=(chance, f"chance {chance:.3f}"),
    )
    keys = grid_keys(spec, skip=(options.x_key, "train.mode"))
    variant = ["variant"] if any("variant" in r["cell"].values for r in rows) else []
    table = [
        [
            *(r["cell"].values.get("variant") for _ in variant),
            *(r["grid"].get(k) for k in keys),
            r["x"],
            {k: r[k] for k in ("mean", "lo", "hi")} | {"n": len(r["values"])},
            r["objects"],
            r["chance"],
            r["test_iou"],
        ]
        for r in rows
    ]
    text = (
        "Each test object is turned by a fixed random rotation g; the model scores all 24 "
        "rotations (negative ELBO of r⁻¹·x with the encoder mean) and picks the best r. "
        "A pick counts as right when r·c and g·c are the same voxels (modulo symmetry). "
        "Per cell (runs that differ in seed alone): the share of objects recovered over all "
        "its seeds, with a 95% Wilson score interval on the pooled object counts (objects "
        "of every seed counted as independent trials: the interval shows the finite test "
        "set, not the spread between seeds); chance is mean |Stab| / 24. Test IoU: mean "
        "and 95% Student-t interval over seeds (n/a with one seed)."
    )
    x_label = grid_columns([options.x_key])[0]
    columns = [*variant, *grid_columns(keys), x_label, "accuracy", "objects", "chance", "test IoU"]
    sections = [
        section("Recovery accuracy against latent size", text, columns, table, [fig] if fig else [])
    ]
    per_class = per_class_iou_section([r["cell"] for r in rows], grid_keys(spec))
    if per_class is not None:
        sections.append(per_class)
    return jsonable(
        {
            "name": spec.name,
            "answers": [{"question": (spec.questions or (QUESTION,))[0], "answer": answer(rows)}],
            "sections": sections,
            "rows": [{k: v for k, v in r.items() if k != "cell"} for r in rows],
        }
    )


def check(spec: ExperimentSpec, options: Options) -> None:
    """Refuse a grid over ``train.mode`` with modes other than single (never measured)."""
    check_grid_values(spec, "train.mode", ("single",), "recover")


def _wants(run: RunSpec, options: Options) -> bool:
    return run.config.train.mode == "single"


KIND = Kind(
    questions=(QUESTION,),
    options=Options,
    summarize=summarize,
    analyze=recovery,
    wants_analysis=_wants,
    extra_files=("recover.json",),
    analysis_output="recover.json",
    check=check,
)
