"""Recovery of continuous rotations: how often pose estimation finds a known SO(3) pose.

Test objects are turned by uniform random rotations and each method of
:data:`orient3d.search.continuous.METHODS` estimates the rotation back; an answer
counts as right modulo the object's symmetry (:func:`symmetric_error`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from orient3d.geometry import groups, so3
from orient3d.model import VAE
from orient3d.search.continuous import METHODS, estimate_pose, frozen_eval, pose_scores

__all__ = ["recover_continuous", "rotated_test_set", "symmetric_error"]

log = logging.getLogger(__name__)


def symmetric_error(R_pred: Tensor, R_true: Tensor, stabilizers: Tensor) -> Tensor:
    """Angle in radians between predicted and true poses, modulo each object's symmetry.

    If ``M_s·c == c`` then ``x = R_true·c = (R_true M_s)·c``, so every ``R_true M_s``
    with ``s`` in the stabilizer is an equally right answer:
    ``error = min_s angle(R_pred, R_true @ M_s)``.

    Args:
        R_pred, R_true: ``(B, 3, 3)``.
        stabilizers: ``(B, 24)`` bool, element ``s`` of ``groups.cube_group()`` fixes
            the object (the identity must be set).
    """
    M = groups.cube_group().matrices.to(R_true.device, R_true.dtype)  # (G, 3, 3)
    alts = R_true[:, None] @ M[None]  # (B, G, 3, 3)
    ang = so3.geodesic_angle(R_pred[:, None].to(R_true.dtype), alts)  # (B, G)
    ang = torch.where(stabilizers.to(torch.bool), ang, torch.full_like(ang, math.inf))
    return ang.min(dim=1).values


def rotated_test_set(
    test_voxels: Tensor, n: int, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor, Tensor]:
    """``n`` objects drawn without replacement, turned by uniform random rotations.

    Returns ``idx (n,)``, ``R_true (n, 3, 3)`` and the binary inputs ``x (n, D, D, D)``:
    ``resample(c, R_true)`` thresholded at 0.5.
    """
    idx = torch.randperm(test_voxels.shape[0], generator=generator)[:n]
    c = test_voxels[idx].to(torch.float32)  # (n, D, D, D)
    R_true = so3.random_rotations(len(idx), generator)  # (n, 3, 3)
    x = (so3.resample(c, R_true) > 0.5).to(torch.float32)  # (n, D, D, D)
    return idx, R_true, x


def _summary(err: Tensor, found: Tensor, truth: Tensor, threshold_deg: float) -> dict[str, Any]:
    """Success, errors, and which failures are the score's fault rather than the search's."""
    fail = err >= threshold_deg  # (n,)
    not_worse = found <= truth + 1e-3  # (n,) the search found a rotation as good as the truth
    model_fault = not_worse[fail].float().mean() if bool(fail.any()) else None
    return {
        "success_rate": float((~fail).float().mean()),
        "scored_at_most_truth": float(not_worse.float().mean()),
        "median_error_deg": float(err.quantile(0.5)),
        "mean_error_deg": float(err.mean()),
        "failures_scored_below_truth": None if model_fault is None else float(model_fault),
    }


def _by_class(
    labels: Tensor,
    names: Sequence[str],
    err: Tensor,
    found: Tensor,
    truth: Tensor,
    threshold: float,
) -> dict[str, dict[str, Any]]:
    """Success and found ≤ truth per class of the drawn objects (``labels (n,)``)."""
    out: dict[str, dict[str, Any]] = {}
    for c in sorted(set(labels.tolist())):
        m = labels == c
        name = names[c] if c < len(names) else str(c)
        out[name] = {
            "n": int(m.sum()),
            "success_rate": float((err[m] < threshold).float().mean()),
            "scored_at_most_truth": float((found[m] <= truth[m] + 1e-3).float().mean()),
        }
    return out


def recover_continuous(
    model: VAE,
    test_voxels: Tensor,
    stabilizers: Tensor,
    n: int,
    methods: Sequence[str] = tuple(METHODS),
    generator: torch.Generator | None = None,
    *,
    threshold_deg: float = 10.0,
    batch: int = 16,
    labels: Tensor | None = None,
    class_names: Sequence[str] = (),
    **options: Any,
) -> dict[str, dict[str, dict[str, Any]]]:
    """Recover random SO(3) rotations of test objects with each method.

    ``n`` objects (drawn without replacement) are each turned by a uniform random
    rotation ``R_true`` (trilinear resampling, then thresholded at 0.5: a binary
    voxelization, as real data would be; :func:`rotated_test_set`) and each method
    estimates ``R``. Success:
    :func:`symmetric_error` below ``threshold_deg``.

    Returns:
        ``{"so3": {method: {"success_rate", "scored_at_most_truth", "median_error_deg",
        "mean_error_deg", "failures_scored_below_truth", "forward_passes",
        "backward_passes", "seconds", "n", "threshold_deg"}}}``, JSON-ready;
        ``forward_passes`` per object, ``seconds`` for all ``n``.
        ``scored_at_most_truth``: the fraction of objects whose found rotation scores
        at least as well as the true one (the search did not lose to its model).
        ``failures_scored_below_truth``: the same among the failures only (the
        score's fault there, not the search's); None without failures.
        With ``labels`` (``(N,)`` class indices of ``test_voxels``, names in
        ``class_names``) each method also gets ``"by_class"``: ``{name: {"n",
        "success_rate", "scored_at_most_truth"}}`` over the objects drawn.
    """
    idx, R_true, x = rotated_test_set(test_voxels, n, generator)
    device = next(model.parameters()).device
    with frozen_eval(model):
        truth = pose_scores(model, x.to(device), R_true[:, None].to(device))[:, 0].cpu()  # (n,)
    out: dict[str, dict[str, Any]] = {}
    for m in methods:
        t0 = time.perf_counter()
        parts = [estimate_pose(model, xb, m, **options) for xb in x.split(batch)]
        seconds = time.perf_counter() - t0
        R_pred = torch.cat([p.R.cpu() for p in parts])  # (n, 3, 3)
        found = torch.cat([p.score.cpu() for p in parts])  # (n,)
        err = torch.rad2deg(symmetric_error(R_pred, R_true, stabilizers[idx]))
        out[m] = _summary(err, found, truth, threshold_deg) | {
            "forward_passes": parts[0].forward_passes,
            "backward_passes": parts[0].backward_passes,
            "seconds": seconds,
            "n": len(idx),
            "threshold_deg": threshold_deg,
        }
        if labels is not None:
            out[m]["by_class"] = _by_class(
                labels[idx], class_names, err, found, truth, threshold_deg
            )
        log.info("so3 %s: %s", m, out[m])
    return {"so3": out}
