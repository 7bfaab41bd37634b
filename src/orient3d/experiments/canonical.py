"""Does a search-trained VAE learn one canonical pose, and what makes it?

Runs: named variants × seeds, by default the orientation prior of the search
(``search.prior``: ``uniform`` (no ground truth); ``stored_frame``, weakly
supervised by the dataset's stored frame; ``class`` = one prior per class, an
oracle that reads the labels) crossed with annealing (off: hard choice; on: the
soft choice annealed from ``temperature_start`` to a near-hard ``temperature``),
all at the same data, model, epochs and search (configs/canonical.toml). The
control ``data.random_frames = true`` turns each training object once by a random
rotation, so a stored-frame prior has no alignment to read; its settings are
labelled "(random frames)".

Measured per run (:func:`pose_analysis` → ``RUN/canonical_pose.json``), on every
test object in its stored pose: the search's hard choice ``r`` (exhaustive over
O, encoder mean, scores alone: ``g`` is unknown at test time, so no prior), the
canonical pose ``h = r⁻¹`` (independent of the view for an exact search); global
and per-class consistency (modulo symmetry), usage entropy, upright agreement
(:mod:`orient3d.metrics.upright`), and the picture of each class's first
objects in their canonical poses. From ``metrics.jsonl``: ``changed_frac`` of
the last epoch (objects whose canonical grid changed since the previous epoch)
and the prior's entropy. Test MSE is ``results.json``'s, measured under one
protocol for every run: ``rotated+search``.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orient3d.experiments.canonical_pose import pose_analysis, pose_record
from orient3d.experiments.canonical_verdict import (
    COMPARED,
    answer,
    by_setting,
    cell_answer,
    measured,
    pooled,
    setting_label,
    verdicts,
)
from orient3d.experiments.cells import (
    Cell,
    cells,
    grid_columns,
    grid_keys,
    iou_cell,
    key_labels,
    lever_figure,
    one_key_levers,
    per_class_iou_section,
    prop_cell,
)
from orient3d.experiments.common import (
    Kind,
    RunRecord,
    ci_cell,
    fmt,
    jsonable,
    section,
)
from orient3d.experiments.spec import ExperimentSpec, RunSpec
from orient3d.metrics import random_max
from orient3d.report.figures import plot_pose_histograms

__all__ = ["KIND", "Options", "answer", "cell_answer", "pose_analysis", "pose_record", "summarize"]

G = 24
QUESTION = (
    "Does a VAE trained with orientation search learn one canonical pose for all objects, "
    "and what makes it (the orientation prior, annealing)?"
)


@dataclass(frozen=True)
class Options:
    n_objects: int = 0  # test objects measured (0: all)
    picture_per_class: int = 4  # objects per class in the first seed's picture (0: none)
    usage_min_frac: float = 0.01  # a pose is used when it takes this fraction of the objects
    iou_floor: float = 0.5  # below this validation IoU a model's poses mean nothing: refused
    # The grid cell each other cell's verdict is measured against, as "key=value" items
    # (e.g. ["search.template_weight=0.0"] for a lever study); empty: within each cell,
    # against its uniform-prior hard-choice setting.
    baseline: tuple[str, ...] = ()


def _train_prop(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Share of the last epoch's training samples in the modal pose index (Wilson, pooled)."""
    hists: list[list[float]] = []
    for r in runs:
        last = next((m["pose_hist"] for m in reversed(r.metrics) if m.get("pose_hist")), None)
        if last and sum(last) > 0:
            hists.append([float(v) for v in last])
    return prop_cell([max(h) / sum(h) for h in hists], [float(sum(h)) for h in hists])


def _epochs(runs: Sequence[RunRecord], key: str, last: bool = True) -> list[float]:
    """Per run: ``key`` of its last epoch that has it, or its mean over those epochs."""
    vals = []
    for r in runs:
        found = [float(m[key]) for m in r.metrics if m.get(key) is not None]
        if found:
            vals.append(found[-1] if last else float(np.mean(found)))
    return vals


def _max_stale(runs: Sequence[RunRecord]) -> float:
    return float(runs[0].config.search.max_stale)


def _probe(runs: Sequence[RunRecord], stat: Any) -> list[float]:
    """Per run: ``stat`` of its epochs' ``cache_stale_probe`` (the share of probed cached
    choices a fresh search changed, at the start of each search epoch after the first)."""
    out = []
    for r in runs:
        v = np.array(
            [
                float(m["cache_stale_probe"])
                for m in r.metrics
                if m.get("cache_stale_probe") is not None
            ]
        )
        if v.size:
            out.append(float(stat(v)))
    return out


