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
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tomllib

from orient3d.errors import ConfigError
from orient3d.experiments.canonical_pose import pose_analysis, pose_record
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

QUESTION = (
    "Does a VAE trained with orientation search learn one canonical pose for all objects, "
    "and what makes it (the orientation prior, annealing)?"
)
G = 24
EMERGED = 0.5  # global consistency a setting must reach for "a canonical pose emerged"


@dataclass(frozen=True)
class Options:
    n_objects: int = 0  # test objects measured (0: all)
    picture_per_class: int = 4  # objects per class in the first seed's picture (0: none)
    usage_min_frac: float = 0.01  # a pose is used when it takes this fraction of the objects
    iou_floor: float = 0.5  # below this test IoU a model's poses mean nothing: verdict refused
    # The grid cell each other cell's verdict is measured against, as "key=value" items
    # (e.g. ["search.template_weight=0.0"] for a lever study); empty: within each cell,
    # against its uniform-prior hard-choice setting.
    baseline: tuple[str, ...] = ()


COMPARED = ("variant", "train.mode")  # the settings an answer compares within a grid cell


def _settings(runs: Sequence[RunRecord], search_only: bool = False) -> dict[str, list[RunRecord]]:
    """Runs that differ in seed alone, by setting name (the variant, else the cell's label);
    with ``search_only`` only search-trained runs (the settings a verdict compares)."""
    out: dict[str, list[RunRecord]] = {}
    if search_only:
        runs = [r for r in runs if r.config.train.mode == "search"]
    for c in cells(runs):
        name = str(c.values.get("variant") or c.label([k for k in c.values if k in COMPARED]))
        out[name or "all"] = list(c.runs)
    return out


def _prop(runs: Sequence[RunRecord], key: str) -> dict[str, Any]:
    """A fraction of objects over the seeds: Wilson interval on the pooled objects."""
    recs = [r.extra["canonical_pose"] for r in runs if "canonical_pose" in r.extra]
    recs = [x for x in recs if x.get(key) is not None]
    return prop_cell([float(x[key]) for x in recs], [x.get("n_objects") for x in recs])


