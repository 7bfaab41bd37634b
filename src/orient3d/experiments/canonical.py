"""Does a search-trained VAE learn one canonical pose, and what makes it?

Runs: named variants × seeds, by default the orientation prior of the search
(``search.prior``: ``uniform``, ``learned``, ``class`` = one prior per class, an
oracle) crossed with annealing (off: hard choice; on: the soft choice annealed
from ``temperature_start`` to a near-hard ``temperature``), all at the same
data, model, epochs and search (configs/canonical.toml).

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

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orient3d import groups, metrics
from orient3d.experiments.analysis import search_choice
from orient3d.experiments.common import (
    AnalysisTask,
    Kind,
    RunRecord,
    ci_cell,
    fmt,
    jsonable,
    section,
)
from orient3d.experiments.search_modes import random_max
from orient3d.experiments.spec import ExperimentSpec, RunSpec
from orient3d.figures import plot_pose_histograms
from orient3d.metrics.upright import upright_agreement
from orient3d.stats import mean_ci

__all__ = ["KIND", "Options", "answer", "pose_analysis", "pose_record", "summarize"]

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


def pose_record(
    h: np.ndarray, stab: np.ndarray, labels: np.ndarray, names: Sequence[str], min_frac: float
) -> dict[str, Any]:
    """The canonical-pose measurements of ``N`` objects with canonical poses ``h (N,)``."""
    group = groups.cube_group()
    glob = metrics.global_consistency(h, stab, group)
    cls = metrics.class_consistency(h, stab, labels, group)
    usage = metrics.orientation_usage(h, group, stab, min_count=min_frac * len(h))
    up = upright_agreement(h, stab, group, labels)
    return {
        "n_objects": len(h),
        "canonical_pose": h,
        "global_consistency": glob["consistency"],
        "global_modal_pose": glob["modal_pose"],
        "global_chance": glob["chance"],
        "random_max": random_max(len(h)),
        "pose_counts": glob["counts"],
        "class_consistency": cls["consistency"],
        "class_consistency_weighted": cls["weighted"],
        "class_random_max": float(np.mean([random_max(r["n"]) for r in cls["per_class"].values()])),
        "per_class": {
            names[int(c)]: {
                "consistency": r["consistency"],
                "modal_pose": r["modal_pose"],
                "n": r["n"],
                "upright": up["per_class"][c],
            }
            for c, r in cls["per_class"].items()
        },
        "n_used": usage["n_used"],
        "entropy_normalized": usage["entropy_normalized"],
        "upright": up["upright"],
        "upright_chance": up["chance"],
        "up_consistency": up["up_consistency"],
    }


def _picture(test: Any, h: torch.Tensor, k: int, out: Path) -> None:
    """Rows: classes; columns: the first ``k`` objects of the class in their canonical pose."""
    from orient3d.render import render_sheet, save_png

    group = groups.cube_group()
    grids, labels = [], []
    for c in torch.unique(test.labels).tolist():
        idx = (test.labels == c).nonzero(as_tuple=True)[0][:k]
        turned = groups.rotate(test.voxels[idx].float(), group, h[idx])  # h·c
        pad = torch.zeros(k - len(idx), *turned.shape[1:])
        grids.append(torch.cat([turned, pad]))
        labels += [f"{test.class_names[c]} h={int(p)}" for p in h[idx]] + [""] * (k - len(idx))
    sheet = render_sheet(torch.cat(grids).numpy(), ncols=k, labels=labels)
    save_png(sheet, out)


def pose_analysis(task: AnalysisTask) -> None:
    """Write ``RUN/canonical_pose.json`` (and the first seed's picture) unless present."""
    from orient3d.devices import resolve_device
    from orient3d.evaluate import load_run
    from orient3d.runs import read_run_config, write_json
    from orient3d.train import load_data

    out = task.path / "canonical_pose.json"
    if out.is_file():
        return
    device = resolve_device(read_run_config(task.path).train.device)
    cfg, model = load_run(task.path, str(device))
    test = load_data(cfg)[1]
    n = len(test) if task.options.n_objects <= 0 else min(len(test), task.options.n_objects)
    test = test.subset(list(range(n)))
    r = search_choice(model, test.voxels.float(), cfg)  # shown as stored: g = identity
    h = groups.cube_group().inverse[r]  # h = r⁻¹g
    record = pose_record(
        h.numpy(),
        test.stabilizers.numpy(),
        test.labels.numpy(),
        test.class_names,
        task.options.usage_min_frac,
    )
    record["method"] = "stored pose, exhaustive search over O, encoder mean, hard argmin"
    if task.first_seed and task.options.picture_per_class > 0:
        pic = task.path / "figures" / "canonical_per_class.png"
        _picture(test, h, task.options.picture_per_class, pic)
    write_json(out, jsonable(record))


def _by_variant(records: Sequence[RunRecord]) -> dict[str, list[RunRecord]]:
    out: dict[str, list[RunRecord]] = {}
    for r in records:
        out.setdefault(str(r.params.get("variant") or r.name), []).append(r)
    return out


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


def _train_share(runs: Sequence[RunRecord]) -> list[float]:
    """Per run: share of the training samples of the last epoch in its modal pose index."""
    vals = []
    for r in runs:
        hists = [m["pose_hist"] for m in r.metrics if m.get("pose_hist")]
        if hists and sum(hists[-1]) > 0:
            vals.append(max(hists[-1]) / sum(hists[-1]))
    return vals


def _setting(runs: Sequence[RunRecord]) -> tuple[str, str]:
    """The prior (with its weight when not 1) and whether the choice was annealed."""
    s = runs[0].config.search
    prior = (
        s.prior if s.prior == "uniform" or s.prior_weight == 1 else f"{s.prior} ×{s.prior_weight:g}"
    )
    anneal = "on" if s.choice == "soft" else "off"
    return prior, anneal


def _row(name: str, runs: Sequence[RunRecord]) -> list[Any]:
    prior, anneal = _setting(runs)
    return [
        name,
        prior,
        anneal,
        ci_cell([r.results["test_mse"] for r in runs]),
        ci_cell(_values(runs, "global_consistency")),
        ci_cell(_train_share(runs)),
        ci_cell(_values(runs, "class_consistency")),
        ci_cell(_values(runs, "n_used")),
        ci_cell(_values(runs, "entropy_normalized")),
        ci_cell(_values(runs, "upright")),
        ci_cell(_values(runs, "up_consistency")),
        ci_cell(_epochs(runs, "changed_frac")),
        ci_cell(_epochs(runs, "prior_entropy")),
        ci_cell(_epochs(runs, "score_gap_median")),
        ci_cell(_epochs(runs, "prior_changed_frac", last=False)),
        ci_cell([r.results.get("seconds_total", float("nan")) for r in runs]),
    ]


COLUMNS = [
    "setting",
    "prior",
    "annealing",
    "test MSE (rotated+search)",
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
    "seconds",
]


def answer(records: Sequence[RunRecord]) -> str:
    """One sentence: whether a canonical pose emerged, and under which setting.

    Emerged: the best setting's mean global consistency is at least 0.5 and its
    95% interval lies above the uniform prior's (hard choice, or the first
    uniform setting). Chance: 1/24, and the expected modal share of randomly posed
    objects.
    """
    groups_ = {k: v for k, v in _by_variant(records).items() if _values(v, "global_consistency")}
    if not groups_:
        return "No run has canonical-pose measurements yet."
    stats = {k: mean_ci(_values(v, "global_consistency")) for k, v in groups_.items()}
    best = max(stats, key=lambda k: stats[k][0])
    uniform = [k for k, v in groups_.items() if _setting(v)[0] == "uniform"]
    uni = next((k for k in uniform if _setting(groups_[k])[1] == "off"), None)
    uni = uni or (uniform[0] if uniform else None)
    m, lo, hi = stats[best]
    n = int(min(_values(groups_[best], "n_objects")))
    above = uni is None or (np.isfinite(lo) and lo > stats[uni][2])
    emerged = m >= EMERGED and above and uni != best
    up = float(np.mean(_values(groups_[best], "upright")))
    up_chance = float(np.mean(_values(groups_[best], "upright_chance") or [1 / 6]))
    cm, clo, chi = mean_ci(_values(groups_[best], "class_consistency"))
    c_chance = _values(groups_[best], "class_random_max")
    head = (
        f"A single canonical pose emerged under {best}"
        if emerged
        else f"No single canonical pose emerged; the most consistent setting was {best}"
    )
    text = (
        f"{head}: global consistency {fmt(m)} [{fmt(lo)}, {fmt(hi)}] over {n} test objects "
        f"(chance 1/24 = 0.042; {fmt(random_max(n), 2)} expected for randomly posed objects)"
    )
    if uni is not None and uni != best:
        um, ulo, uhi = stats[uni]
        text += f", against {fmt(um)} [{fmt(ulo)}, {fmt(uhi)}] with the uniform prior ({uni})"
    text += f"; per class, consistency {fmt(cm)} "
    text += f"[{fmt(clo)}, {fmt(chi)}]"
    if c_chance:
        text += f" (random: {fmt(float(np.mean(c_chance)), 2)})"
    return f"{text}; upright agreement {fmt(up, 2)} (chance {fmt(up_chance, 2)})."


def _figures(groups_: dict[str, list[RunRecord]], out: Path) -> dict[str, list[str]]:
    figs: dict[str, list[str]] = {"usage": [], "classes": []}
    hists = []
    for name, runs in groups_.items():
        first = min(runs, key=lambda r: r.config.seed)
        if "canonical_pose" in first.extra:
            counts = first.extra["canonical_pose"]["pose_counts"]
            hists.append((f"{name} (seed {first.config.seed})", counts))
        pic = first.path / "figures" / "canonical_per_class.png"
        if pic.is_file():
            dest = f"figures/canonical_{name}.png"
            (out / "figures").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(pic, out / dest)
            figs["classes"].append(dest)
    if hists:
        plot_pose_histograms(out / "figures" / "canonical_usage.png", hists, title="Poses used")
        figs["usage"].append("figures/canonical_usage.png")
    return figs


def summarize(
    records: Sequence[RunRecord], spec: ExperimentSpec, options: Options, out: Path
) -> dict[str, Any]:
    groups_ = _by_variant(records)
    figs = _figures(groups_, out)
    n = max((int(v) for g in groups_.values() for v in _values(g, "n_objects")), default=0)
    sections = [
        section(
            "Canonical pose per setting",
            f"{n} test objects in their stored pose, each turned by exhaustive search over "
            "O (hard argmin of the scores, encoder mean, no prior: the applied rotation is "
            "unknown at test time); canonical pose h = r⁻¹. Consistency: share of objects "
            "using the modal pose (globally, and per class averaged over classes), symmetric "
            "objects' equivalent poses counted as one; chance 1/24, or about "
            f"{fmt(random_max(max(n, 1)), 2)} as the modal share of {n} randomly posed "
            "objects. Upright: the canonical frame keeps +z up (chance about 1/6); up "
            "consistency: share of the modal direction of up. Test MSE under one protocol for "
            "every run: rotated+search. Train modal share: share of the last epoch's training "
            "samples in the most common canonical pose index, chosen with the prior (by index, "
            "not modulo symmetry). From the last training epoch: changed (objects whose "
            "canonical grid changed since the previous epoch), the prior's entropy (of log 24 "
            "= 3.18), the score gap (median over the training samples of the second-best minus "
            "the best negative ELBO over the 24 poses, in nats); prior overruled: share of "
            "training samples whose chosen pose scored worse than the best (mean over the "
            "search epochs). The prior's weight in the score L - λ log p(h) is 1 (the ELBO) "
            "unless shown as ×λ. Mean and 95% interval over seeds.",
            COLUMNS,
            [_row(k, v) for k, v in groups_.items()],
            figs["usage"],
        ),
        section(
            "One canonical pose per class?",
            "Per setting (first seed): rows are classes, columns the first test objects of "
            "each class turned to the pose the model uses for them.",
            figures=figs["classes"],
        ),
    ]
    return jsonable(
        {
            "name": spec.name,
            "answers": [
                {"question": (spec.questions or (QUESTION,))[0], "answer": answer(records)}
            ],
            "sections": sections,
        }
    )


def _wants(run: RunSpec, options: Options) -> bool:
    return run.config.train.mode == "search"


KIND = Kind(
    questions=(QUESTION,),
    options=Options,
    summarize=summarize,
    analyze=pose_analysis,
    wants_analysis=_wants,
    extra_files=("canonical_pose.json",),
)