def _row(name: str, runs: Sequence[RunRecord], grid: list[Any]) -> list[Any]:
    prior, anneal = setting_label(runs)
    return [
        name,
        *grid,
        prior,
        anneal,
        ci_cell([r.results["test_mse"] for r in runs]),
        iou_cell(runs),
        pooled(runs, "global_consistency"),
        _train_prop(runs),
        pooled(runs, "class_consistency"),
        ci_cell(measured(runs, "n_used")),
        ci_cell(measured(runs, "entropy_normalized"), bounds=(0.0, 1.0)),
        pooled(runs, "upright"),
        pooled(runs, "up_consistency"),
        ci_cell(_epochs(runs, "changed_frac"), bounds=(0.0, 1.0)),
        ci_cell(_epochs(runs, "prior_entropy")),
        ci_cell(_epochs(runs, "score_gap_median")),
        ci_cell(_epochs(runs, "prior_changed_frac", last=False), bounds=(0.0, 1.0)),
        ci_cell(_probe(runs, np.median), bounds=(0.0, 1.0)),
        ci_cell(_probe(runs, lambda v: float(np.sum(v > _max_stale(runs))))),
        ci_cell([r.results.get("seconds_total", float("nan")) for r in runs]),
    ]


COLUMNS = [
    "prior",
    "annealing",
    "test MSE (rotated+search)",
    "test IoU",
    "global consistency",
    "train modal share",
    "class consistency",
    "poses used",
    "entropy / log 24",
    "upright",
    "up consistency",
    "changed (last epoch)",
    "prior entropy (nats)",
    "score gap (nats)",
    "prior overruled",
    "stale cache (probe, median)",
    "epochs re-searched (probe)",
    "seconds",
]


def _figures(grid: Sequence[Cell], out: Path) -> dict[str, list[str]]:
    figs: dict[str, list[str]] = {"usage": [], "classes": []}
    hists = []
    for g in grid:
        suffix = f", {g.label()}" if g.label() else ""
        slug = re.sub(r"[^A-Za-z0-9.+=-]+", "_", g.label())
        for name, runs in by_setting(g.runs).items():
            first = min(runs, key=lambda r: r.config.seed)
            if "canonical_pose" in first.extra:
                counts = first.extra["canonical_pose"]["pose_counts"]
                hists.append((f"{name}{suffix} (seed {first.config.seed})", counts))
            pic = first.path / "figures" / "canonical_per_class.png"
            if pic.is_file():
                dest = f"figures/canonical_{name}{'_' + slug if slug else ''}.png"
                (out / "figures").mkdir(parents=True, exist_ok=True)
                shutil.copyfile(pic, out / dest)
                figs["classes"].append(dest)
    if hists:
        plot_pose_histograms(out / "figures" / "canonical_usage.png", hists, title="Poses used")
        figs["usage"].append("figures/canonical_usage.png")
    return figs


def _named(label: str) -> Callable[[Cell], str]:
    """A series function that names every cell ``label`` (one line)."""
    return lambda _cell: label


def _lever(records: Sequence[RunRecord], spec: ExperimentSpec, out: Path) -> list[str]:
    """Global consistency and upright agreement per setting against the first grid key
    with several values (one figure each, 95% Wilson bands). Without such a key,
    against each config key in which ``[variants]`` differ from a reference cell alone
    (:func:`one_key_levers`: ``canonical_lever_<key>.png``, one line per key)."""
    keys = [k for k, v in spec.grid if len(v) > 1 and k not in COMPARED]
    done = [r for r in records if measured([r], "global_consistency")]
    if not done:
        return []

    def setting(c: Cell) -> str:
        return next(iter(by_setting(c.runs)))

    plots: list[tuple[str, str, list[Cell], Callable[[Cell], str]]]
    if keys:
        plots = [("", keys[0], cells(done), setting)]
    else:  # one line per key: its cells differ from the reference in that key alone
        plots = [
            (f"_{key_labels([k])[k]}", k, cs, _named(key_labels([k])[k]))
            for k, cs in one_key_levers(cells(done)).items()
        ]
    figs = []
    for suffix, x_key, groups, series in plots:
        for key, name, label, line in (
            ("global_consistency", "canonical_lever", "global consistency", (1 / G, "chance 1/24")),
            ("upright", "canonical_lever_upright", "upright agreement", None),
        ):
            if not measured(done, key):
                continue
            if line is None:
                chance = measured(done, "upright_chance")
                line = (float(np.mean(chance)), "chance") if chance else None
            fig = lever_figure(
                out,
                name + suffix,
                groups,
                x_key,
                lambda c, key=key: pooled(c.runs, key),  # type: ignore[misc]
                series=series,
                ylabel=f"{label} (95% Wilson interval)",
                title=f"{label.capitalize()} against {x_key}",
                hline=line,
            )
            if fig:
                figs.append(fig)
    return figs


