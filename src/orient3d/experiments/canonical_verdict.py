"""The canonical kind's verdict: which settings a cell compares, and whether one
canonical pose emerged (:func:`cell_answer`, :func:`answer`), within a grid cell or
against a named baseline cell (``Options.baseline`` of :mod:`.canonical`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import tomllib

from orient3d.config import Config
from orient3d.errors import ConfigError
from orient3d.experiments.cells import (
    Cell,
    cells,
    ci_text,
    iou_shortfalls,
    iou_text,
    prop_cell,
    refusal,
)
from orient3d.experiments.common import RunRecord, fmt
from orient3d.metrics import random_max

__all__ = [
    "COMPARED",
    "EMERGED",
    "answer",
    "baseline_cell",
    "by_setting",
    "cell_answer",
    "is_search",
    "measured",
    "pooled",
    "setting_label",
    "verdicts",
]

G = 24
EMERGED = 0.5  # global consistency a setting must reach for "a canonical pose emerged"
COMPARED = ("variant", "train.mode")  # the settings an answer compares within a grid cell


def by_setting(runs: Sequence[RunRecord], search_only: bool = False) -> dict[str, list[RunRecord]]:
    """Runs that differ in seed alone, by setting name (the variant, else the cell's label);
    with ``search_only`` only search-trained runs (the settings a verdict compares)."""
    out: dict[str, list[RunRecord]] = {}
    if search_only:
        runs = [r for r in runs if r.config.train.mode == "search"]
    for c in cells(runs):
        name = str(c.values.get("variant") or c.label([k for k in c.values if k in COMPARED]))
        out[name or _mode_name(c.runs[0].config)] = list(c.runs)
    return out


def _mode_name(cfg: Config) -> str:
    """A setting's name when its cell names none (a grid over other keys): the mode,
    with the choice for search (``search-hard``, ``search-soft``)."""
    mode = cfg.train.mode
    return f"{mode}-{cfg.search.choice}" if mode == "search" else mode


def pooled(runs: Sequence[RunRecord], key: str) -> dict[str, Any]:
    """A fraction of objects over the seeds: Wilson interval on the pooled objects."""
    recs = [r.extra["canonical_pose"] for r in runs if "canonical_pose" in r.extra]
    recs = [x for x in recs if x.get(key) is not None]
    return prop_cell([float(x[key]) for x in recs], [x.get("n_objects") for x in recs])


def measured(runs: Sequence[RunRecord], key: str) -> list[float]:
    recs = [r.extra.get("canonical_pose", {}) for r in runs]
    return [float(x[key]) for x in recs if x.get(key) is not None]


def setting_label(runs: Sequence[RunRecord]) -> tuple[str, str]:
    """The prior (with its weight when not 1) and any template with a weight above 0,
    and the choice: hard, soft at a fixed temperature, or soft annealed (``T a→b``).
    ``—`` for runs trained without search
    (the oracle ``single`` and the ``augmented`` baseline)."""
    cfg = runs[0].config
    if cfg.train.mode != "search":
        return f"— ({cfg.train.mode})", "—"
    s = cfg.search
    name = "stored_frame" if s.prior == "learned" else s.prior  # (the former name)
    prior = name if s.prior == "uniform" or s.prior_weight == 1 else f"{name} ×{s.prior_weight:g}"
    if s.template != "none" and s.template_weight > 0:  # a zero weight changes nothing
        kind = "latent template" if s.template == "latent" else "template"
        prior += f", {kind} ×{s.template_weight:g}"
    if cfg.data.random_frames:  # the control: the stored frame carries nothing
        prior += " (random frames)"
    if s.choice == "hard":
        anneal = "off (hard)"
    elif s.temperature_start == s.temperature:
        anneal = f"off (soft, T {s.temperature:g})"
    else:
        anneal = f"on (soft, T {s.temperature_start:g}→{s.temperature:g})"
    return prior, anneal


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
    one). Refused: a compared model (or a baseline model) has validation IoU below
    ``iou_floor``. Chance: 1/24, and the expected modal share of randomly posed
    objects.
    """
    groups_ = {
        k: v
        for k, v in by_setting(runs, search_only=True).items()
        if measured(v, "global_consistency")
    }
    if not groups_:
        return "none", "No search run has canonical-pose measurements yet."
    stats = {k: pooled(v, "global_consistency") for k, v in groups_.items()}
    best = max(stats, key=lambda k: stats[k]["mean"])
    uniform = [k for k, v in groups_.items() if setting_label(v)[0] == "uniform"]
    uni = next((k for k in uniform if setting_label(groups_[k])[1].startswith("off (hard")), None)
    uni = uni or (uniform[0] if uniform else None)
    base_runs: Sequence[RunRecord] = ()
    if baseline is not None:
        uni, base_runs = None, [r for r in baseline[1] if measured([r], "global_consistency")]
        if base_runs:
            groups_[f"the baseline ({baseline[0]})"] = list(base_runs)
            uni = f"the baseline ({baseline[0]})"
            stats[uni] = pooled(base_runs, "global_consistency")
    lo = stats[best]["lo"]
    n = int(min(measured(groups_[best], "n_objects")))
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
    text += f"; per class, consistency {ci_text(pooled(groups_[best], 'class_consistency'))}"
    c_chance = measured(groups_[best], "class_random_max")
    if c_chance:
        text += f" (random: {fmt(float(np.mean(c_chance)), 2)})"
    up = pooled(groups_[best], "upright")
    up_chance = float(np.mean(measured(groups_[best], "upright_chance") or [1 / 6]))
    text += f"; upright agreement {ci_text(up)} (chance {fmt(up_chance, 2)}"
    if uni is not None and uni != best:
        text += f"; {ci_text(pooled(groups_[uni], 'upright'))} with {uni}"
    text += f"); {iou_text(groups_[best])} under {best}"
    behind = [r for v in groups_.values() for r in v]
    short = iou_shortfalls(behind, iou_floor)
    if short:
        return "refused", f"{refusal(short, iou_floor)}. Measured: {text}."
    return ("emerged" if emerged else "not emerged"), f"{text}."


def baseline_cell(grid: Sequence[Cell], items: Sequence[str]) -> Cell | None:
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


def verdicts(
    records: Sequence[RunRecord], iou_floor: float, baseline: Sequence[str] = ()
) -> list[tuple[str, tuple[str, str]]]:
    """``(cell label, (verdict, sentence))`` per grid cell; against the baseline cell
    (``Options.baseline``) when one is named, the baseline itself not judged."""
    grid = cells(records, ignore=COMPARED)
    base = baseline_cell(grid, baseline)
    ref = None if base is None else (base.label(), [r for r in base.runs if is_search(r)])
    return [
        (g.label(), cell_answer(g.runs, iou_floor, ref))
        for g in grid
        if base is None or g is not base
    ]


def is_search(r: RunRecord) -> bool:
    return r.config.train.mode == "search"


def answer(
    records: Sequence[RunRecord], iou_floor: float = 0.5, baseline: Sequence[str] = ()
) -> str:
    """:func:`cell_answer` per grid cell (``"At latent=4: ..."`` when there are several)."""
    found = verdicts(records, iou_floor, baseline)
    if len(found) == 1 and not baseline:
        return found[0][1][1]
    return " ".join(f"At {label}: {sentence}" for label, (_, sentence) in found)
