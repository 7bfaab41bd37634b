"""Shape-latent invariance: do the views of one object get the same shape latent?

For latents ``(N, V, Z)`` (``N`` objects, ``V`` views each, e.g. the 24 poses):

``invariance = mean ‖z_iv - z_iw‖ (same object, v ≠ w) / mean ‖z_iv - z_jw‖ (i ≠ j)``

0 for an encoder whose shape latent ignores the pose; about 1 when the latent
says nothing about which object it saw (e.g. random latents).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from orient3d.metrics._common import ArrayLike

__all__ = ["latent_invariance"]


def _mean_pair_distances(z: torch.Tensor, chunk: int = 256) -> tuple[float, float]:
    """Mean Euclidean distance within objects (v ≠ w) and between objects (i ≠ j)."""
    n, v, _ = z.shape
    flat = z.reshape(n * v, -1)
    owner = torch.arange(n).repeat_interleave(v)
    within = between = 0.0
    for start in range(0, n * v, chunk):
        d = torch.cdist(
            flat[start : start + chunk], flat, compute_mode="donot_use_mm_for_euclid_dist"
        )  # (chunk, N·V)
        same = owner[start : start + chunk, None] == owner[None, :]
        within += float(d[same].sum())  # the zero self-distances add nothing
        between += float(d[~same].sum())
    n_within = n * v * (v - 1)
    n_between = n * v * (n - 1) * v
    return within / max(n_within, 1), between / max(n_between, 1)


def latent_invariance(
    latents: ArrayLike,
    max_objects: int = 1024,
    rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """Within-object latent distance relative to between-object distance.

    Args:
        latents: ``(N, V, Z)`` shape latents of ``N`` objects in ``V`` views
            (``N >= 2``, ``V >= 2``).
        max_objects: above this many objects, a random subset (drawn from
            ``rng``, default seed 0) is used, to bound the ``(N·V)²`` distances.
        rng: the generator for that subset.

    Returns:
        ``invariance`` (ratio), ``within`` and ``between`` mean distances,
        ``n_objects`` used.
    """
    z = torch.as_tensor(np.asarray(latents) if not torch.is_tensor(latents) else latents)
    z = z.detach().cpu().to(torch.float64)
    if z.dim() != 3 or z.shape[0] < 2 or z.shape[1] < 2:
        raise ValueError(f"latents must be (N, V, Z) with N, V >= 2, got {tuple(z.shape)}")
    if z.shape[0] > max_objects:
        gen = rng if rng is not None else np.random.default_rng(0)
        keep = np.sort(gen.choice(z.shape[0], size=max_objects, replace=False))
        z = z[torch.from_numpy(keep)]
    within, between = _mean_pair_distances(z)
    return {
        "invariance": within / between if between > 0 else float("nan"),
        "within": within,
        "between": between,
        "n_objects": int(z.shape[0]),
    }