def _class_share(runs: Sequence[RunRecord], names: set[str], key: str) -> dict[str, Any]:
    """``key`` (a per-class share of objects) pooled over the classes ``names`` and the
    seeds: a Wilson interval on the objects of those classes."""
    fractions, counts = [], []
    for r in runs:
        per = r.extra.get("canonical_pose", {}).get("per_class", {})
        rows = [v for c, v in per.items() if c in names and v.get(key) is not None]
        n = sum(int(v["n"]) for v in rows)
        if n:
            fractions.append(sum(float(v[key]) * int(v["n"]) for v in rows) / n)
            counts.append(float(n))
    return prop_cell(fractions, counts)


def _counted_share(
    runs: Sequence[RunRecord], names: set[str], key: str, seen: set[str] | None = None
) -> dict[str, Any]:
    """The share of the objects of the classes ``names`` counted at one index of their
    per-class counts ``key`` (``up_counts``: up directions; ``pose_counts``: poses), per
    run, then pooled over the seeds with a Wilson interval. The index is the trained
    classes' (``seen``) most common one, in the model's own frame (no stored frame), or
    index 0 when ``seen`` is None (for poses the identity: the stored frame recovered).
    Runs whose records lack the counts (from before they were kept) are left out."""
    fractions, counts = [], []
    for r in runs:
        per = r.extra.get("canonical_pose", {}).get("per_class", {})
        if not per or any(v.get(key) is None for v in per.values()):
            continue
        index = 0
        if seen is not None:
            trained = [per[c][key] for c in seen if c in per]
            if not trained:
                continue
            index = int(np.argmax(np.sum(trained, axis=0)))
        rows = [per[c] for c in names if c in per]
        n = sum(int(v["n"]) for v in rows)
        if n:
            fractions.append(sum(float(v[key][index]) for v in rows) / n)
            counts.append(float(n))
    return prop_cell(fractions, counts)


def _unseen_section(grid: Sequence[Cell], keys: Sequence[str]) -> dict[str, Any] | None:
    """Upright agreement and class consistency on the classes a model never saw
    (``data.unseen_classes``) beside those it trained on; None without unseen classes."""
    runs = [r for g in grid for r in g.runs]
    unseen = sorted({c for r in runs for c in r.config.data.unseen_classes})
    if not unseen:
        return None
    rows = []
    for g in grid:
        for name, rs in by_setting(g.runs).items():
            hidden = set(rs[0].config.data.unseen_classes)
            names = {c for r in rs for c in r.extra.get("canonical_pose", {}).get("per_class", {})}
            seen = names - hidden
            per = [_class_share(rs, {c}, "upright") for c in unseen]
            rows.append(
                [
                    name,
                    *g.grid(keys),
                    ", ".join(sorted(hidden)) or "none",
                    _class_share(rs, hidden, "upright"),
                    _class_share(rs, seen, "upright"),
                    _counted_share(rs, hidden, "up_counts", seen),
                    _counted_share(rs, hidden, "pose_counts"),
                    _counted_share(rs, seen, "pose_counts"),
                    _counted_share(rs, hidden, "pose_counts", seen),
                    _class_share(rs, hidden, "consistency"),
                    _class_share(rs, seen, "consistency"),
                    *per,
                ]
            )
    return section(
        "Classes the model never saw",
        "Test objects of the classes left out of training and validation "
        "(data.unseen_classes) against those of the trained classes: upright agreement "
        "(the canonical frame keeps +z up); up shared with the trained classes (the share "
        "of unseen objects whose up lands on the trained objects' most common up direction "
        "in the model's own frame: a model without ground truth can find a shared up, not "
        "the dataset's +z); recovered (the canonical pose is the stored frame, modulo "
        "symmetry: the recovery accuracy of a model trained in that frame, since an exact "
        "search's choice does not depend on the view); pose shared with the trained classes "
        "(the share of unseen objects in the trained objects' most common canonical pose, "
        "the model's own frame); and class consistency (share in the class's modal pose), "
        "each pooled over the classes' objects and the seeds with a 95% Wilson interval; "
        "then upright agreement per unseen class.",
        [
            "setting",
            *grid_columns(keys),
            "unseen classes",
            "upright, unseen",
            "upright, trained",
            "up shared with trained, unseen",
            "recovered, unseen",
            "recovered, trained",
            "pose shared with trained, unseen",
            "class consistency, unseen",
            "class consistency, trained",
            *(f"upright: {c}" for c in unseen),
        ],
        rows,
    )


