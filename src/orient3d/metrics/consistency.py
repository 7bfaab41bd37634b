"""Consistency of a learned canonical pose: per instance, per class, over all objects.

Notation (as in the package docstring): object ``i`` with ground-truth pose ``c_i`` is shown as
``g·c_i``; the model picks ``r``, so its canonical frame is ``h = r⁻¹g``
(:func:`orient3d.metrics.canonical_pose`) and its canonical grid is ``h·c_i``.

Symmetry. ``stab_mask[i]`` is the stabilizer of ``c_i``. Object ``i`` **uses**
pose ``p`` when ``p·c_i == h_i·c_i``, i.e. ``p ∈ h_i·Stab_i``: a symmetric object
uses ``|Stab_i|`` poses at once, all giving the same voxels.

Definitions.
- *Instance consistency* (one object, ``V`` views): the fraction of views whose
  canonical grid is the modal one (the grid most views give); also the number of
  distinct canonical grids. 1 and 1 for an exact, view-independent canonicalizer.
- *Pose consistency* of a set of items (objects of a class, or all objects):
  ``count[p]`` = number of items that use ``p``; the modal pose ``p*`` maximizes
  it; consistency = ``count[p*] / N``. If items choose ``h`` uniformly at
  random, each uses ``p`` with probability ``|Stab_i| / G``, so ``chance`` =
  ``mean(|Stab_i|) / G`` (1/24 for asymmetric objects under O). With few items
  the maximum over ``G`` poses lies a little above chance.

``canon`` may be ``(N,)`` (one canonical pose per object) or ``(N, V)`` (one per
view); in the second case class/global consistency count every (object, view)
pair as an item.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import numpy as np

from orient3d.geometry.groups import CubeGroup
from orient3d.metrics._common import (
    ArrayLike,
    check_indices,
    check_stab,
    coset_mask,
    coset_representative,
    to_numpy,
)

__all__ = [
    "class_consistency",
    "global_consistency",
    "instance_consistency",
    "pose_use_counts",
    "random_max",
]


def _prepare(
    canon: ArrayLike, stab_mask: ArrayLike, group: CubeGroup
) -> tuple[np.ndarray, np.ndarray]:
    h = check_indices("canon", to_numpy(canon), len(group))
    if h.ndim not in (1, 2):
        raise ValueError(f"canon must be (N,) or (N, V), got shape {h.shape}")
    return h, check_stab(stab_mask, h.shape[0], len(group))


def instance_consistency(
    canon: ArrayLike, stab_mask: ArrayLike, group: CubeGroup
) -> dict[str, Any]:
    """Per object: fraction of its views mapped to its modal canonical grid.

    Args:
        canon: ``(N, V)`` canonical poses ``h`` of ``N`` objects seen in ``V``
            views each (``(V,)`` for one object).
        stab_mask: ``(N, G)`` stabilizer masks of the objects' ground-truth poses
            (``(G,)`` for one object or all alike).
        group: the group the indices refer to.

    Returns:
        ``consistency`` (mean over objects), ``per_object`` ``(N,)`` fractions,
        ``n_distinct`` ``(N,)`` number of distinct canonical grids per object,
        ``mean_distinct`` (float), ``modal_pose`` ``(N,)`` (the smallest index
        giving each object's modal grid).
    """
    h = check_indices("canon", to_numpy(canon), len(group))
    if h.ndim == 1:
        h = h[None]
    if h.ndim != 2 or h.shape[1] == 0:
        raise ValueError(f"canon must be (N, V) with V >= 1, got shape {h.shape}")
    stab = check_stab(stab_mask, h.shape[0], len(group))
    reps = coset_representative(h, stab, group)  # (N, V): one id per canonical grid
    n, v = reps.shape
    counts = np.zeros((n, len(group)), dtype=np.int64)
    np.add.at(counts, (np.repeat(np.arange(n), v), reps.reshape(-1)), 1)
    per_object = counts.max(axis=1) / v
    n_distinct = (counts > 0).sum(axis=1)
    return {
        "consistency": float(per_object.mean()),
        "per_object": per_object,
        "n_distinct": n_distinct,
        "mean_distinct": float(n_distinct.mean()),
        "modal_pose": counts.argmax(axis=1),
    }


def pose_use_counts(canon: ArrayLike, stab_mask: ArrayLike, group: CubeGroup) -> np.ndarray:
    """``(G,)`` number of items that use each pose ``p`` (``p ∈ h_i·Stab_i``).

    ``canon`` ``(N,)`` or ``(N, V)``; with views every (object, view) is an item.
    """
    h, stab = _prepare(canon, stab_mask, group)
    uses = coset_mask(h, stab, group)  # (N, [V,] G)
    return uses.reshape(-1, len(group)).sum(axis=0)


def _consistency_of(h: np.ndarray, stab: np.ndarray, group: CubeGroup) -> dict[str, Any]:
    counts = pose_use_counts(h, stab, group)
    n_items = int(h.size)
    modal = int(counts.argmax())
    return {
        "consistency": float(counts[modal] / n_items) if n_items else float("nan"),
        "modal_pose": modal,
        "n": n_items,
        "chance": float(stab.sum(axis=1).mean() / len(group)) if n_items else float("nan"),
        "counts": counts,
    }


def global_consistency(canon: ArrayLike, stab_mask: ArrayLike, group: CubeGroup) -> dict[str, Any]:
    """Fraction of all objects that use the most common canonical pose.

    Returns ``consistency``, ``modal_pose``, ``n`` (items counted), ``chance``
    (``mean |Stab_i| / G``) and ``counts`` ``(G,)`` from :func:`pose_use_counts`.
    """
    h, stab = _prepare(canon, stab_mask, group)
    return _consistency_of(h, stab, group)


def class_consistency(
    canon: ArrayLike, stab_mask: ArrayLike, labels: ArrayLike, group: CubeGroup
) -> dict[str, Any]:
    """Pose consistency within each class, and its averages.

    Args:
        canon: ``(N,)`` or ``(N, V)`` canonical poses.
        stab_mask: ``(N, G)`` stabilizer masks of the ground-truth poses.
        labels: ``(N,)`` class labels (ints or strings).
        group: the group the indices refer to.

    Returns:
        ``per_class``: ``{label: {consistency, modal_pose, n, chance, counts}}``
        (as :func:`global_consistency`, within the class); ``consistency``: the
        unweighted mean over classes; ``weighted``: the fraction of all items that
        use their own class's modal pose; ``chance``: the unweighted mean of the
        classes' chance levels.
    """
    h, stab = _prepare(canon, stab_mask, group)
    lab = to_numpy(labels).reshape(-1)
    if lab.shape[0] != h.shape[0]:
        raise ValueError(f"labels must have length {h.shape[0]}, got {lab.shape[0]}")
    per_class: dict[Hashable, dict[str, Any]] = {}
    matched = 0
    for c in np.unique(lab).tolist():
        sel = lab == c
        res = _consistency_of(h[sel], stab[sel], group)
        per_class[c] = res
        matched += int(res["counts"][res["modal_pose"]])
    n_items = int(h.size)
    return {
        "per_class": per_class,
        "consistency": float(np.mean([r["consistency"] for r in per_class.values()]))
        if per_class
        else float("nan"),
        "weighted": matched / n_items if n_items else float("nan"),
        "chance": float(np.mean([r["chance"] for r in per_class.values()]))
        if per_class
        else float("nan"),
    }


def random_max(n_objects: int, order: int = 24, trials: int = 4000) -> float:
    """Expected global consistency if each object took one uniformly random pose.

    With few objects the modal pose's share lies well above ``1 / order`` by chance
    alone (16 objects: about 0.16), so this, not ``1 / order``, is the baseline.
    """
    if n_objects < 1:
        return float("nan")
    rng = np.random.default_rng(0)
    draws = rng.integers(order, size=(trials, n_objects))
    counts = np.zeros((trials, order), dtype=np.int64)
    np.add.at(counts, (np.arange(trials)[:, None], draws), 1)
    return float(counts.max(axis=1).mean() / n_objects)
