"""Built-in procedural shapes: furniture-like objects and asymmetric polycubes.

No download: :func:`generate` draws ``n`` objects from a seeded generator and
rasterizes them onto a ``res³`` grid (any ``res >= 8``; 16, 32 and 64 are the
usual ones). Classes take turns (object ``i`` is of class ``i % n_classes``),
so a split is balanced. The recipes live in :mod:`orient3d.data.shapes`.

Pose: upright (z up, the floor of furniture at ``z`` index 0), front towards -y.
The unit cube of the recipes maps onto voxels ``[1, res - 1)`` in x and y and
``[0, res - 2)`` in z (a one-voxel margin at the sides, two at the top); every
part covers at least one voxel, so thin legs survive at 16³. The same seed gives
the same objects at every resolution.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from orient3d.data.arrays import make_voxelset
from orient3d.data.shapes import BUILDERS, Prim
from orient3d.data.voxelset import VoxelSet
from orient3d.errors import DataError

__all__ = ["CLASSES", "code_version", "generate", "rasterize"]

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = tuple(BUILDERS)
MIN_RES = 8


@functools.cache
def _centres(res: int) -> np.ndarray:
    """Normalized coordinate of each voxel centre along an axis, ``(res,)``."""
    scale = res - 2
    return (np.arange(res) - 1 + 0.5) / scale


def _span(lo: float, hi: float, res: int, offset: int) -> tuple[int, int]:
    """Index range ``[i0, i1)`` of a normalized interval; at least one voxel."""
    scale = res - 2
    i0 = int(np.floor(lo * scale + 0.5)) + offset
    i1 = max(i0 + 1, int(np.floor(hi * scale + 0.5)) + offset)
    i0 = min(max(i0, 0), res - 1)
    return i0, min(max(i1, i0 + 1), res)


_OFFSETS = (1, 1, 0)  # x and y keep a one-voxel margin; the floor is z index 0


def _cylinder(grid: np.ndarray, prim: Prim) -> None:
    _, axis, u, v, r, lo, hi = prim
    res = grid.shape[0]
    others = [a for a in range(3) if a != axis]
    cu = _centres(res) + (1 - _OFFSETS[others[0]]) / (res - 2)
    cv = _centres(res) + (1 - _OFFSETS[others[1]]) / (res - 2)
    r_eff = max(r, 0.71 / (res - 2))  # always the nearest voxel column
    disk = ((cu[:, None] - u) ** 2 + (cv[None, :] - v) ** 2) <= r_eff**2
    if not disk.any():
        return
    i0, i1 = _span(lo, hi, res, _OFFSETS[axis])
    index: list[slice | None] = [slice(None)] * 3
    index[axis] = slice(i0, i1)
    shape = [1, 1, 1]
    shape[others[0]], shape[others[1]] = res, res
    grid[tuple(index)] |= disk.reshape(shape).astype(np.uint8)


def rasterize(prims: Sequence[Prim], res: int, out: np.ndarray | None = None) -> np.ndarray:
    """Occupancy ``(res, res, res)`` uint8 of the union of the primitives."""
    grid = np.zeros((res, res, res), np.uint8) if out is None else out
    for p in prims:
        if p[0] == "box":
            (a0, a1), (b0, b1), (c0, c1) = (
                _span(p[1 + 2 * k], p[2 + 2 * k], res, _OFFSETS[k]) for k in range(3)
            )
            grid[a0:a1, b0:b1, c0:c1] = 1
        else:
            _cylinder(grid, p)
    return grid


@functools.cache
def code_version() -> str:
    """A hash of the recipes' and rasterizer's source: part of every cache key."""
    from orient3d.data import shapes

    text = "".join(
        Path(m.__file__).read_text() for m in (shapes, sys.modules[__name__]) if m.__file__
    )
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _class_list(classes: Sequence[str] | None) -> tuple[str, ...]:
    names = CLASSES if classes is None else tuple(classes)
    unknown = [c for c in names if c not in BUILDERS]
    if unknown or not names:
        raise DataError(f"procedural: unknown class(es) {unknown}; known: {list(CLASSES)}")
    return names


def generate(
    n: int, res: int, rng: np.random.Generator, classes: Sequence[str] | None = None
) -> VoxelSet:
    """Generate ``n`` procedural objects at ``res³``, classes taking turns.

    Args:
        n: number of objects (>= 1).
        res: grid side D (>= 8).
        rng: the generator every random draw comes from.
        classes: class names to use, in label order (default :data:`CLASSES`).

    Returns:
        A :class:`VoxelSet` with ``class_names`` = the classes, ids
        ``"<class>_<i>"`` and each object's stabilizer in O.
    """
    if n < 1 or res < MIN_RES:
        raise DataError(f"procedural: need n >= 1 and res >= {MIN_RES}, got n={n}, res={res}")
    names = _class_list(classes)
    labels = np.arange(n) % len(names)
    vox = np.zeros((n, res, res, res), np.uint8)
    builders = [BUILDERS[c] for c in names]
    for i in range(n):
        rasterize(builders[labels[i]](rng), res, out=vox[i])
    ids = [f"{names[k]}_{i:06d}" for i, k in enumerate(labels)]
    log.debug("generated %d procedural objects at %d³", n, res)
    return make_voxelset(vox, labels, names, ids, source="procedural")
