"""Question 2: does training with orientation search learn a canonical subset of poses?

Runs: named variants at one latent size × seeds, by default ``oracle`` (mode
single: the objects in their canonical pose), ``augmented``, ``search-hard`` and
``search-soft``. Measured per run (:func:`orient3d.experiments.analysis.canonical`):
the first ``n_objects`` test objects in all 24 poses, canonicalized by exhaustive
search; the consistency and usage of the canonical poses, and every model's test
MSE under one common protocol (``rotated+search``) next to the curve of its own
protocol (single: as stored; augmented: rotated; search: rotated+search).

Everything is per cell: variants are compared within one set of grid values
(:func:`orient3d.experiments.cells.cells`), never pooled across grid values. A
verdict is refused when a model behind it reconstructs too poorly (validation IoU of
its selected epoch below ``iou_floor``): the poses of a model that does not reconstruct say nothing.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orient3d.experiments.analysis import canonical
from orient3d.experiments.cells import (
    Cell,
    cells,
    ci_text,
    grid_columns,
    grid_keys,
    iou_cell,
    iou_shortfalls,
    iou_text,
    lever_figure,
    per_class_iou_section,
    prop_cell,
    refusal,
)
from orient3d.experiments.common import Kind, RunRecord, ci_cell, fmt, jsonable, section
from orient3d.experiments.spec import ExperimentSpec, RunSpec
from orient3d.metrics import random_max  # also importable from here, as before
from orient3d.metrics.stats import mean_ci
from orient3d.report.figures import Curve, plot_curves, plot_pose_histograms

__all__ = ["KIND", "Options", "answer", "cell_answer", "curves", "summarize", "variant_of"]

QUESTION = (
    "Can a VAE trained on randomly oriented objects learn only a subset of orientations "
    "(a canonical pose) if every SGD step first optimizes each sample's orientation?"
)
G = 24


@dataclass(frozen=True)
class Options:
    n_objects: int = 32  # test objects shown in all 24 poses for consistency and usage
    picture_objects: int = 6  # objects in each model's picture (first seed; 0: none)
    usage_min_frac: float = 0.01  # a pose is used when it takes this fraction of the views
    iou_floor: float = 0.5  # below this validation IoU a model's poses mean nothing: refused


def variant_of(r: RunRecord) -> str:
    """The run's variant name, or one made from its mode."""
    if r.params.get("variant"):
        return str(r.params["variant"])
    mode = r.config.train.mode
    return f"search-{r.config.search.choice}" if mode == "search" else mode


COMPARED = ("variant", "train.mode")  # what a verdict compares within one grid cell


def _grid_cells(records: Sequence[RunRecord]) -> list[Cell]:
    """Runs with the same grid values (all variants and modes, all seeds)."""
    return cells(records, ignore=COMPARED)


def _variants(grid_cell: Cell) -> dict[str, list[RunRecord]]:
    """The variants of one grid cell: runs that differ in seed alone, by variant name."""
    return {variant_of(c.runs[0]): list(c.runs) for c in cells(grid_cell.runs)}


def _suffix(c: Cell) -> str:
    return f", {c.label()}" if c.label() else ""


def curves(records: Sequence[RunRecord], key: str = "test_mse") -> list[Curve]:
    """Per cell (variant and grid values): ``key`` per epoch, mean and 95% interval over seeds."""
    out = []
    for cell in cells(records):
        runs = cell.runs
        per_epoch: dict[int, list[float]] = {}
        for r in runs:
            for m in r.metrics:
                if key in m and m[key] is not None:
                    per_epoch.setdefault(int(m["epoch"]), []).append(float(m[key]))
        epochs = sorted(per_epoch)
        stats = [mean_ci(per_epoch[e]) for e in epochs]
        proto = runs[0].results.get("protocol", "?")
        grid = cell.label([k for k in cell.values if k not in COMPARED])
        label = f"{variant_of(runs[0])} ({proto}{', ' + grid if grid else ''})"
        out.append(Curve(label, epochs, *map(list, zip(*stats))))
    return out


def _values(runs: Sequence[RunRecord], key: str) -> list[float]:
    return [float(r.extra["canonical"][key]) for r in runs if "canonical" in r.extra]


def _prop(runs: Sequence[RunRecord], key: str) -> dict[str, Any]:
    """A fraction of objects over the seeds: Wilson interval on the pooled objects."""
    recs = [r.extra["canonical"] for r in runs if "canonical" in r.extra]
    return prop_cell([float(x[key]) for x in recs], [x.get("n_objects") for x in recs])


def _answer_part(name: str, runs: Sequence[RunRecord]) -> str:
    used, ent = _values(runs, "n_used"), _values(runs, "entropy_normalized")
    return (
        f"{name} used {fmt(float(np.mean(used)), 3)} of {G} canonical poses (normalized "
        f"entropy {fmt(float(np.mean(ent)), 2)}), with global consistency "
        f"{ci_text(_prop(runs, 'global_consistency'))}, class consistency "
        f"{ci_text(_prop(runs, 'class_consistency'))} and instance consistency "
        f"{fmt(float(np.mean(_values(runs, 'instance_consistency'))))} ({iou_text(runs)})"
    )


