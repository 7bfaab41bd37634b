"""Per-run measurements that need the trained model (run after training, in workers).

Each writes a JSON file into the run folder and skips the work when the file is
already there, so an interrupted experiment resumes its analysis too:

- :func:`recovery` → ``RUN/recover.json``, exactly as ``orient3d recover RUN``
  (:func:`orient3d.evaluation.recovery.recover`): each test object turned by a random element
  ``g`` of O (the run's seed), exhaustive search picks ``r = argmin_r L_r(x)``
  (encoder mean), counted right when ``r·c`` and ``g·c`` are the same voxels.
- :func:`canonical` → ``RUN/canonical.json``: the first ``n_objects`` test objects
  shown in all 24 poses, each view canonicalized by the same search (hard argmin),
  giving canonical poses ``h = r⁻¹g`` ``(N, 24)``; instance, class and global
  consistency and orientation usage (``orient3d.metrics``), the test MSE of every
  model under one common protocol (``rotated+search``), and for the first seed a
  picture ``RUN/figures/poses.png``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from orient3d import metrics
from orient3d.config import Config
from orient3d.data import VoxelSet
from orient3d.experiments.common import AnalysisTask, jsonable
from orient3d.geometry import groups
from orient3d.model import VAE

log = logging.getLogger(__name__)

__all__ = ["canonical", "canonical_poses", "recovery", "search_choice"]

METHOD = "exhaustive search over the 24 rotations of O, encoder mean, hard argmin"


def _load(path: Path) -> tuple[Config, VAE, VoxelSet]:
    from orient3d.data import load_data
    from orient3d.devices import resolve_device
    from orient3d.evaluation.protocols import load_run
    from orient3d.rundir.runs import read_run_config

    device = resolve_device(read_run_config(path).train.device)
    cfg, model = load_run(path, str(device))
    _, test = load_data(cfg)
    return cfg, model, test


def search_choice(model: VAE, x: Tensor, cfg: Config) -> Tensor:
    """``r (B,)`` = argmin over O of the score of ``r⁻¹·x``, in chunks of the batch."""
    from orient3d.search.discrete import score_orientations

    device = next(model.parameters()).device
    out = []
    for s in range(0, x.shape[0], 256):
        xb = x[s : s + 256].to(device).float()
        scores = score_orientations(
            model, xb, groups.cube_group(), precision=cfg.search.precision, chunk=cfg.search.chunk
        )
        out.append(scores.argmin(dim=1).cpu())
    return torch.cat(out)


def recovery(task: AnalysisTask) -> None:
    """Write ``RUN/recover.json`` as ``orient3d recover RUN`` does, unless it exists.

    :func:`orient3d.evaluation.recovery.recover` with the run's seed for the rotations, hard
    choice, fp32; adds ``chance`` (``mean |Stab| / 24`` over the objects used).
    """
    from orient3d.evaluation.recovery import recover
    from orient3d.rundir.runs import write_json

    out = task.path / "recover.json"
    if out.is_file():
        return
    cfg, model, test = _load(task.path)
    n = min(len(test), task.options.n) if task.options.n > 0 else len(test)
    result = recover(
        model, test, n, generator=torch.Generator().manual_seed(cfg.seed), chunk=cfg.search.chunk
    )
    result["protocol"].update(seed=cfg.seed, data=cfg.data.source, checkpoint_run=str(task.path))
    result["chance"] = float(test.stabilizers[:n].sum(1).float().mean()) / 24
    write_json(out, jsonable(result))
    log.info("%s: recovery accuracy %.3f", task.path.name, result["accuracy"])


def canonical_poses(model: VAE, test: VoxelSet, cfg: Config, n: int) -> Tensor:
    """``(n, G)`` canonical poses ``h = r⁻¹g`` of the first ``n`` objects in all G views."""
    from orient3d.search.discrete import canonical_pose

    group = groups.cube_group()
    rows = []
    for s in range(0, n, 8):
        c = test.voxels[s : min(n, s + 8)].float()
        views = groups.orbit(c, group)  # (b, G, D, D, D): view g is g·c
        r = search_choice(model, views.reshape(-1, *c.shape[1:]), cfg).view(c.shape[0], -1)
        g = torch.arange(len(group)).expand_as(r)
        rows.append(canonical_pose(r, g, group))
    return torch.cat(rows)


def _consistency(h: Tensor, test: VoxelSet, min_frac: float) -> dict[str, Any]:
    group = groups.cube_group()
    n = h.shape[0]
    stab, labels = test.stabilizers[:n], test.labels[:n]
    inst = metrics.instance_consistency(h, stab, group)
    glob = metrics.global_consistency(h, stab, group)
    cls = metrics.class_consistency(h, stab, labels, group)
    usage = metrics.orientation_usage(
        h.reshape(-1), group, stab.repeat_interleave(h.shape[1], 0), min_count=min_frac * h.numel()
    )
    return {
        "n_objects": n,
        "n_views": int(h.shape[1]),
        "instance_consistency": inst["consistency"],
        "mean_distinct": inst["mean_distinct"],
        "global_consistency": glob["consistency"],
        "global_chance": glob["chance"],
        "pose_counts": glob["counts"],
        "class_consistency": cls["consistency"],
        "class_chance": cls["chance"],
        "n_used": usage["n_used"],
        "usage_min_count": min_frac * h.numel(),
        "entropy_nats": usage["entropy_nats"],
        "entropy_normalized": usage["entropy_normalized"],
        "usage_hist": usage["hist"],
    }


def top_voxels(probs: Tensor, x: Tensor) -> Tensor:
    """``(B, D, D, D)`` 0/1: each reconstruction's ``|x_b|`` most probable voxels.

    Small models' Bernoulli means are blurry and often all below 0.5; showing as
    many voxels as the input has shows the shape the model predicts.
    """
    flat = probs.flatten(1)
    k = x.flatten(1).sum(1).long().clamp(1, flat.shape[1])  # (B,)
    kth = flat.sort(dim=1, descending=True).values.gather(1, (k - 1)[:, None])  # (B, 1)
    return (flat >= kth).float().view_as(probs)


def _picture(model: VAE, test: VoxelSet, cfg: Config, k: int, out: Path) -> None:
    from orient3d.evaluation.protocols import eval_rotations
    from orient3d.report.render import render_sheet, save_png

    group = groups.cube_group()
    k = min(k, len(test))
    g = eval_rotations(len(test), cfg.seed)[:k]
    shown = groups.rotate(test.voxels[:k].float(), group, g)
    r = search_choice(model, shown, cfg)
    turned = groups.rotate(shown, group, group.inverse[r])
    device = next(model.parameters()).device
    with torch.inference_mode():
        recon = torch.sigmoid(model(turned.to(device), sample=False).logits.float()).cpu()
    h = group.table[group.inverse[r], g]
    grids = torch.stack([shown, turned, top_voxels(recon, turned)], dim=1)
    grids = grids.reshape(-1, *shown.shape[1:])
    labels = []
    for i in range(k):
        labels += [f"shown g={int(g[i])}", f"turned h={int(h[i])}", "reconstruction"]
    save_png(render_sheet(grids.numpy(), ncols=3, labels=labels), out)


def canonical(task: AnalysisTask) -> None:
    """Write ``RUN/canonical.json`` (and the picture for the first seed) unless present."""
    from orient3d.evaluation.protocols import evaluate
    from orient3d.rundir.runs import write_json
    from orient3d.search.discrete import canonicalize

    out = task.path / "canonical.json"
    if out.is_file():
        return
    cfg, model, test = _load(task.path)
    opts = task.options
    n = min(len(test), opts.n_objects)
    record = _consistency(canonical_poses(model, test, cfg, n), test, opts.usage_min_frac)
    record["method"] = METHOD

    def search(m: VAE, x: Tensor) -> Tensor:
        kw = {"precision": cfg.search.precision, "chunk": cfg.search.chunk}
        return canonicalize(m, x, groups.cube_group(), **kw)

    common = evaluate(model, test, cfg, protocol="rotated+search", canonicalize=search)
    record["common_protocol"] = "rotated+search"
    record["common_test_mse"] = common["test_mse"]
    record["common_test_iou"] = common["test_iou"]
    if task.first_seed and opts.picture_objects > 0:
        _picture(model, test, cfg, opts.picture_objects, task.path / "figures" / "poses.png")
    write_json(out, jsonable(record))
    log.info("%s: global consistency %.3f", task.path.name, record["global_consistency"])