TEXT = (
    "{n} test objects in their stored pose, each turned by exhaustive search over "
    "O (hard argmin of the scores, encoder mean, no prior: the applied rotation is "
    "unknown at test time); canonical pose h = r⁻¹. Consistency: share of objects "
    "using the modal pose (globally, and per class averaged over classes), symmetric "
    "objects' equivalent poses counted as one; chance 1/24, or about {rmax} as the modal "
    "share of {n} randomly posed objects. Upright: the canonical frame keeps +z up (chance "
    "about 1/6); up consistency: share of the modal direction of up. Test MSE and IoU under "
    "one protocol for every run: rotated+search. Train modal share: share of the last "
    "epoch's training samples in the most common canonical pose index, chosen with the "
    "prior (by index, not modulo symmetry). From the last training epoch: changed (objects "
    "whose canonical grid changed since the previous epoch), the prior's entropy (of log 24 "
    "= 3.18), the score gap (median over the training samples of the second-best minus the "
    "best negative ELBO over the 24 poses, in nats); prior overruled: share of training "
    "samples whose chosen pose scored worse than the best (mean over the search epochs). "
    "Stale cache: at the start of each search epoch after the first, the share of the probed "
    "cached choices (search.stale_probe objects) a fresh search changes (median over "
    "epochs); above search.max_stale the epoch re-searched every object (counted), so no "
    "epoch trained on a cache staler than that. "
    "The prior's weight in the score L - λ log p(h) is 1 (the ELBO) unless shown as ×λ. "
    "Per cell (runs that differ in seed alone): shares of objects (consistencies, upright, "
    "train modal share) with a 95% Wilson interval on the pooled counts of the seeds "
    "(objects as independent trials: the finite test set, not the spread between seeds); "
    "the rest: mean and 95% Student-t interval over seeds, n/a with one seed. A verdict is "
    "refused when a measured model has validation IoU below {floor:g}."
)


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    grid = cells(records, ignore=COMPARED)
    keys = grid_keys(spec, skip=COMPARED)
    figs = _figures(grid, out)
    n = max((int(v) for v in measured(records, "n_objects")), default=0)
    rows = [_row(k, v, g.grid(keys)) for g in grid for k, v in by_setting(g.runs).items()]
    text = TEXT.format(n=n, rmax=fmt(random_max(max(n, 1)), 2), floor=options.iou_floor)
    sections = [
        section(
            "Canonical pose per setting",
            text,
            ["setting", *grid_columns(keys), *COLUMNS],
            rows,
            figs["usage"] + _lever(records, spec, out),
        ),
        section(
            "One canonical pose per class?",
            "Per setting (first seed): rows are classes, columns the first test objects of "
            "each class turned to the pose the model uses for them.",
            figures=figs["classes"],
        ),
    ]
    unseen = _unseen_section(grid, keys)
    if unseen is not None:
        sections.append(unseen)
    per_class = per_class_iou_section(cells(records), grid_keys(spec))
    if per_class is not None:
        sections.append(per_class)
    question = (spec.questions or (QUESTION,))[0]
    return jsonable(
        {
            "name": spec.name,
            "answers": [
                {
                    "question": question,
                    "answer": answer(records, options.iou_floor, options.baseline),
                }
            ],
            "sections": sections,
            "verdicts": {
                label or "all": v[0]
                for label, v in verdicts(records, options.iou_floor, options.baseline)
            },
        }
    )


def _wants(run: RunSpec, options: Options) -> bool:
    # every model whose poses can be measured: search runs, and the oracle (single)
    # and augmented baselines beside them
    return run.config.train.mode in ("search", "single", "augmented")


KIND = Kind(
    questions=(QUESTION,),
    options=Options,
    summarize=summarize,
    analyze=pose_analysis,
    wants_analysis=_wants,
    extra_files=("canonical_pose.json",),
)