def _verdict(runs: Sequence[RunRecord], base: Sequence[RunRecord] | None, chance: float) -> str:
    glob = _prop(runs, "global_consistency")
    above_chance = glob["lo"] is not None and glob["lo"] > chance  # undefined is not above
    if base is None:
        return "partly" if above_chance else "no"
    ref = _prop(base, "global_consistency")
    if glob["mean"] is None or ref["mean"] is None:
        return "no"
    if glob["lo"] is not None and ref["hi"] is not None and glob["lo"] > ref["hi"]:
        return "yes"
    return "partly" if glob["mean"] > ref["mean"] and above_chance else "no"


def cell_answer(groups: dict[str, list[RunRecord]], iou_floor: float = 0.5) -> tuple[str, str]:
    """``(verdict, sentence)`` of one grid cell (its variants' runs, all seeds).

    Yes: a search-trained model's global consistency lies above the augmented
    model's beyond both 95% Wilson intervals (pooled objects of the seeds).
    Partly: its mean lies above the augmented model's and its interval above
    chance (the expected share of the modal pose among randomly posed objects),
    but the intervals overlap. Not shown: otherwise. Refused: a model behind the
    verdict (search variants, oracle, augmented) has validation IoU below ``iou_floor``.
    """
    groups = {k: v for k, v in groups.items() if any("canonical" in r.extra for r in v)}
    search = {k: v for k, v in groups.items() if v[0].config.train.mode == "search"}
    if not search:
        return "none", "No search-trained run has canonical-pose measurements yet."
    base = next((v for v in groups.values() if v[0].config.train.mode == "augmented"), None)
    n_obj = int(min(_values(next(iter(search.values())), "n_objects")))
    chance = random_max(n_obj)
    parts = [_answer_part(f"the {k} VAE", v) for k, v in search.items()]
    text = "; ".join(parts)
    if base is not None:
        text += "; for comparison " + _answer_part("the augmented VAE", base)
    oracle = next((v for v in groups.values() if v[0].config.train.mode == "single"), None)
    if oracle is not None:
        m = float(np.mean(_values(oracle, "global_consistency")))
        text += f", and the oracle trained on the canonical pose reached {fmt(m)} "
        text += f"({iou_text(oracle)})"
    text += f" (chance: {fmt(chance, 2)} for {n_obj} randomly posed objects)"
    behind = [r for v in groups.values() for r in v]
    short = iou_shortfalls(behind, iou_floor)
    if short:
        return "refused", f"{refusal(short, iou_floor)}. Measured: {text}."
    verdicts = [_verdict(runs, base, chance) for runs in search.values()]
    best = "yes" if "yes" in verdicts else "partly" if "partly" in verdicts else "no"
    head = {"yes": "Yes", "partly": "Partly", "no": "Not shown"}[best]
    return best, f"{head}: {text}."


def answer(records: Sequence[RunRecord], iou_floor: float = 0.5) -> str:
    """Question 2's answer: :func:`cell_answer` per grid cell (``"At latent=4: ..."``)."""
    grid = _grid_cells(records)
    if not grid:
        return cell_answer({}, iou_floor)[1]
    if len(grid) == 1:
        return cell_answer(_variants(grid[0]), iou_floor)[1]
    return " ".join(f"At {g.label()}: {cell_answer(_variants(g), iou_floor)[1]}" for g in grid)


def _pose_table(grid: Sequence[Cell], keys: Sequence[str]) -> list[list[Any]]:
    rows = []
    for g in grid:
        for name, runs in _variants(g).items():
            if not any("canonical" in r.extra for r in runs):
                continue
            rows.append(
                [
                    name,
                    *g.grid(keys),
                    _prop(runs, "instance_consistency"),
                    _prop(runs, "global_consistency"),
                    random_max(int(min(_values(runs, "n_objects")))),
                    _prop(runs, "class_consistency"),
                    ci_cell(_values(runs, "n_used")),
                    ci_cell(_values(runs, "entropy_normalized"), bounds=(0.0, 1.0)),
                ]
            )
    return rows


def _mse_table(grid: Sequence[Cell], keys: Sequence[str]) -> list[list[Any]]:
    return [
        [
            name,
            *g.grid(keys),
            str(runs[0].results.get("protocol", "?")),
            ci_cell([r.results["test_mse"] for r in runs]),
            iou_cell(runs),
            ci_cell(_values(runs, "common_test_mse")),
        ]
        for g in grid
        for name, runs in _variants(g).items()
    ]


