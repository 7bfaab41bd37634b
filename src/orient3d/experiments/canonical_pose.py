"""The canonical kind's per-run measurement: each test object's canonical pose.

:func:`pose_analysis` → ``RUN/canonical_pose.json``, on every test object in its
stored pose: the search's hard choice ``r`` (exhaustive over O, encoder mean,
scores alone: ``g`` is unknown at test time, so no prior), the canonical pose
``h = r⁻¹`` (independent of the view for an exact search); global and per-class
consistency (modulo symmetry), usage entropy, upright agreement
(:mod:`orient3d.metrics.upright`) via :func:`pose_record`, and the picture of
each class's first objects in their canonical poses (first seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orient3d import metrics
from orient3d.experiments.analysis import search_choice
from orient3d.experiments.common import AnalysisTask, jsonable
from orient3d.geometry import groups
from orient3d.metrics import random_max
from orient3d.metrics.upright import upright_agreement

__all__ = ["picture", "pose_analysis", "pose_record"]


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
                "up_counts": up["per_class_up_counts"][c],
                # objects using each pose (h·Stab ∋ p); at the identity: the stored
                # frame recovered (the oracle's recovery accuracy, by view independence)
                "pose_counts": r["counts"],
            }
            for c, r in cls["per_class"].items()
        },
        "n_used": usage["n_used"],
        "entropy_normalized": usage["entropy_normalized"],
        "upright": up["upright"],
        "upright_chance": up["chance"],
        "up_consistency": up["up_consistency"],
    }


def picture(test: Any, h: torch.Tensor, k: int, out: Path) -> None:
    """Rows: classes; columns: the first ``k`` objects of the class in their canonical pose."""
    from orient3d.report.render import render_sheet, save_png

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
    from orient3d.data import load_data
    from orient3d.devices import resolve_device
    from orient3d.evaluation.protocols import load_run
    from orient3d.rundir.runs import read_run_config, write_json

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
        picture(test, h, task.options.picture_per_class, pic)
    write_json(out, jsonable(record))
