"""Recovery: does a model trained on one orientation know which way up an object is?

Runs: the ``single`` models of a latent-size grid (the same names as in
single_vs_all, so ``reuse = ["../single_vs_all"]`` or the same folder takes them
without training again). Each finished run gets ``recover.json`` (see
:func:`orient3d.experiments.analysis.recovery`): the fraction of randomly rotated
test objects whose rotation the search recovers, modulo symmetry. Per latent size
the accuracy gets a 95% interval over seeds, against the chance level
``mean |Stab| / 24``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orient3d.experiments.analysis import recovery
from orient3d.experiments.common import Kind, RunRecord, ci_cell, fmt, jsonable, section
from orient3d.experiments.spec import ExperimentSpec, RunSpec
from orient3d.figures import Curve, plot_curves
from orient3d.stats import mean_ci

__all__ = ["KIND", "Options", "answer", "summarize", "table_rows"]

QUESTION = (
    "Can a VAE trained on one orientation recover the orientation of randomly rotated "
    "test objects (modulo symmetry) by searching over the 24 rotations?"
)


@dataclass(frozen=True)
class Options:
    n: int = 0  # test objects to rotate and recover (0: all)
    x_key: str = "model.latent"  # the grid key on the x axis


def _x(r: RunRecord, key: str) -> Any:
    if key in r.params:
        return r.params[key]
    sec, name = key.split(".")
    return getattr(getattr(r.config, sec), name)


def table_rows(records: Sequence[RunRecord], options: Options) -> list[dict[str, Any]]:
    """Per x value: accuracies over seeds, their mean and interval, and chance."""
    acc: dict[Any, list[float]] = {}
    chance: dict[Any, list[float]] = {}
    for r in records:
        rec = r.extra.get("recover")
        if r.config.train.mode != "single" or not rec:
            continue
        x = _x(r, options.x_key)
        acc.setdefault(x, []).append(float(rec["accuracy"]))
        chance.setdefault(x, []).append(float(rec.get("chance", 1 / 24)))
    rows = []
    for x in sorted(acc):
        m, lo, hi = mean_ci(acc[x])
        rows.append(
            {"x": x, "values": acc[x], "mean": m, "lo": lo, "hi": hi, "chance": min(chance[x])}
        )
    return rows


def answer(rows: Sequence[dict[str, Any]]) -> str:
    """One sentence from the per-latent accuracies."""
    if not rows:
        return "No single-orientation run has a recovery measurement yet."
    best = max(rows, key=lambda r: r["mean"])
    worst = min(rows, key=lambda r: r["mean"])
    chance = max(r["chance"] for r in rows)
    above = [r["x"] for r in rows if r["lo"] == r["lo"] and r["lo"] > chance]
    return (
        f"Searching over the 24 rotations, single-orientation VAEs recovered the "
        f"orientation of {fmt(100 * best['mean'], 3)}% of rotated test objects at latent "
        f"size {best['x']} (the best) and {fmt(100 * worst['mean'], 3)}% at {worst['x']} "
        f"(the worst), against chance {fmt(100 * chance, 2)}%; the 95% interval lies "
        f"above chance at {len(above)} of {len(rows)} latent sizes."
    )


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    rows = table_rows(records, options)
    fig = "figures/recover.png"
    chance = max((r["chance"] for r in rows), default=1 / 24)
    plot_curves(
        out / fig,
        [
            Curve(
                "single-orientation VAE",
                [r["x"] for r in rows],
                [r["mean"] for r in rows],
                [r["lo"] for r in rows],
                [r["hi"] for r in rows],
            )
        ],
        xlabel="latent size Z",
        ylabel="recovery accuracy (95% CI over seeds)",
        title="Orientation recovery by exhaustive search",
        logx=True,
        hline=(chance, f"chance {chance:.3f}"),
    )
    table = [[r["x"], ci_cell(r["values"]), r["chance"]] for r in rows]
    text = (
        "Each test object is turned by a fixed random rotation g; the model scores all 24 "
        "rotations (negative ELBO of r⁻¹·x with the encoder mean) and picks the best r. "
        "A pick counts as right when r·c and g·c are the same voxels (modulo symmetry). "
        "Mean and 95% Student-t interval over seeds; chance is mean |Stab| / 24."
    )
    sentence = answer(rows)
    return jsonable(
        {
            "name": spec.name,
            "answers": [{"question": (spec.questions or (QUESTION,))[0], "answer": sentence}],
            "sections": [
                section(
                    "Recovery accuracy against latent size",
                    text,
                    [options.x_key.split(".")[-1], "accuracy", "chance"],
                    table,
                    [fig],
                )
            ],
            "rows": rows,
        }
    )


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
)
