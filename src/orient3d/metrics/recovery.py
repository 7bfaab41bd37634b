"""Recovery accuracy: does a model find the orientation it was shown, modulo symmetry?

A model trained in ``single`` mode sees test objects ``x = g·c`` (``c`` the object in
its ground-truth pose, ``g`` the applied rotation) and predicts ``pred``. The
prediction is right when it gives the same voxels: ``pred·c == g·c``, i.e.
``g⁻¹·pred ∈ Stab(c)``. A wrong prediction is off by the error rotation
``e = pred·g⁻¹`` (it maps the shown grid onto the predicted one); because every
``pred·s`` with ``s ∈ Stab(c)`` gives the same grid, the error is reported as
the representative of smallest rotation angle among ``pred·s·g⁻¹``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orient3d.geometry.groups import CubeGroup
from orient3d.metrics._common import (
    ArrayLike,
    check_indices,
    check_stab,
    coset_mask,
    group_tables,
    to_numpy,
)

__all__ = ["error_angles", "recovery_accuracy"]

# The angles (degrees) a rotation of O can have; wrong predictions fall in 90/120/180.
ERROR_ANGLES = (90, 120, 180)


def error_angles(
    pred: ArrayLike, true: ArrayLike, stab_mask: ArrayLike, group: CubeGroup
) -> np.ndarray:
    """``(B,)`` smallest angle in degrees of ``pred·s·true⁻¹`` over ``s ∈ Stab(c)``.

    0 exactly when the prediction is right modulo symmetry. For Oh the angle is
    that of the element's proper part (``group.angles``).
    """
    order = len(group)
    p = check_indices("pred", to_numpy(pred).reshape(-1), order)
    t = check_indices("true", to_numpy(true).reshape(-1), order)
    if p.shape != t.shape:
        raise ValueError(f"pred and true must have the same length, got {p.shape}, {t.shape}")
    stab = check_stab(stab_mask, p.shape[0], order)
    table, inverse = group_tables(group)
    # err[b, s] = index of pred_b · s · true_b⁻¹ for every s in the group.
    err = table[table[p], inverse[t][:, None]]  # (B, G)
    deg = np.rint(np.degrees(group.angles.numpy()))[err]
    deg = np.where(stab, deg, np.inf)
    return deg.min(axis=1)


def recovery_accuracy(
    pred: ArrayLike,
    true: ArrayLike,
    stab_mask: ArrayLike,
    group: CubeGroup,
    posterior: ArrayLike | None = None,
) -> dict[str, Any]:
    """Fraction of orientations recovered, modulo symmetry, with an error breakdown.

    Args:
        pred: ``(B,)`` predicted rotation indices (the model's estimate of ``g``).
        true: ``(B,)`` applied rotation indices ``g``.
        stab_mask: ``(B, G)`` bool stabilizer mask of each object in its
            ground-truth pose ``c`` (``groups.stabilizer_mask``); ``(G,)`` is
            broadcast to every row.
        group: the group the indices refer to.
        posterior: optional ``(B, G)`` probabilities over the rotation; adds the
            mean posterior mass on the truth, summed over every element that gives
            the same voxels as the truth.

    Returns:
        ``accuracy`` (float), ``n``, ``n_correct``, ``correct`` ``(B,)`` bool,
        ``error_angle`` ``(B,)`` degrees (0 when right), ``error_angle_counts``
        ``{90: n, 120: n, 180: n}`` over the wrong predictions, and
        ``posterior_mass`` (float) when a posterior is given.
    """
    angles = error_angles(pred, true, stab_mask, group)
    correct = angles == 0
    n = int(correct.shape[0])
    counts = {a: int((angles == a).sum()) for a in ERROR_ANGLES}
    for a in np.unique(angles[~correct]).tolist():  # only other angles for Oh
        counts.setdefault(int(a), int((angles == a).sum()))
    out: dict[str, Any] = {
        "accuracy": float(correct.mean()) if n else float("nan"),
        "n": n,
        "n_correct": int(correct.sum()),
        "correct": correct,
        "error_angle": angles,
        "error_angle_counts": counts,
    }
    if posterior is not None:
        post = to_numpy(posterior, dtype=np.float64)
        if post.shape != (n, len(group)):
            raise ValueError(f"posterior must have shape ({n}, {len(group)}), got {post.shape}")
        t = to_numpy(true).reshape(-1).astype(np.int64)
        same = coset_mask(t, check_stab(stab_mask, n, len(group)), group)  # (B, G)
        out["posterior_mass"] = float((post * same).sum(axis=1).mean()) if n else float("nan")
    return out
