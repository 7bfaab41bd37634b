"""Upright agreement: does the learned canonical pose keep the dataset's "up" up?

Conventions (package docstring): the last grid axis is z and points up in the
stored pose of an upright object. The canonical grid of object ``c`` is ``h·c``
(``h = r⁻¹g``, :func:`orient3d.metrics.canonical_pose`); rotating by ``M[h]``
moves the voxel at ``v`` to ``M[h] @ v``, so the object's up direction ``e_z``
ends at ``M[h] @ e_z``, the third column of ``M[h]``. The model keeps up up when
``M[h] @ e_z == e_z``, i.e. ``M[h][2, 2] == 1``: 4 of the 24 rotations of O (the
quarter turns about z).

Symmetry. A symmetric object uses every pose of ``h·Stab`` at once (same voxels),
so it counts as upright when any pose of that coset is upright (an object with a
half-turn symmetry about x looks the same upside down). ``chance`` is the
expected fraction if every object took a uniformly random ``h``: per object the
share of the ``G`` poses whose coset meets the upright ones (1/6 when asymmetric).

Where up goes (``up_counts``): each object spreads a unit weight evenly over the
6 directions ``±x, ±y, ±z`` its coset sends ``e_z`` to; ``up_consistency`` is the
largest share (a model may agree on up without keeping it along +z; chance 1/6).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orient3d.geometry.groups import CubeGroup
from orient3d.metrics._common import ArrayLike, check_indices, check_stab, coset_mask, to_numpy

__all__ = ["DIRECTIONS", "direction_index", "upright_agreement", "upright_mask"]

DIRECTIONS = ("+x", "-x", "+y", "-y", "+z", "-z")


def direction_index(group: CubeGroup, axis: int = 2) -> np.ndarray:
    """``(G,)`` index into :data:`DIRECTIONS` of ``M[h] @ e_axis`` for every element."""
    col = group.matrices.numpy()[:, :, axis]  # (G, 3): the image of e_axis
    which = np.abs(col).argmax(axis=1)
    sign = col[np.arange(len(col)), which]
    return 2 * which + (sign < 0)


def upright_mask(group: CubeGroup, axis: int = 2) -> np.ndarray:
    """``(G,)`` bool: ``M[h] @ e_axis == e_axis`` (up stays up)."""
    return direction_index(group, axis) == 2 * axis


def upright_agreement(
    canon: ArrayLike, stab_mask: ArrayLike, group: CubeGroup, labels: ArrayLike | None = None
) -> dict[str, Any]:
    """Fraction of objects whose canonical frame keeps up (+z) up, modulo symmetry.

    Args:
        canon: ``(N,)`` canonical poses ``h`` (or ``(N, V)``: every view an item).
        stab_mask: ``(N, G)`` stabilizer masks of the stored poses.
        group: the group the indices refer to.
        labels: optional ``(N,)`` class labels for ``per_class`` fractions.

    Returns:
        ``upright`` (fraction), ``chance``, ``per_object`` ``(N,)`` or ``(N, V)``
        bool, ``up_counts`` ``(6,)`` over :data:`DIRECTIONS`, ``up_consistency``
        (largest share of ``up_counts``), ``per_class`` ``{label: fraction}`` and
        ``per_class_up_counts`` ``{label: (6,)}`` (``up_counts`` of the class's objects).
    """
    h = check_indices("canon", to_numpy(canon), len(group))
    if h.ndim not in (1, 2):
        raise ValueError(f"canon must be (N,) or (N, V), got shape {h.shape}")
    stab = check_stab(stab_mask, h.shape[0], len(group))
    uses = coset_mask(h, stab, group)  # (N, [V,] G): poses giving the same grid as h
    up = upright_mask(group)
    per_object = (uses & up).any(axis=-1)
    dirs = direction_index(group)
    onehot = np.eye(len(DIRECTIONS))[dirs]  # (G, 6)
    reach = (uses.reshape(-1, len(group)).astype(np.float64) @ onehot) > 0  # (items, 6)
    spread = reach / reach.sum(axis=1, keepdims=True)  # (items, 6): each item's unit weight
    up_counts = spread.sum(axis=0)
    all_poses = np.broadcast_to(np.arange(len(group)), (h.shape[0], len(group)))
    meets = (coset_mask(all_poses, stab, group) & up).any(axis=-1)  # (N, G)
    out: dict[str, Any] = {
        "upright": float(per_object.mean()) if per_object.size else float("nan"),
        "chance": float(meets.mean()) if h.shape[0] else float("nan"),
        "per_object": per_object,
        "up_counts": up_counts,
        "up_consistency": float(up_counts.max() / up_counts.sum()) if h.size else float("nan"),
        "per_class": {},
        "per_class_up_counts": {},
    }
    if labels is not None:
        lab = to_numpy(labels).reshape(-1)
        if lab.shape[0] != h.shape[0]:
            raise ValueError(f"labels must have length {h.shape[0]}, got {lab.shape[0]}")
        per_obj = spread.reshape(h.shape[0], -1, len(DIRECTIONS)).sum(axis=1)  # (N, 6)
        for c in np.unique(lab).tolist():
            out["per_class"][c] = float(per_object[lab == c].mean())
            out["per_class_up_counts"][c] = per_obj[lab == c].sum(axis=0)
    return out