def _figures(grid: Sequence[Cell], records: Sequence[RunRecord], out: Path) -> dict[str, list[str]]:
    figs: dict[str, list[str]] = {"curves": ["figures/search_modes_mse.png"], "poses": []}
    plot_curves(
        out / figs["curves"][0],
        curves(records),
        xlabel="epoch",
        ylabel="test MSE (mean, 95% CI over seeds)",
        title="Test MSE per epoch, each under its own protocol",
    )
    hists = []
    for g in grid:
        for name, runs in _variants(g).items():
            first = min(runs, key=lambda r: r.config.seed)
            if "canonical" in first.extra:
                label = f"{name}{_suffix(g)} (seed {first.config.seed})"
                hists.append((label, first.extra["canonical"]["pose_counts"]))
            pic = first.path / "figures" / "poses.png"
            if pic.is_file():
                slug = re.sub(r"[^A-Za-z0-9.+=-]+", "_", g.label())
                dest = f"figures/poses_{name}{'_' + slug if slug else ''}.png"
                (out / "figures").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(pic, out / dest)
                figs["poses"].append(dest)
    if hists:
        plot_pose_histograms(
            out / "figures" / "pose_usage.png", hists, title="Canonical poses used"
        )
        figs["usage"] = ["figures/pose_usage.png"]
    return figs


def _lever(records: Sequence[RunRecord], spec: ExperimentSpec, out: Path) -> list[str]:
    """Global consistency per variant against the first grid key with several values."""
    keys = [k for k, v in spec.grid if len(v) > 1 and k not in COMPARED]
    measured = [r for r in records if "canonical" in r.extra]
    if not keys or not measured:
        return []
    n_obj = int(min(r.extra["canonical"]["n_objects"] for r in measured))
    fig = lever_figure(
        out,
        "search_modes_lever",
        cells(measured),
        keys[0],
        lambda c: _prop(c.runs, "global_consistency"),
        series=lambda c: variant_of(c.runs[0]),
        ylabel="global consistency (95% Wilson interval)",
        title="Global consistency against " + keys[0],
        hline=(random_max(n_obj), "chance (random poses)"),
    )
    return [fig] if fig else []


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    grid = _grid_cells(records)
    keys = grid_keys(spec, skip=COMPARED)
    cols = ["variant", *grid_columns(keys)]
    figs = _figures(grid, records, out)
    n_obj = max(
        (r.extra["canonical"]["n_objects"] for r in records if "canonical" in r.extra), default=0
    )
    sections = [
        section(
            "Test MSE per mode",
            "Each curve is measured under its mode's own protocol (single: as stored; "
            "augmented: rotated; search: rotated+search). The last column measures every "
            "model under one common protocol, rotated+search, so those numbers compare. "
            "Per cell (runs that differ in seed alone): mean and 95% Student-t interval over "
            "its seeds (n/a with one seed; IoU clipped to [0, 1]).",
            [*cols, "protocol", "test MSE", "test IoU", "test MSE, rotated+search"],
            _mse_table(grid, keys),
            figs["curves"],
        ),
        section(
            "Canonical poses: consistency and usage",
            f"The first {n_obj} test objects shown in all 24 poses; each view turned by "
            "exhaustive search (hard argmin over O, encoder mean); canonical pose h = r⁻¹g. "
            "Consistency counts symmetric objects' equivalent poses as one; chance is the "
            "expected share of the modal pose if each object took a random pose (above "
            "1/24 for few objects). With exhaustive search over O the instance consistency "
            "is 1 by construction (every view is scored against the same orbit). Poses used: "
            f"those taking at least {fmt(100 * options.usage_min_frac, 2)}% of the views. "
            "Consistencies: share over the cell's seeds with a 95% Wilson interval on the "
            "pooled objects (objects of every seed as independent trials: the finite test "
            "set, not the spread between seeds); the rest: mean and Student-t interval. "
            f"A verdict is refused when a model behind it has validation IoU below "
            f"{options.iou_floor:g}.",
            [
                *cols,
                "instance",
                "global",
                "chance (random)",
                "class",
                "poses used",
                "entropy / log 24",
            ],
            _pose_table(grid, keys),
            figs.get("usage", []) + _lever(records, spec, out),
        ),
        section(
            "What the models turned the inputs to",
            "Per model (first seed): randomly oriented test inputs (left), the pose the search "
            "turned each one to (middle), and the reconstruction of that pose (right: its "
            "most probable voxels, as many as the input has).",
            figures=figs["poses"],
        ),
    ]
    per_class = per_class_iou_section(cells(records), grid_keys(spec))
    if per_class is not None:
        sections.append(per_class)
    verdicts = {g.label() or "all": cell_answer(_variants(g), options.iou_floor)[0] for g in grid}
    return jsonable(
        {
            "name": spec.name,
            "answers": [
                {
                    "question": (spec.questions or (QUESTION,))[0],
                    "answer": answer(records, options.iou_floor),
                }
            ],
            "sections": sections,
            "verdicts": verdicts,
        }
    )


def _wants(run: RunSpec, options: Options) -> bool:
    return True


KIND = Kind(
    questions=(QUESTION,),
    options=Options,
    summarize=summarize,
    analyze=canonical,
    wants_analysis=_wants,
    extra_files=("canonical.json",),
    analysis_output="canonical.json",
)
