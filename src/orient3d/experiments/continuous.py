"""Continuous poses: pose error against method, and continuous search training.

Runs: ``train.mode`` in {single, continuous} (and any other grid keys) × seeds.
After training each run gets ``continuous.json``
(:func:`analyze`):

- a ``single`` run: :func:`orient3d.search.continuous.recover_continuous` on ``n`` test
  objects turned by uniform SO(3) rotations (the run's seed; resampled and
  thresholded at 0.5), each method of ``options.methods`` (those of
  :data:`orient3d.search.continuous.METHODS`, and ``head-refine``, which first fits an
  SO(3) proposal head, :mod:`orient3d.training.so3_head`, on the run's training
  split (validation objects included) in its stored frame for ``head_epochs``):
  success rate (error < ``threshold_deg`` modulo symmetry), median error, forward
  passes;
- a ``continuous`` run: the consistency of its canonical pose
  (:func:`orient3d.training.modes.continuous.canonical_consistency`: the test objects turned
  by the fixed seeded SO(3) rotations of protocol ``so3+search``, each pose found
  by the full coarse-to-fine search, ``H = Rᵀ R_true``; the largest fraction of
  objects within ``radius_deg`` of one ``H``), with its test MSE (so3+search)
  from ``results.json`` and the last epoch's median pose change.

The summary is per cell (runs that differ in seed alone, grid values as
columns): success rates and consistency with a 95% Wilson interval on the pooled
objects of the seeds, every other number with its mean and 95% Student-t interval
over seeds (n/a with one seed), and one sentence per grid cell.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from orient3d.errors import ConfigError
from orient3d.experiments.cells import (
    Cell,
    cells,
    check_grid_values,
    ci_text,
    grid_columns,
    grid_keys,
    lever_figure,
    per_class_iou_section,
    prop_cell,
)
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
from orient3d.metrics.stats import mean_ci
from orient3d.search.options import HEAD_METHOD, METHOD_NAMES, PoseOptions, check_search_options

__all__ = ["KIND", "Options", "analyze", "answer", "summarize"]

QUESTIONS = (
    "Which pose estimator recovers continuous SO(3) rotations from a single-orientation "
    "VAE: gradient descent alone, from the best cube rotation, or a coarse-to-fine grid?",
    "Does training with a continuous pose search in the loop give one canonical pose?",
)
OUTPUT = "continuous.json"
COMPARED = ("variant", "train.mode")  # single and continuous runs of one grid cell meet


@dataclass(frozen=True)
class Options:
    n: int = 50  # rotated test objects per single run (at most the test split)
    methods: tuple[str, ...] = ("gradient", "cube-start", "grid-refine")
    threshold_deg: float = 10.0  # success: error below this, modulo symmetry
    steps: int = PoseOptions.steps  # gradient steps of every method
    top_k: int = PoseOptions.top_k  # grid-refine: kept per level
    levels: int = PoseOptions.levels  # grid-refine: subdivision rounds
    cosets: int = PoseOptions.cosets  # grid-refine: cube-group turns searched again
    head_epochs: int = 60  # head-refine: epochs of its proposal head's fit
    head_views: int = 24  # head-refine: exact views its head is averaged over
    radius_deg: float = 15.0  # consistency: the ball around one canonical rotation


def analyze(task: AnalysisTask) -> None:
    """Write ``RUN/continuous.json`` (module docstring), unless it exists."""
    import torch

    from orient3d.data import load_data
    from orient3d.devices import resolve_device
    from orient3d.evaluation.continuous import recover_continuous
    from orient3d.evaluation.protocols import load_run, so3_eval_rotations
    from orient3d.rundir.runs import read_run_config, write_json
    from orient3d.training.modes.continuous import canonical_consistency, search_options
    from orient3d.training.so3_head import fit_so3_head

    out = task.path / OUTPUT
    if out.is_file():
        return
    device = resolve_device(read_run_config(task.path).train.device)
    cfg, model = load_run(task.path, str(device))
    train_set, test = load_data(cfg)
    o = task.options
    result: dict[str, Any] = {"mode": cfg.train.mode, "n_objects": len(test)}
    if cfg.train.mode == "single":
        head: dict[str, Any] = {}
        if HEAD_METHOD in o.methods:  # a single run's frame is the stored one
            fit = fit_so3_head(model, train_set.voxels, epochs=o.head_epochs, seed=cfg.seed)
            head = {"head": fit.head, "head_views": o.head_views}
            result["so3_head"] = {
                "epochs": o.head_epochs,
                "seconds": fit.seconds,
                "train_top_k": fit.train_top_k,
            }
        result["so3"] = recover_continuous(
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
            cosets=o.cosets,
            labels=test.labels,
            class_names=test.class_names,
            **head,
        )["so3"]
    elif cfg.train.mode == "continuous":
        R_true = so3_eval_rotations(len(test), cfg.seed)
        opt = search_options(cfg.continuous)
        result["consistency"] = canonical_consistency(model, test.voxels, R_true, opt, o.radius_deg)
    write_json(out, jsonable(result))


def _so3(r: RunRecord) -> dict[str, Any]:
    """A run's pose-estimation results per method (``continuous.json``), or none."""
    return dict((r.extra.get("continuous") or {}).get("so3") or {})


