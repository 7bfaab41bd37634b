"""Shared helpers of the orientation metrics: array conversion and symmetry cosets.

Notation (as in the package docstring): an object with ground-truth pose ``c`` is shown as
``x = g·c``; the model picks ``r``; its canonical frame is ``h = r⁻¹g`` and its
canonical grid is ``h·c``. ``stab_mask`` is the stabilizer mask of ``c`` (the
object in its ground-truth pose), ``(N, G)`` bool. Two canonical poses are the
same grid when ``h1·c == h2·c``, i.e. ``h2⁻¹h1 ∈ Stab(c)``, i.e. both lie in the
left coset ``h·Stab(c)``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from orient3d.geometry.groups import CubeGroup, relative

ArrayLike = Any  # numpy array, torch tensor, or nested sequence


def to_numpy(a: ArrayLike, dtype: Any = None) -> np.ndarray:
    """A numpy copy of ``a`` (tensors are detached and moved to the CPU)."""
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=dtype)


def group_tables(group: CubeGroup) -> tuple[np.ndarray, np.ndarray]:
    """The Cayley table ``(G, G)`` and the inverse ``(G,)`` as int64 numpy arrays."""
    return group.table.numpy().astype(np.int64), group.inverse.numpy().astype(np.int64)


def check_indices(name: str, a: np.ndarray, order: int) -> np.ndarray:
    """``a`` as int64, checked to index a group of ``order`` elements."""
    if a.size and (a.min() < 0 or a.max() >= order):
        raise ValueError(f"{name} holds indices outside [0, {order}): {a.min()}..{a.max()}")
    return a.astype(np.int64)


def check_stab(stab_mask: ArrayLike, n: int, order: int) -> np.ndarray:
    """A ``(n, G)`` bool stabilizer mask that contains the identity (element 0)."""
    s = to_numpy(stab_mask, dtype=bool)
    if s.ndim == 1:
        s = np.broadcast_to(s, (n, s.shape[0]))
    if s.shape != (n, order):
        raise ValueError(f"stab_mask must have shape ({n}, {order}), got {s.shape}")
    if n and not s[:, 0].all():
        raise ValueError("stab_mask must contain the identity (column 0 all True)")
    return s


def coset_mask(h: np.ndarray, stab: np.ndarray, group: CubeGroup) -> np.ndarray:
    """``mask[..., p]`` is True when pose ``p`` gives the same grid as ``h``.

    That is ``p ∈ h·Stab``, i.e. ``h⁻¹p ∈ Stab``. ``h`` has shape ``S`` and
    ``stab`` shape ``S[:k] + (G,)`` for some prefix of ``S`` (it is broadcast
    over the trailing axes of ``h``, e.g. ``h (N, V)`` with ``stab (N, G)``).
    """
    table, inverse = group_tables(group)
    rel = table[inverse[h]]  # (*S, G): index of h⁻¹p for every p
    s = stab.reshape(stab.shape[:-1] + (1,) * (h.ndim - (stab.ndim - 1)) + stab.shape[-1:])
    s = np.broadcast_to(s, rel.shape)
    return np.take_along_axis(s, rel, axis=-1)


def coset_representative(h: np.ndarray, stab: np.ndarray, group: CubeGroup) -> np.ndarray:
    """The smallest index in ``h·Stab``: equal for two poses giving the same grid."""
    return coset_mask(h, stab, group).argmax(axis=-1)


def canonical_pose(pred: ArrayLike, applied: ArrayLike, group: CubeGroup) -> np.ndarray:
    """``h = r⁻¹g``: the model's canonical frame from its pick ``r`` and the applied ``g``.

    Both arrays broadcast; the result is an int64 index array.
    """
    r = check_indices("pred", to_numpy(pred), len(group))
    g = check_indices("applied", to_numpy(applied), len(group))
    return relative(torch.tensor(r), torch.tensor(g), group).numpy().astype(np.int64, copy=False)
