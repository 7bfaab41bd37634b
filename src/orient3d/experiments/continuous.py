"""Continuous poses: pose error against method, and continuous search training.

Runs: ``train.mode`` in {single, continuous} (and any other grid keys) × seeds.
After training each run gets ``continuous.json``
(:func:`analyze`):

- a ``single`` run: :func:`orient3d.pose.recover_continuous` on ``n`` test
  objects turned by uniform SO(3) rotations (the run's seed; resampled and
  thresholded at 0.5), every method of :data:`orient3d.pose.METHODS`: success
  rate (error < ``threshold_deg`` modulo symmetry), median error, forward passes;
- a ``continuous`` run: the consistency of its canonical pose
  (:func:`orient3d.continuous_mode.canonical_consistency`: the test objects turned
  by the fixed seeded SO(3) rotations of protocol ``so3+search``, each pose found
  by the full coarse-to-fine search, ``H = Rᵀ R_true``; the largest fraction of
  objects within ``radius_deg`` of one ``H``), with its test MSE (so3+search)
  from ``results.json`` and the last epoch's median pose change.

The summary gives each number's mean and 95% Student-t interval over seeds, and
one sentence computed from them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orient3d.experiments.common import (
    AnalysisTask,
    Kind,
    RunRecord,
    ci_cell,
    fmt,
    jsonable,
    section,
)
from orient3d.experiments.spec import ExperimentSpec, RunSpec
from orient3d.stats import mean_ci

__all__ = ["KIND", "Options", "analyze", "answer", "summarize"]

QUESTIONS = (
    "Which pose estimator recovers continuous SO(3) rotations from a single-orientation "
    "VAE: gradient descent alone, from the best cube rotation, or a coarse-to-fine grid?",
    "Does training with a continuous pose search in the loop give one canonical pose?",
)
OUTPUT = "continuous.json"


@dataclass(frozen=True)
class Options:
    n: int = 50  # rotated test objects per single run (at most the test split)
    methods: tuple[str, ...] = ("gradient", "cube-start", "grid-refine")
    threshold_deg: float = 10.0  # success: error below this, modulo symmetry
    steps: int = 60  # gradient steps of every method
    top_k: int = 16  # grid-refine: kept per level
    levels: int = 2  # grid-refine: subdivision rounds
    radius_deg: float = 15.0  # consistency: the ball around one canonical rotation


def analyze(task: AnalysisTask) -> None:
    """Write ``RUN/continuous.json`` (module docstring), unless it exists."""
    import torch

    from orient3d import pose
    from orient3d.continuous_mode import canonical_consistency, search_options
    from orient3d.devices import resolve_device
    from orient3d.evaluate import load_run, so3_eval_rotations
    from orient3d.runs import read_run_config, write_json
    from orient3d.train import load_data

    out = task.path / OUTPUT
    if out.is_file():
        return
    device = resolve_device(read_run_config(task.path).train.device)
    cfg, model = load_run(task.path, str(device))
    _, test = load_data(cfg)
    o = task.options
    result: dict[str, Any] = {"mode": cfg.train.mode}
    if cfg.train.mode == "single":
        result["so3"] = pose.recover_continuous(
            model,
            test.voxels,
            test.stabilizers,
            min(o.n, len(test)),
            list(o.methods),
            torch.Generator().manual_seed(cfg.seed),
            threshold_deg=o.threshold_deg,
            steps=o.steps,
            top_k=o.top_k,
            levels=o.levels,
        )["so3"]
    elif cfg.train.mode == "continuous":
        R_true = so3_eval_rotations(len(test), cfg.seed)
        opt = search_options(cfg.continuous)
        result["consistency"] = canonical_consistency(model, test.voxels, R_true, opt, o.radius_deg)
    write_json(out, jsonable(result))


def method_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Per method: success rates, median errors and forward passes over seeds."""
    by: dict[str, dict[str, list[float]]] = {}
    for r in records:
        so3 = (r.extra.get("continuous") or {}).get("so3", {})
        for m, v in so3.items():
            d = by.setdefault(m, {"success": [], "median": [], "passes": []})
            d["success"].append(float(v["success_rate"]))
            d["median"].append(float(v["median_error_deg"]))
            d["passes"].append(float(v["forward_passes"]))
    return [{"method": m, **d} for m, d in by.items()]