def method_rows(records: Sequence[RunRecord]) -> list[dict[str, Any]]:
    """Per method: success rates (and objects tried), the share whose found rotation
    scores at least as well as the truth (the search did not lose to its model), median
    errors, passes over the runs.

    Call it with the runs of one cell (runs that differ in seed alone); ``test_iou``
    is the single-orientation models' test IoU.
    """
    by: dict[str, dict[str, list[Any]]] = {}
    for r in records:
        for m, v in _so3(r).items():
            d = by.setdefault(
                m,
                {"success": [], "found": [], "n": [], "median": [], "passes": [], "test_iou": []},
            )
            d["success"].append(float(v["success_rate"]))
            if "scored_at_most_truth" in v:
                d["found"].append(float(v["scored_at_most_truth"]))
            d["n"].append(v.get("n"))
            d["median"].append(float(v["median_error_deg"]))
            d["passes"].append(float(v["forward_passes"]))
            if "test_iou" in r.results:
                d["test_iou"].append(float(r.results["test_iou"]))
    return [{"method": m, **d} for m, d in by.items()]


def continuous_rows(records: Sequence[RunRecord]) -> dict[str, list[Any]]:
    """Over the continuous runs of one cell: consistency (and objects), test MSE, IoU, change."""
    out: dict[str, list[Any]] = {
        "consistency": [],
        "n": [],
        "test_mse": [],
        "test_iou": [],
        "pose_change": [],
    }
    for r in records:
        cons = (r.extra.get("continuous") or {}).get("consistency")
        if r.config.train.mode != "continuous" or not cons:
            continue
        out["consistency"].append(float(cons["consistency"]))
        out["n"].append(r.extra["continuous"].get("n_objects", r.results.get("n_test")))
        out["test_mse"].append(float(r.results["test_mse"]))
        if "test_iou" in r.results:
            out["test_iou"].append(float(r.results["test_iou"]))
        change = r.metrics[-1].get("pose_change_median_deg") if r.metrics else None
        if change is not None:
            out["pose_change"].append(float(change))
    return out


def _pct(c: dict[str, Any]) -> str:
    """A proportion cell in percent: ``"65% (95% CI 58–71%)"`` or ``"65% (95% CI n/a)"``."""
    if c["mean"] is None:
        return "n/a"
    if c["lo"] is None or c["hi"] is None:
        return f"{fmt(100 * c['mean'])}% (95% CI n/a)"
    return f"{fmt(100 * c['mean'])}% (95% CI {fmt(100 * c['lo'])}–{fmt(100 * c['hi'])}%)"


def answer(methods: Sequence[dict[str, Any]], cont: dict[str, list[Any]]) -> str:
    """One sentence from the numbers of one cell, with the test IoU of the models."""
    parts = []
    if methods:
        succ = {m["method"]: prop_cell(m["success"], m.get("n", [])) for m in methods}
        ranked = sorted(methods, key=lambda m: -succ[m["method"]]["mean"])
        best, rest = ranked[0], ranked[1:]
        others = ", ".join(f"{m['method']} {fmt(100 * succ[m['method']]['mean'])}%" for m in rest)
        iou = ci_text(ci_cell(best.get("test_iou", []), bounds=(0.0, 1.0)))
        parts.append(
            f"{best['method']} recovered {_pct(succ[best['method']])} of SO(3)-rotated test "
            f"objects to within the threshold at {fmt(mean_ci(best['passes'])[0])} forward "
            "passes per object"
            + (
                f" (a rotation scoring at least as well as the truth for "
                f"{fmt(100 * prop_cell(best['found'], best['n'])['mean'])}%)"
                if best.get("found")
                else ""
            )
            + (f", against {others}" if others else "")
            + f" (single-orientation models' test IoU {iou})"
        )
    if cont["consistency"]:
        c = prop_cell(cont["consistency"], cont.get("n", []))
        iou = ci_text(ci_cell(cont.get("test_iou", []), bounds=(0.0, 1.0)))
        parts.append(
            f"continuous search training put {_pct(c)} of test objects within one canonical "
            f"pose (test IoU {iou})"
        )
    if not parts:
        return "No run has a continuous-pose measurement yet."
    return "; ".join(parts) + "."


