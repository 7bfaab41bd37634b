"""Orientation usage: how many canonical poses a model uses, and how evenly.

The histogram counts the canonical poses ``h`` (:func:`canonical_pose`) of the
objects. A symmetric object's canonical grid is reached by every pose of
``h·Stab``; when ``stab_mask`` is given, each object spreads its unit weight
evenly over that coset instead of counting one arbitrary index.

Entropy ``H = -Σ p log p`` of the normalized histogram, in nats and bits, and
normalized by ``log G`` (0: one pose; 1: all ``G`` poses equally).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from orient3d.geometry.groups import CubeGroup
from orient3d.metrics._common import ArrayLike, check_indices, check_stab, coset_mask, to_numpy

__all__ = ["entropy", "orientation_usage", "usage_from_hist"]


def entropy(counts: ArrayLike) -> float:
    """Entropy in nats of the distribution proportional to non-negative ``counts``."""
    c = to_numpy(counts, dtype=np.float64).reshape(-1)
    if (c < 0).any():
        raise ValueError("counts must be non-negative")
    total = c.sum()
    if total <= 0:
        return float("nan")
    p = c[c > 0] / total
    return float(-(p * np.log(p)).sum())


def usage_from_hist(hist: ArrayLike, min_count: float = 1.0) -> dict[str, Any]:
    """Usage statistics of a pose histogram ``(G,)`` (e.g. ``pose_hist`` of metrics.jsonl).

    Args:
        hist: counts (or weights) per pose.
        min_count: a pose counts as used when its count is at least this.

    Returns:
        ``entropy_nats``, ``entropy_bits``, ``entropy_normalized`` (by ``log G``),
        ``n_used``, ``hist`` (float array), ``n`` (total count).
    """
    h = to_numpy(hist, dtype=np.float64).reshape(-1)
    order = h.shape[0]
    ent = entropy(h)
    return {
        "entropy_nats": ent,
        "entropy_bits": ent / np.log(2.0),
        "entropy_normalized": ent / np.log(order) if order > 1 else 0.0,
        "n_used": int((h >= min_count).sum()) if min_count > 0 else int((h > 0).sum()),
        "hist": h,
        "n": float(h.sum()),
    }


def orientation_usage(
    canon: ArrayLike,
    group: CubeGroup,
    stab_mask: ArrayLike | None = None,
    min_count: float = 1.0,
) -> dict[str, Any]:
    """Histogram, entropy and number of distinct canonical poses used.

    Args:
        canon: canonical poses ``h``, any shape (flattened).
        group: the group the indices refer to (its order is the histogram length).
        stab_mask: optional ``(N, G)`` stabilizer masks, one row per entry of
            ``canon`` (flattened); spreads each object's weight over ``h·Stab``.
        min_count: a pose is used when its (possibly fractional) count is at
            least this; e.g. ``0.01 * N`` ignores poses used by under 1%.

    Returns:
        As :func:`usage_from_hist`.
    """
    order = len(group)
    h = check_indices("canon", to_numpy(canon).reshape(-1), order)
    if stab_mask is None:
        hist = np.bincount(h, minlength=order).astype(np.float64)
    else:
        stab = check_stab(stab_mask, h.shape[0], order)
        uses = coset_mask(h, stab, group).astype(np.float64)  # (N, G)
        hist = (uses / uses.sum(axis=1, keepdims=True)).sum(axis=0)
    return usage_from_hist(hist, min_count=min_count)