def continuous_rows(records: Sequence[RunRecord]) -> dict[str, list[float]]:
    """Over the continuous runs: consistency, test MSE (so3+search), last pose change."""
    out: dict[str, list[float]] = {"consistency": [], "test_mse": [], "pose_change": []}
    for r in records:
        cons = (r.extra.get("continuous") or {}).get("consistency")
        if r.config.train.mode != "continuous" or not cons:
            continue
        out["consistency"].append(float(cons["consistency"]))
        out["test_mse"].append(float(r.results["test_mse"]))
        change = r.metrics[-1].get("pose_change_median_deg") if r.metrics else None
        if change is not None:
            out["pose_change"].append(float(change))
    return out


def answer(methods: Sequence[dict[str, Any]], cont: dict[str, list[float]]) -> str:
    """One sentence from the numbers."""
    parts = []
    if methods:
        ranked = sorted(methods, key=lambda m: -mean_ci(m["success"])[0])
        best, rest = ranked[0], ranked[1:]
        others = ", ".join(f"{m['method']} {fmt(100 * mean_ci(m['success'])[0])}%" for m in rest)
        m, lo, hi = mean_ci(best["success"])
        parts.append(
            f"{best['method']} recovered {fmt(100 * m)}% (95% CI {fmt(100 * lo)}–"
            f"{fmt(100 * hi)}%) of SO(3)-rotated test objects to within the threshold "
            f"at {fmt(mean_ci(best['passes'])[0])} forward passes per object"
            + (f", against {others}" if others else "")
        )
    if cont["consistency"]:
        m, lo, hi = mean_ci(cont["consistency"])
        parts.append(
            f"continuous search training put {fmt(100 * m)}% (95% CI {fmt(100 * lo)}–"
            f"{fmt(100 * hi)}%) of test objects within one canonical pose"
        )
    if not parts:
        return "No run has a continuous-pose measurement yet."
    return "; ".join(parts) + "."


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    methods = method_rows(records)
    cont = continuous_rows(records)
    table = [
        [m["method"], ci_cell(m["success"]), ci_cell(m["median"]), ci_cell(m["passes"])]
        for m in methods
    ]
    text = (
        f"Single-orientation models; {options.n} test objects per seed, each turned by a "
        "uniform random rotation (trilinear resampling, thresholded at 0.5). Success: "
        f"geodesic error below {options.threshold_deg}° modulo the object's symmetry. "
        "Mean and 95% Student-t interval over seeds."
    )
    cont_table = [[k, ci_cell(v)] for k, v in cont.items() if v]
    cont_text = (
        "Continuous runs: consistency is the largest fraction of test objects whose "
        f"canonical rotation H = Rᵀ R_true lies within {options.radius_deg}° of one of "
        "them (protocol so3+search rotations, full coarse-to-fine search); test MSE under "
        "so3+search; pose change: the last epoch's median angle between consecutive "
        "canonical rotations of the training objects."
    )
    questions = spec.questions or QUESTIONS
    sentence = answer(methods, cont)
    return jsonable(
        {
            "name": spec.name,
            "answers": [{"question": " ".join(questions), "answer": sentence}],
            "sections": [
                section(
                    "Pose error against method",
                    text,
                    ["method", "success rate", "median error (°)", "forward passes / object"],
                    table,
                ),
                section("Continuous search training", cont_text, ["measure", "value"], cont_table),
            ],
            "methods": methods,
            "continuous": cont,
        }
    )


def _wants(run: RunSpec, options: Options) -> bool:
    return run.config.train.mode in ("single", "continuous")


KIND = Kind(
    questions=QUESTIONS,
    options=Options,
    summarize=summarize,
    analyze=analyze,
    wants_analysis=_wants,
    extra_files=(OUTPUT,),
    analysis_output=OUTPUT,
)