def _tables(
    grid: Sequence[Cell], keys: Sequence[str], variant: bool
) -> tuple[list[list[Any]], list[list[Any]]]:
    """Rows of the method table and of the continuous-training table, per cell."""
    methods, cont = [], []
    for g in grid:
        for c in cells(g.runs):
            head = [c.values.get("variant")] * variant + g.grid(keys)
            for m in method_rows(c.runs):
                methods.append(
                    [
                        m["method"],
                        *head,
                        prop_cell(m["success"], m["n"]),
                        prop_cell(m["found"], m["n"]) if m["found"] else ci_cell([]),
                        ci_cell(m["median"]),
                        ci_cell(m["passes"]),
                        ci_cell(m["test_iou"], bounds=(0.0, 1.0)),
                    ]
                )
            k = continuous_rows(c.runs)
            if k["consistency"]:
                cont.append(
                    [
                        *head,
                        prop_cell(k["consistency"], k["n"]),
                        ci_cell(k["test_mse"]),
                        ci_cell(k["test_iou"], bounds=(0.0, 1.0)),
                        ci_cell(k["pose_change"]),
                    ]
                )
    return methods, cont


def _cell_answer(runs: Sequence[RunRecord]) -> str:
    """:func:`answer` for the runs of one grid cell. Variants that measure the same thing
    (two single-orientation variants, or two continuous ones) are never pooled: each then
    gets its own sentence, named."""
    parts = [
        (c.values.get("variant"), method_rows(c.runs), continuous_rows(c.runs)) for c in cells(runs)
    ]
    singles = sum(1 for _, m, _ in parts if m)
    conts = sum(1 for _, _, k in parts if k["consistency"])
    if singles <= 1 and conts <= 1:
        return answer(method_rows(runs), continuous_rows(runs))
    return " ".join(f"{v}: {answer(m, k)}" for v, m, k in parts if m or k["consistency"])


def answers(grid: Sequence[Cell]) -> str:
    """:func:`answer` per grid cell (``"At latent=4: ..."`` when there are several)."""
    if len(grid) <= 1:
        return _cell_answer(grid[0].runs if grid else ())
    return " ".join(f"At {g.label()}: {_cell_answer(g.runs)}" for g in grid)


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    grid = cells(records, ignore=COMPARED)
    keys = grid_keys(spec, skip=COMPARED)
    methods, cont = _tables(grid, keys, bool(spec.variants))
    text = (
        f"Single-orientation models; {options.n} test objects per seed, each turned by a "
        "uniform random rotation (trilinear resampling, thresholded at 0.5). Success: "
        f"geodesic error below {options.threshold_deg}° modulo the object's symmetry. "
        "Found ≤ truth: the share of objects whose found rotation scores at least as well "
        "as the true one: the search did not lose to its model, and a failure there is "
        "the model's score. "
        "Per cell (runs that differ in seed alone): success rate and found ≤ truth over the "
        "pooled objects of the seeds with a 95% Wilson interval (objects as independent "
        "trials: the finite "
        "test set, not the spread between seeds); the rest: mean and 95% Student-t interval "
        "over seeds (n/a with one seed)."
    )
    cont_text = (
        "Continuous runs: consistency is the largest fraction of test objects whose "
        f"canonical rotation H = Rᵀ R_true lies within {options.radius_deg}° of one of "
        "them (protocol so3+search rotations, full coarse-to-fine search; Wilson interval on "
        "the pooled objects); test MSE and IoU under so3+search; pose change: the last "
        "epoch's median angle between consecutive canonical rotations of the training objects."
    )
    head = ["variant"] * bool(spec.variants) + grid_columns(keys)
    sections = [
        section(
            "Pose error against method",
            text,
            [
                "method",
                *head,
                "success rate",
                "found ≤ truth",
                "median error (°)",
                "forward passes / object",
                "test IoU",
            ],
            methods,
            _lever(records, spec, options, out),
        ),
        section(
            "Continuous search training",
            cont_text,
            [*head, "consistency", "test MSE", "test IoU", "pose change (°)"],
            cont,
        ),
    ]
    groups = cells(records)  # runs that differ in seed alone
    by_class = success_by_class_section(groups, keys, bool(spec.variants), options)
    if by_class is not None:
        sections.append(by_class)
    per_class = per_class_iou_section(groups, grid_keys(spec))
    if per_class is not None:
        sections.append(per_class)
    questions = spec.questions or QUESTIONS
    return jsonable(
        {
            "name": spec.name,
            "answers": [{"question": " ".join(questions), "answer": answers(grid)}],
            "sections": sections,
            "methods": [{"cell": c.values, "rows": method_rows(c.runs)} for c in groups],
            "continuous": [{"cell": c.values, **continuous_rows(c.runs)} for c in groups],
        }
    )


