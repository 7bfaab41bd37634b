"""Checking, resampling and describing arrays of voxel grids.

Every loader funnels its arrays through :func:`check_grids` (one clear
:class:`DataError` naming the file and what is wrong) and builds its
:class:`VoxelSet` with :func:`make_voxelset`, which records each object's
stabilizer in the 24 proper rotations of the cube.

Resampling (:func:`resample`) keeps occupancy binary: going down, a target
voxel is occupied when *any* source voxel mapped to it is (max-pooling, so thin
parts survive); going up, each target voxel copies its nearest source voxel.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from orient3d.data.voxelset import VoxelSet
from orient3d.errors import DataError
from orient3d.geometry import groups

__all__ = [
    "check_grids",
    "make_voxelset",
    "reframe",
    "resample",
    "stabilizer_masks",
    "trivial_fraction",
]


def check_grids(arr: np.ndarray, name: str) -> np.ndarray:
    """Validate voxel grids and return them as ``(N, D, D, D)`` uint8 in {0, 1}.

    Accepts one grid ``(D, D, D)`` or a batch ``(N, D, D, D)`` of bool, integer or
    float dtype whose values are exactly 0 or 1. ``name`` (a file, or a file and
    key) starts every error message.
    """
    a = np.asarray(arr)
    if a.dtype == object or not (a.dtype == np.bool_ or np.issubdtype(a.dtype, np.number)):
        raise DataError(f"{name}: voxels must be a numeric array, got dtype {a.dtype}")
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise DataError(f"{name}: voxels must be (D, D, D) or (N, D, D, D), got shape {a.shape}")
    if len(set(a.shape[1:])) != 1:
        raise DataError(f"{name}: grids must be cubic, got shape {a.shape[1:]}")
    if a.shape[0] == 0 or a.shape[1] == 0:
        raise DataError(f"{name}: no voxels (shape {a.shape})")
    if np.issubdtype(a.dtype, np.floating) and not np.isfinite(a).all():
        bad = np.flatnonzero(~np.isfinite(a).reshape(len(a), -1).all(1))
        raise DataError(f"{name}: NaN or infinite values in grid(s) {bad[:10].tolist()}")
    if a.dtype != np.bool_:
        ok = (a == 0) | (a == 1)
        if not ok.all():
            bad_vals = np.unique(a[~ok])[:5].tolist()
            raise DataError(f"{name}: values must be 0 or 1, found {bad_vals}")
    out = a.astype(np.uint8)
    empty = np.flatnonzero(~out.reshape(len(out), -1).any(1))
    if empty.size:
        raise DataError(f"{name}: {empty.size} empty grid(s), e.g. index {empty[:10].tolist()}")
    return out


def resample(vox: np.ndarray, res: int) -> np.ndarray:
    """Resample ``(N, R, R, R)`` binary grids to ``(N, res, res, res)``.

    Down (``R > res``): source voxel ``i`` maps to target ``floor(i * res / R)``
    and a target voxel is the max (any occupancy) of its sources. Up
    (``R < res``): target voxel ``j`` copies source ``floor(j * R / res)``.
    """
    r = vox.shape[-1]
    if r == res:
        return vox
    out = vox
    if r > res:
        starts = np.searchsorted((np.arange(r) * res) // r, np.arange(res))
        for axis in (1, 2, 3):
            out = np.maximum.reduceat(out, starts, axis=axis)
    else:
        src = (np.arange(res) * r) // res
        for axis in (1, 2, 3):
            out = np.take(out, src, axis=axis)
    return np.ascontiguousarray(out)


def reframe(vox: np.ndarray, res: int, margin: int = 1) -> np.ndarray:
    """Grids ``(N, D, D, D)`` framed as the mesh voxelizer frames a mesh: ``(N, res, res, res)``.

    Each grid's occupied bounding box is scaled, aspect kept, so that its largest side
    spans ``res - 2 * margin`` voxels, and centred (offset ``(res - size) // 2`` per
    axis). Every occupied voxel is split into ``k³`` sample points, ``k`` above the
    scale factor so that scaled neighbours lie less than a voxel apart, and each target
    voxel that receives a point is occupied: thin parts survive, and a grid already
    framed so comes back unchanged. Grids must not be empty (:func:`check_grids`).
    """
    n = res - 2 * margin
    out = np.zeros((len(vox), res, res, res), np.uint8)
    for b, g in enumerate(vox):
        idx = np.argwhere(g)  # (V, 3)
        lo = idx.min(axis=0)
        f = n / float((idx.max(axis=0) + 1 - lo).max())
        k = int(np.floor(f)) + 1
        sub = (np.arange(k) + 0.5) / k
        off = np.stack(np.meshgrid(sub, sub, sub, indexing="ij"), axis=-1).reshape(-1, 3)
        t = np.floor(((idx - lo)[:, None, :] + off).reshape(-1, 3) * f).astype(np.int64)
        start = (res - (t.max(axis=0) + 1)) // 2
        out[b][tuple((t + start).T)] = 1
    return out


def _moment_candidates(vox: np.ndarray, mats: np.ndarray) -> np.ndarray:
    """``(N, G)`` mask of elements that fix each grid's first and second moments.

    A rotation that maps a grid onto itself fixes its centroid and its inertia
    tensor, so this is a necessary condition: cheap, and only identity survives
    for most asymmetric objects.
    """
    n, d = vox.shape[0], vox.shape[-1]
    c = (2 * np.arange(d) - (d - 1)).astype(np.float64)  # twice the centred coordinate
    pxy, pxz, pyz = (vox.sum(a, dtype=np.int32).astype(np.float64) for a in (3, 2, 1))
    first = np.stack([pxy.sum(2) @ c, pxy.sum(1) @ c, pxz.sum(1) @ c], axis=1)  # (N, 3)
    second = np.empty((n, 3, 3))
    second[:, 0, 0] = pxy.sum(2) @ (c * c)
    second[:, 1, 1] = pxy.sum(1) @ (c * c)
    second[:, 2, 2] = pxz.sum(1) @ (c * c)
    second[:, 0, 1] = second[:, 1, 0] = np.einsum("nij,i,j->n", pxy, c, c)
    second[:, 0, 2] = second[:, 2, 0] = np.einsum("nik,i,k->n", pxz, c, c)
    second[:, 1, 2] = second[:, 2, 1] = np.einsum("njk,j,k->n", pyz, c, c)
    m = mats.astype(np.float64)
    rot_first = np.einsum("gij,nj->ngi", m, first)
    ok1 = np.abs(rot_first - first[:, None]).max(-1) < 1e-6
    rot_second = np.einsum("gij,njk,glk->ngil", m, second, m)
    ok2 = np.abs(rot_second - second[:, None]).max((-1, -2)) < 1e-6
    return ok1 & ok2


def stabilizer_masks(vox: np.ndarray, chunk: int = 512) -> torch.Tensor:
    """``(N, 24)`` bool: which elements of ``groups.cube_group()`` fix each grid.

    Exact: a moment test rules most elements out cheaply, then
    :func:`groups.stabilizer_mask` checks the objects that have candidates left.
    """
    group = groups.cube_group()
    cand = _moment_candidates(vox, group.matrices.numpy())
    out = torch.from_numpy(cand.copy())
    todo = np.flatnonzero(cand[:, 1:].any(1))
    for s in range(0, todo.size, chunk):
        idx = todo[s : s + chunk]
        exact = groups.stabilizer_mask(torch.from_numpy(vox[idx]), group)
        out[torch.from_numpy(idx)] &= exact
    return out


def make_voxelset(
    vox: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str],
    ids: Sequence[str],
    source: str,
    stabilizers: torch.Tensor | None = None,
) -> VoxelSet:
    """A :class:`VoxelSet` from checked arrays, computing stabilizers if not given."""
    if stabilizers is None:
        stabilizers = stabilizer_masks(vox)
    return VoxelSet(
        voxels=torch.from_numpy(np.ascontiguousarray(vox, dtype=np.uint8)),
        labels=torch.from_numpy(np.asarray(labels, dtype=np.int64)),
        class_names=tuple(str(c) for c in class_names),
        ids=tuple(str(i) for i in ids),
        stabilizers=stabilizers,
        source=source,
    )


def trivial_fraction(vs: VoxelSet) -> dict[str, float]:
    """Per class, the fraction of objects whose stabilizer in O is the identity only."""
    trivial = vs.stabilizers.sum(1) == 1
    out: dict[str, float] = {}
    for k, name in enumerate(vs.class_names):
        sel = vs.labels == k
        if bool(sel.any()):
            out[name] = float(trivial[sel].float().mean())
    return out
