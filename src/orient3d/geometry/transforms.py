"""General poses of voxel grids: rotation, integer translation and scale.

A pose ``P = (R, t, s)`` acts on a grid ``c`` in the model's frame as
``P·c = shift(resample(c, s·R), t)``: first a rotation ``R`` and an isotropic
scale ``s`` about the grid centre (one trilinear resampling, :func:`so3.resample`'s
convention: the voxel at centred coordinate ``p`` moves to ``s R p``), then an
integer shift by ``t`` voxels with zero fill (:func:`shift`, exact). As a map of
centred voxel coordinates ``P(p) = s R p + t``, so poses compose as similarity
transforms (:func:`compose`, :func:`inverse`); ``t`` is kept as a float and
rounded when applied. :func:`undo` turns a grid back, ``P⁻¹·x``.

Shapes: ``B`` batch, ``K`` candidates per sample, ``D`` voxel side. A
:class:`Pose` is batched over any leading shape ``...``.

Views (:func:`random_pose`): a uniform SO(3) rotation, a uniform integer shift in
``[-m, m]³`` and a scale drawn uniformly from a set, all from one generator.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from orient3d.geometry import so3

__all__ = [
    "Pose",
    "apply",
    "compose",
    "identity",
    "inverse",
    "random_pose",
    "shift",
    "shift_offsets",
    "undo",
]


@dataclass(frozen=True)
class Pose:
    """A batch of poses ``x = s R c + t`` (centred voxel coordinates)."""

    R: Tensor  # (..., 3, 3) rotations
    t: Tensor  # (..., 3) shifts in voxels (integer-valued when applied; rounded)
    s: Tensor  # (...) isotropic scales

    @property
    def shape(self) -> torch.Size:
        return self.s.shape

    def __getitem__(self, index: object) -> Pose:
        return Pose(self.R[index], self.t[index], self.s[index])  # type: ignore[index]

    def to(self, device: torch.device | str) -> Pose:
        return Pose(self.R.to(device), self.t.to(device), self.s.to(device))

    def reshape(self, *shape: int) -> Pose:
        return Pose(self.R.reshape(*shape, 3, 3), self.t.reshape(*shape, 3), self.s.reshape(shape))

    def matrix(self) -> Tensor:
        """``(..., 3, 4)``: ``[s R | t]``."""
        return torch.cat([self.s[..., None, None] * self.R, self.t[..., None]], dim=-1)

    @staticmethod
    def from_matrix(M: Tensor) -> Pose:
        """Inverse of :meth:`matrix` for ``(..., 3, 4)`` similarity matrices."""
        A = M[..., :3]
        s = torch.linalg.det(A.double()).clamp_min(1e-12).pow(1 / 3).to(M.dtype)  # (...)
        return Pose(A / s[..., None, None], M[..., 3], s)

    @staticmethod
    def cat(poses: Sequence[Pose], dim: int = 0) -> Pose:
        return Pose(
            torch.cat([p.R for p in poses], dim),
            torch.cat([p.t for p in poses], dim),
            torch.cat([p.s for p in poses], dim),
        )


def identity(*shape: int, device: torch.device | str | None = None) -> Pose:
    eye = torch.eye(3, device=device).expand(*shape, 3, 3).clone()
    return Pose(eye, torch.zeros(*shape, 3, device=device), torch.ones(shape, device=device))


def compose(a: Pose, b: Pose) -> Pose:
    """``a ∘ b`` (``b`` applied first): ``(s_a s_b R_a R_b, s_a R_a t_b + t_a)``."""
    R = a.R @ b.R
    t = a.s[..., None] * (a.R @ b.t[..., None])[..., 0] + a.t
    return Pose(R, t, a.s * b.s)


def inverse(p: Pose) -> Pose:
    """``P⁻¹``: ``p ↦ Rᵀ (p - t) / s``."""
    Rt = p.R.transpose(-1, -2)
    return Pose(Rt, -(Rt @ p.t[..., None])[..., 0] / p.s[..., None], 1 / p.s)


def shift(x: Tensor, t: Tensor) -> Tensor:
    """Integer shift with zero fill: ``out[b, p + t_b] = x[b, p]``.

    Args:
        x: ``(B, D, D, D)`` grids (any dtype).
        t: ``(B, 3)`` shifts in voxels (rounded to integers), one per axis.

    Exact: a grid whose occupied voxels stay inside after the shift is shifted
    back to itself by ``-t``.
    """
    b, d = x.shape[0], x.shape[-1]
    ti = t.round().long().to(x.device)  # (B, 3)
    m = int(ti.abs().max()) if ti.numel() else 0
    if m == 0:
        return x
    padded = torch.nn.functional.pad(x, (m,) * 6)  # (B, D + 2m, D + 2m, D + 2m)
    ar = torch.arange(d, device=x.device)
    i, j, k = (ar[None] - ti[:, a, None] + m for a in range(3))  # (B, D) source indices
    bi = torch.arange(b, device=x.device)[:, None, None, None]
    return padded[bi, i[:, :, None, None], j[:, None, :, None], k[:, None, None, :]]


def _scaled_resample(x: Tensor, R: Tensor, s: Tensor) -> Tensor:
    """``out[p] = x[(s R)⁻¹ p]`` for ``x (B, D, D, D)``, ``R (B, 3, 3)``, ``s (B,)``."""
    if bool((s == 1).all()) and bool((torch.eye(3, device=R.device) == R).all()):
        return x.to(R.dtype)  # the identity: exact, no interpolation
    # so3.resample(x, A) samples x at Aᵀ p, so A = R / s gives (s R)⁻¹ p = Rᵀ p / s.
    return so3.resample(x, R / s[:, None, None])


def apply(c: Tensor, p: Pose) -> Tensor:
    """``P·c``: ``c (B, D, D, D)`` in the model's frame -> the grid as shown ``(B, D, D, D)``."""
    p = p.to(c.device)
    return shift(_scaled_resample(c, p.R.float(), p.s.float()), p.t)


def undo(x: Tensor, p: Pose) -> Tensor:
    """``P⁻¹·x``: ``x (B, D, D, D)`` as shown -> the model's frame (float, soft)."""
    p = p.to(x.device)
    y = shift(x, -p.t)  # (B, D, D, D)
    return _scaled_resample(y, p.R.transpose(-1, -2).float(), 1 / p.s.float())


def random_pose(
    n: int,
    generator: torch.Generator | None = None,
    *,
    translate: int = 0,
    scales: Sequence[float] = (),
    rotate: bool = True,
) -> Pose:
    """``n`` random poses: Haar rotations, shifts uniform in ``[-translate, translate]³``,
    scales uniform over ``scales`` (empty: 1). Draw order: rotations, shifts, scales."""
    R = so3.random_rotations(n, generator) if rotate else torch.eye(3).expand(n, 3, 3).clone()
    t = torch.zeros(n, 3)
    if translate > 0:
        t = torch.randint(-translate, translate + 1, (n, 3), generator=generator).float()
    s = torch.ones(n)
    if scales:
        pick = torch.randint(len(scales), (n,), generator=generator)
        s = torch.tensor(list(scales), dtype=torch.float32)[pick]
    return Pose(R, t, s)


def shift_offsets(radius: int = 1) -> Tensor:
    """``(M, 3)`` integer offsets in ``[-radius, radius]³`` as floats, ``(0, 0, 0)`` first."""
    r = range(-radius, radius + 1)
    offs = sorted(itertools.product(r, r, r), key=lambda o: sum(abs(v) for v in o))
    return torch.tensor(offs, dtype=torch.float32)