def success_by_class_section(
    groups: Sequence[Cell], keys: Sequence[str], variant: bool, options: Options
) -> dict[str, Any] | None:
    """Pose success per class: one row per method and cell, one column per class, each
    a Wilson interval over the pooled objects of the cell's seeds (``by_class`` of each
    run's ``continuous.json``). None when no run recorded classes."""
    names = list(
        dict.fromkeys(
            n
            for c in groups
            for r in c.runs
            for v in _so3(r).values()
            for n in v.get("by_class") or {}
        )
    )
    if not names:
        return None
    rows = []
    for c in groups:
        per: dict[str, list[dict[str, Any]]] = {}
        for r in c.runs:
            for m, v in _so3(r).items():
                per.setdefault(m, []).append(v.get("by_class") or {})
        head = [c.values.get("variant")] * variant + c.grid(keys)
        for m, runs in per.items():
            got = [[b[n] for b in runs if n in b] for n in names]
            rates = [prop_cell([g["success_rate"] for g in x], [g["n"] for g in x]) for x in got]
            rows.append([m, *head, *rates])
    text = (
        f"Success (geodesic error below {options.threshold_deg}° modulo symmetry) of each "
        "class's rotated test objects, per method and cell: the objects of the cell's seeds "
        "pooled, 95% Wilson interval. A class whose objects share no pose bounds the "
        "all-objects rate whatever the search does."
    )
    cols = ["method", *(["variant"] * variant), *grid_columns(keys), *names]
    return section("Pose success per class", text, cols, rows)


def _lever(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> list[str]:
    """Success rate per method against the first grid key with several values."""
    keys = [k for k, v in spec.grid if len(v) > 1 and k not in COMPARED]
    if not keys:
        return []
    method_cells = [
        (Cell({**c.values, "method": m["method"]}, c.runs), prop_cell(m["success"], m["n"]))
        for c in cells(records)
        for m in method_rows(c.runs)
    ]
    stats = {id(c): st for c, st in method_cells}
    fig = lever_figure(
        out,
        "continuous_lever",
        [c for c, _ in method_cells],
        keys[0],
        lambda c: stats[id(c)],
        series=lambda c: str(c.values["method"]),
        series_keys=(*COMPARED, "method"),
        ylabel=f"success rate (error < {options.threshold_deg:g}°, 95% Wilson)",
        title="Pose recovery against " + keys[0],
    )
    return [fig] if fig else []


def check(spec: ExperimentSpec, options: Options) -> None:
    """Refuse grid modes other than single and continuous (nothing is measured for them),
    and pose-search options the search would refuse after training."""
    check_grid_values(spec, "train.mode", ("single", "continuous"), "continuous")
    o = options
    check_search_options(
        o.steps, o.top_k, o.levels, o.cosets, lambda f: f"options.{f}", o.head_views
    )
    known = (*METHOD_NAMES, HEAD_METHOD)
    for m in o.methods:
        if m not in known:
            raise ConfigError(f"options.methods: {m!r} is not one of {', '.join(known)}")
    if o.head_epochs < 1:
        raise ConfigError(f"options.head_epochs: {o.head_epochs} is invalid, must be >= 1")


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
    check=check,
)