def _train_prop(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Share of the last epoch's training samples in the modal pose index (Wilson, pooled)."""
    hists: list[list[float]] = []
    for r in runs:
        last = next((m["pose_hist"] for m in reversed(r.metrics) if m.get("pose_hist")), None)
        if last and sum(last) > 0:
            hists.append([float(v) for v in last])
    return prop_cell([max(h) / sum(h) for h in hists], [float(sum(h)) for h in hists])


def _values(runs: Sequence[RunRecord], key: str) -> list[float]:
    recs = [r.extra.get("canonical_pose", {}) for r in runs]
    return [float(x[key]) for x in recs if x.get(key) is not None]


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


def _setting(runs: Sequence[RunRecord]) -> tuple[str, str]:
    """The prior (with its weight when not 1) and the choice: hard, soft at a fixed
    temperature, or soft annealed (``T a→b``). ``—`` for runs trained without search
    (the oracle ``single`` and the ``augmented`` baseline)."""
    cfg = runs[0].config
    if cfg.train.mode != "search":
        return f"— ({cfg.train.mode})", "—"
    s = cfg.search
    name = "stored_frame" if s.prior == "learned" else s.prior  # (the former name)
    prior = name if s.prior == "uniform" or s.prior_weight == 1 else f"{name} ×{s.prior_weight:g}"
    if s.template != "none":
        prior += f", template ×{s.template_weight:g}"
    if cfg.data.random_frames:  # the control: the stored frame carries nothing
        prior += " (random frames)"
    if s.choice == "hard":
        anneal = "off (hard)"
    elif s.temperature_start == s.temperature:
        anneal = f"off (soft, T {s.temperature:g})"
    else:
        anneal = f"on (soft, T {s.temperature_start:g}→{s.temperature:g})"
    return prior, anneal


def _row(name: str, runs: Sequence[RunRecord], grid: list[Any]) -> list[Any]:
    prior, anneal = _setting(runs)
    return [
        name,
        *grid,
        prior,
        anneal,
        ci_cell([r.results["test_mse"] for r in runs]),
        iou_cell(runs),
        _prop(runs, "global_consistency"),
        _train_prop(runs),
        _prop(runs, "class_consistency"),
        ci_cell(_values(runs, "n_used")),
        ci_cell(_values(runs, "entropy_normalized"), bounds=(0.0, 1.0)),
        _prop(runs, "upright"),
        _prop(runs, "up_consistency"),
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


def cell_answer(
    runs: Sequence[RunRecord],
    iou_floor: float = 0.5,
    baseline: tuple[str, Sequence[RunRecord]] | None = None,
) -> tuple[str, str]:
    """``(verdict, sentence)`` for one grid cell: whether a canonical pose emerged, where.

    Only search-trained settings are compared (an oracle or augmented run in the
    cell is shown in the table, not judged). Emerged: the best setting's global
    consistency is at least 0.5 and its 95% Wilson interval (pooled objects of the
    seeds) lies above the reference's: the ``baseline`` cell ``(label, runs)`` when
    given, else the cell's uniform-prior setting (hard choice, or the first uniform
    one). Refused: a compared model (or a baseline model) has test IoU below
    ``iou_floor``. Chance: 1/24, and the expected modal share of randomly posed
    objects.
    """
    groups_ = {
        k: v
        for k, v in _settings(runs, search_only=True).items()
        if _values(v, "global_consistency")
    }
    if not groups_:
        return "none", "No search run has canonical-pose measurements yet."
    stats = {k: _prop(v, "global_consistency") for k, v in groups_.items()}
    best = max(stats, key=lambda k: stats[k]["mean"])
    uniform = [k for k, v in groups_.items() if _setting(v)[0] == "uniform"]
    uni = next((k for k in uniform if _setting(groups_[k])[1].startswith("off (hard")), None)
    uni = uni or (uniform[0] if uniform else None)
    base_runs: Sequence[RunRecord] = ()
    if baseline is not None:
        uni, base_runs = None, [r for r in baseline[1] if _values([r], "global_consistency")]
        if base_runs:
            groups_[f"the baseline ({baseline[0]})"] = list(base_runs)
            uni = f"the baseline ({baseline[0]})"
            stats[uni] = _prop(base_runs, "global_consistency")
    lo = stats[best]["lo"]
    n = int(min(_values(groups_[best], "n_objects")))
    above = uni is None or (
        lo is not None and stats[uni]["hi"] is not None and lo > stats[uni]["hi"]
    )
    emerged = stats[best]["mean"] >= EMERGED and above and uni != best
    head = (
        f"A single canonical pose emerged under {best}"
        if emerged
        else f"No single canonical pose emerged; the most consistent setting was {best}"
    )
    text = (
        f"{head}: global consistency {ci_text(stats[best])} over {n} test objects per seed "
        f"(chance 1/24 = 0.042; {fmt(random_max(n), 2)} expected for randomly posed objects)"
    )
    if uni is not None and uni != best:
        which = uni if base_runs else f"the uniform prior ({uni})"
        text += f", against {ci_text(stats[uni])} with {which}"
    text += f"; per class, consistency {ci_text(_prop(groups_[best], 'class_consistency'))}"
    c_chance = _values(groups_[best], "class_random_max")
    if c_chance:
        text += f" (random: {fmt(float(np.mean(c_chance)), 2)})"
    up = _prop(groups_[best], "upright")
    up_chance = float(np.mean(_values(groups_[best], "upright_chance") or [1 / 6]))
    text += f"; upright agreement {ci_text(up)} (chance {fmt(up_chance, 2)}"
    if uni is not None and uni != best:
        text += f"; {ci_text(_prop(groups_[uni], 'upright'))} with {uni}"
    text += f"); {iou_text(groups_[best])} under {best}"
    behind = [r for v in groups_.values() for r in v]
    short = iou_shortfalls(behind, iou_floor)
    if short:
        return "refused", f"{refusal(short, iou_floor)}. Measured: {text}."
    return ("emerged" if emerged else "not emerged"), f"{text}."


def _baseline_cell(grid: Sequence[Cell], items: Sequence[str]) -> Cell | None:
    """The cell whose values match every ``"key=value"`` of ``items`` (TOML values)."""
    if not items:
        return None
    want: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep:
            raise ConfigError(f"options.baseline: {item!r} is not of the form key=value")
        try:
            want[key.strip()] = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"options.baseline: {item!r}: {text!r} is not a TOML value") from e
    found = [c for c in grid if all(k in c.values and c.values[k] == v for k, v in want.items())]
    if len(found) != 1:
        have = "; ".join(c.label() for c in grid)
        raise ConfigError(
            f"options.baseline {list(items)} matches {len(found)} grid cells, not one "
            f"(cells: {have})"
        )
    return found[0]


def _verdicts(
    records: Sequence[RunRecord], iou_floor: float, baseline: Sequence[str] = ()
) -> list[tuple[str, tuple[str, str]]]:
    """``(cell label, (verdict, sentence))`` per grid cell; against the baseline cell
    (``Options.baseline``) when one is named, the baseline itself not judged."""
    grid = cells(records, ignore=COMPARED)
    base = _baseline_cell(grid, baseline)
    ref = None if base is None else (base.label(), [r for r in base.runs if _wants_run(r)])
    return [
        (g.label(), cell_answer(g.runs, iou_floor, ref))
        for g in grid
        if base is None or g is not base
    ]


def _wants_run(r: RunRecord) -> bool:
    return r.config.train.mode == "search"


def answer(
    records: Sequence[RunRecord], iou_floor: float = 0.5, baseline: Sequence[str] = ()
) -> str:
    """:func:`cell_answer` per grid cell (``"At latent=4: ..."`` when there are several)."""
    found = _verdicts(records, iou_floor, baseline)
    if len(found) == 1 and not baseline:
        return found[0][1][1]
    return " ".join(f"At {label}: {sentence}" for label, (_, sentence) in found)


def _figures(grid: Sequence[Cell], out: Path) -> dict[str, list[str]]:
    figs: dict[str, list[str]] = {"usage": [], "classes": []}
    hists = []
    for g in grid:
        suffix = f", {g.label()}" if g.label() else ""
        slug = re.sub(r"[^A-Za-z0-9.+=-]+", "_", g.label())
        for name, runs in _settings(g.runs).items():
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


def _lever(records: Sequence[RunRecord], spec: ExperimentSpec, out: Path) -> list[str]:
    """Global consistency and upright agreement per setting against the first grid key
    with several values (one figure each, 95% Wilson bands)."""
    keys = [k for k, v in spec.grid if len(v) > 1 and k not in COMPARED]
    measured = [r for r in records if _values([r], "global_consistency")]
    if not keys or not measured:
        return []
    figs = []
    for key, name, label, line in (
        ("global_consistency", "canonical_lever", "global consistency", (1 / G, "chance 1/24")),
        ("upright", "canonical_lever_upright", "upright agreement", None),
    ):
        if not _values(measured, key):
            continue
        if line is None:
            chance = _values(measured, "upright_chance")
            line = (float(np.mean(chance)), "chance") if chance else None
        fig = lever_figure(
            out,
            name,
            cells(measured),
            keys[0],
            lambda c, key=key: _prop(c.runs, key),  # type: ignore[misc]
            series=lambda c: next(iter(_settings(c.runs))),
            ylabel=f"{label} (95% Wilson interval)",
            title=f"{label.capitalize()} against {keys[0]}",
            hline=line,
        )
        if fig:
            figs.append(fig)
    return figs


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
    "refused when a measured model has test IoU below {floor:g}."
)


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    grid = cells(records, ignore=COMPARED)
    keys = grid_keys(spec, skip=COMPARED)
    figs = _figures(grid, out)
    n = max((int(v) for v in _values(records, "n_objects")), default=0)
    rows = [_row(k, v, g.grid(keys)) for g in grid for k, v in _settings(g.runs).items()]
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
                for label, v in _verdicts(records, options.iou_floor, options.baseline)
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
