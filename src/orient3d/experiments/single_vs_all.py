"""Question 1: is one orientation easier to encode than all 24?

Runs: latent sizes × train.mode in {single, augmented} × seeds. Each model is
measured on its own task (the protocol its mode defaults to: ``single`` on the
test objects as stored, ``augmented`` on them turned by fixed random rotations),
because the question is which task costs the VAE more. Per latent size the test
MSE over seeds gets a 95% Student-t interval; the verdict says which mode is lower
and whether the difference lies outside both intervals (with Welch's p-value).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orient3d.experiments.common import Kind, RunRecord, ci_cell, compare, jsonable, section
from orient3d.experiments.spec import ExperimentSpec
from orient3d.figures import Curve, plot_curves
from orient3d.stats import Comparison

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


def verdict(cmp: Comparison) -> str:
    """Which mode is lower and whether the 95% intervals are disjoint."""
    if not cmp.separated:
        defined = all(v == v for v in (cmp.lo_a, cmp.hi_a, cmp.lo_b, cmp.hi_b))
        return NOT_DISTINGUISHABLE if defined else NO_INTERVAL
    return LOWER_SINGLE if cmp.mean_a < cmp.mean_b else LOWER_ALL


def _param(r: RunRecord, key: str) -> Any:
    if key in r.params:
        return r.params[key]
    section_, name = key.split(".")
    return getattr(getattr(r.config, section_), name)


def rows_from_records(records: Sequence[RunRecord], options: Options) -> list[LatentRow]:
    """Group runs by latent size and mode; compare single against augmented."""
    values: dict[tuple[Any, str], list[float]] = {}
    protocols: dict[str, str] = {}
    for r in records:
        mode = r.config.train.mode
        if mode not in MODES:
            continue
        values.setdefault((_param(r, options.x_key), mode), []).append(
            float(r.results[options.metric])
        )
        protocols[mode] = str(r.results.get("protocol", "as trained"))
    rows = []
    for x in sorted({k for k, _ in values}):
        a, b = values.get((x, "single"), []), values.get((x, "augmented"), [])
        cmp = compare(a, b)
        rows.append(LatentRow(x, a, b, cmp, verdict(cmp), protocols))
    return rows


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
    return "; ".join([head, *tail, ratio]) + "."


def _plot(rows: Sequence[LatentRow], out: Path, metric: str) -> str:
    curves = []
    for mode, label in (
        ("single", "one orientation (single)"),
        ("augmented", "all 24 (augmented)"),
    ):
        pts = [(r.latent, r.cmp.mean_a if mode == "single" else r.cmp.mean_b, r) for r in rows]
        lo = [r.cmp.lo_a if mode == "single" else r.cmp.lo_b for *_, r in pts]
        hi = [r.cmp.hi_a if mode == "single" else r.cmp.hi_b for *_, r in pts]
        proto = rows[0].protocols.get(mode, "") if rows else ""
        curves.append(Curve(f"{label}, {proto}", [p[0] for p in pts], [p[1] for p in pts], lo, hi))
    plot_curves(
        out / "figures" / "single_vs_all.png",
        curves,
        xlabel="latent size Z",
        ylabel=f"{metric} (mean, 95% CI over seeds)",
        title="One orientation vs all 24",
        logx=True,
    )
    return "figures/single_vs_all.png"


def _table(rows: Sequence[LatentRow]) -> list[list[Any]]:
    return [
        [
            r.latent,
            ci_cell(r.single),
            ci_cell(r.augmented),
            r.cmp.mean_a / r.cmp.mean_b if r.cmp.mean_b else None,
            r.cmp.p_value,
            r.verdict,
        ]
        for r in rows
    ]


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    """Table, verdicts, the figure and the answer of question 1."""
    rows = rows_from_records(records, options)
    metric = options.metric.replace("test_", "test ").replace("mse", "MSE").replace("iou", "IoU")
    fig = _plot(rows, out, metric)
    sentence = answer(rows, metric)
    protos = rows[0].protocols if rows else {}
    text = (
        f"The {metric} of VAEs trained on one orientation (single, measured "
        f"{protos.get('single', '?')}) and on all 24 (augmented, measured "
        f"{protos.get('augmented', '?')}), per latent size; mean and 95% Student-t "
        "interval over seeds, Welch's two-sided p-value, and the verdict: which is "
        "lower and whether the intervals are disjoint."
    )
    columns = ["latent", f"single {metric}", f"all-24 {metric}", "ratio", "Welch p", "verdict"]
    table = _table(rows)
    return jsonable(
        {
            "name": spec.name,
            "answers": [{"question": (spec.questions or (QUESTION,))[0], "answer": sentence}],
            "sections": [section("Test error against latent size", text, columns, table, [fig])],
            "verdicts": {str(r.latent): r.verdict for r in rows},
            "rows": [
                {
                    "latent": r.latent,
                    "single": r.single,
                    "augmented": r.augmented,
                    "p_value": r.cmp.p_value,
                    "verdict": r.verdict,
                }
                for r in rows
            ],
        }
    )


KIND = Kind(questions=(QUESTION,), options=Options, summarize=summarize)
