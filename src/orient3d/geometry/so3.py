"""Continuous rotations: parametrizations, trilinear resampling, SO(3) grids.

Conventions (those of the package docstring): matrices act on column vectors;
``a @ b`` applies ``b`` first. Every function here is pure and batched over any
leading shape ``...``. Quaternions are ``(w, x, y, z)`` with ``w`` the real part
(scalar first); ``q`` and ``-q`` are the same rotation. The 6D representation of
Zhou et al. (2019) is the first two *columns* of the matrix, ``(R[:, 0], R[:, 1])``.
An axis-angle (rotation) vector ``v`` is ``angle * unit_axis`` (right-hand rule).

:func:`resample` turns grids by any rotation with trilinear interpolation and is
differentiable with respect to the matrix; it follows ``groups.rotate`` exactly:
the voxel at centred coordinate ``c`` moves to ``R @ c``, so
``resample(resample(x, a), b) ≈ resample(x, b @ a)``.

SO(3) grids (:func:`so3_grid`): level 0 is the 24 rotations of the cube group O;
level ``L`` adds, inside each element's Voronoi cell, the rotations
``M_g @ exp(v)`` for ``v`` on a cubic lattice of spacing ``h_L = (π/2) / 2^L``.
Every level contains the identity and the 24 cube rotations. Measured covering
radii (the largest angle from a uniform random rotation to the nearest grid
point): 62.5°, 48.4°, 28.2°, 12.9° for levels 0–3 (24, 96, 720, 8304 rotations;
:data:`COVERING_DEG`). :func:`neighbours` gives
the 27 rotations ``R @ exp(h_L u)``, ``u ∈ {-1, 0, 1}³``, for coarse-to-fine
refinement (cryoDRGN's grid → top-K → subdivide).
"""

from __future__ import annotations

import functools
import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor

from orient3d.geometry.groups import cube_group

__all__ = [
    "COVERING_DEG",
    "axis_angle_to_matrix",
    "covering_radius",
    "geodesic_angle",
    "grid_spacing",
    "left_cube_permutation",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_sixd",
    "neighbours",
    "quaternion_to_matrix",
    "random_rotations",
    "resample",
    "sixd_to_matrix",
    "so3_grid",
]

# level: (points, covering radius in degrees), measured by covering_radius with 200,000
# probes (seed 7). The exact value for level 0 (the group O) is 62.8°.
COVERING_DEG: dict[int, tuple[int, float]] = {
    0: (24, 62.5),
    1: (96, 48.4),
    2: (720, 28.2),
    3: (8304, 12.9),
}


def quaternion_to_matrix(q: Tensor) -> Tensor:
    """``(..., 4)`` quaternions ``(w, x, y, z)`` (normalized here) -> ``(..., 3, 3)``."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_quaternion(R: Tensor) -> Tensor:
    """``(..., 3, 3)`` rotations -> ``(..., 4)`` unit quaternions with ``w >= 0``.

    Each of the four candidate formulas (Shepperd) is computed and the best
    conditioned one, with the largest ``|component|``, is kept per rotation.
    """
    m = R
    t = m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2]
    diag = [m[..., i, i] for i in range(3)]
    abs4 = torch.stack([1 + t, *(1 + 2 * di - t for di in diag)])  # (4, ...): 4w², 4x², ...
    s = abs4.movedim(0, -1).clamp_min(1e-12).sqrt()  # (..., 4): 2|w|, 2|x|, 2|y|, 2|z|
    x21, x12 = m[..., 2, 1], m[..., 1, 2]
    x02, x20 = m[..., 0, 2], m[..., 2, 0]
    x10, x01 = m[..., 1, 0], m[..., 0, 1]
    cands = torch.stack(
        [
            torch.stack([s[..., 0] ** 2, x21 - x12, x02 - x20, x10 - x01], -1) / s[..., 0:1],
            torch.stack([x21 - x12, s[..., 1] ** 2, x01 + x10, x02 + x20], -1) / s[..., 1:2],
            torch.stack([x02 - x20, x01 + x10, s[..., 2] ** 2, x12 + x21], -1) / s[..., 2:3],
            torch.stack([x10 - x01, x02 + x20, x12 + x21, s[..., 3] ** 2], -1) / s[..., 3:4],
        ],
        dim=-2,
    )  # (..., 4 candidates, 4)
    best = s.argmax(dim=-1)  # (...)
    q = cands.gather(-2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2) / 2
    q = q / q.norm(dim=-1, keepdim=True)
    return torch.where(q[..., :1] < 0, -q, q)


def sixd_to_matrix(d6: Tensor) -> Tensor:
    """``(..., 6)`` -> ``(..., 3, 3)`` by Gram-Schmidt on the two 3-vectors (columns 0, 1)."""
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)  # columns


def matrix_to_sixd(R: Tensor) -> Tensor:
    """``(..., 3, 3)`` -> ``(..., 6)``: the first two columns, concatenated."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def _skew(v: Tensor) -> Tensor:
    """``(..., 3)`` -> ``(..., 3, 3)`` cross-product matrix ``[v]_x``."""
    x, y, z = v.unbind(-1)
    o = torch.zeros_like(x)
    return torch.stack([o, -z, y, z, o, -x, -y, x, o], dim=-1).reshape(*v.shape[:-1], 3, 3)


def axis_angle_to_matrix(v: Tensor) -> Tensor:
    """``(..., 3)`` rotation vectors -> ``(..., 3, 3)`` (Rodrigues; smooth at 0)."""
    th2 = (v * v).sum(-1)[..., None, None]  # (..., 1, 1)
    small = th2 < 1e-8
    th = th2.clamp_min(1e-8).sqrt()
    a = torch.where(small, 1 - th2 / 6, torch.sin(th) / th)
    b = torch.where(small, 0.5 - th2 / 24, (1 - torch.cos(th)) / th.pow(2))
    k = _skew(v)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    return eye + a * k + b * (k @ k)


def matrix_to_axis_angle(R: Tensor) -> Tensor:
    """``(..., 3, 3)`` -> ``(..., 3)`` rotation vectors with angle in ``[0, π]``."""
    q = matrix_to_quaternion(R)
    n = q[..., 1:].norm(dim=-1, keepdim=True)
    angle = 2 * torch.atan2(n, q[..., :1])
    return torch.where(n > 1e-12, q[..., 1:] * angle / n.clamp_min(1e-12), 2 * q[..., 1:])


def geodesic_angle(A: Tensor, B: Tensor) -> Tensor:
    """Angle in radians, ``[0, π]``, of the rotation ``Aᵀ B`` taking ``A`` to ``B``.

    Broadcasts ``(..., 3, 3)`` pairs to ``(...)``. Computed as ``atan2(sin, cos)``,
    accurate near 0 and π alike.
    """
    m = A.transpose(-1, -2) @ B
    cos = (m[..., 0, 0] + m[..., 1, 1] + m[..., 2, 2] - 1) / 2
    w = torch.stack([m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                     m[..., 1, 0] - m[..., 0, 1]], dim=-1)  # fmt: skip
    return torch.atan2(w.norm(dim=-1) / 2, cos)


def random_rotations(
    n: int | tuple[int, ...],
    generator: torch.Generator | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """``(*n, 3, 3)`` rotations drawn uniformly (Haar) from normalized Gaussian quaternions."""
    shape = (n,) if isinstance(n, int) else tuple(n)
    q = torch.randn(*shape, 4, generator=generator, dtype=torch.float64)
    return quaternion_to_matrix(q).to(dtype)


def resample(x: Tensor, R: Tensor, padding_mode: str = "zeros") -> Tensor:
    """Rotate grids by continuous rotations with trilinear interpolation.

    Args:
        x: ``(B, D, D, D)`` or ``(B, C, D, D, D)`` grids (any dtype; cast to ``R``'s).
        R: ``(B, 3, 3)`` rotations, or one ``(3, 3)`` for the whole batch.
        padding_mode: what lies outside the grid (``grid_sample``'s option).

    Returns:
        Grids of ``x``'s shape, ``out[c] = x[Rᵀ c]`` at centred coordinates, so the
        voxel at ``c`` moves to ``R @ c`` (as ``groups.rotate``). Differentiable in
        ``R`` and ``x``. With ``align_corners=True`` the normalized coordinate is
        ``c / ((D - 1) / 2)`` on every axis, so voxel centres map onto voxel centres
        and a cube rotation reproduces ``groups.rotate`` up to float error.
    """
    if x.dim() not in (4, 5):
        raise ValueError(f"x must be (B, D, D, D) or (B, C, D, D, D), got {tuple(x.shape)}")
    squeeze = x.dim() == 4
    xc = x.unsqueeze(1) if squeeze else x  # (B, C, D, D, D)
    b = xc.shape[0]
    Rb = R.expand(b, 3, 3) if R.dim() == 2 else R
    if Rb.shape != (b, 3, 3):
        raise ValueError(f"R must be (B, 3, 3) or (3, 3), got {tuple(R.shape)} for B = {b}")
    # grid_sample indexes (W, H, D) by (x, y, z): the reverse of our (i, j, k). In that
    # order the sampling map c -> Rᵀ c reads P Rᵀ P, P the reversal, i.e. Rᵀ flipped.
    theta = Rb.transpose(-1, -2).flip(-1, -2)  # (B, 3, 3)
    theta = torch.cat([theta, theta.new_zeros(b, 3, 1)], dim=-1)  # (B, 3, 4)
    grid = F.affine_grid(theta, list(xc.shape), align_corners=True)  # (B, D, D, D, 3)
    out = F.grid_sample(
        xc.to(R.dtype), grid, mode="bilinear", padding_mode=padding_mode, align_corners=True
    )  # (B, C, D, D, D)
    return out.squeeze(1) if squeeze else out


# ----------------------------------------------------------------------------
# SO(3) grids


def grid_spacing(level: int) -> float:
    """Lattice spacing in radians of rotation vectors at ``level``: ``(π/2) / 2^level``."""
    return (math.pi / 2) / 2**level


def _cube_matrices(dtype: torch.dtype = torch.float64) -> Tensor:
    return cube_group().matrices.to(dtype)  # (24, 3, 3)


@functools.cache
def _grid64(level: int) -> Tensor:
    if level < 0:
        raise ValueError(f"level must be >= 0, got {level}")
    M = _cube_matrices()  # (G, 3, 3)
    if level == 0:
        return M
    h = grid_spacing(level)
    m = 2**level  # lattice points with |v_i| <= π/2 cover the cell (its radius < π/2)
    ticks = torch.arange(-m, m + 1, dtype=torch.float64) * h
    ticks = ticks[ticks.abs().argsort(stable=True)]  # 0 first, so element 0 is the identity
    v = torch.cartesian_prod(ticks, ticks, ticks)  # (P, 3)
    local = axis_angle_to_matrix(v)  # (P, 3, 3)
    dist = geodesic_angle(M[None], local[:, None])  # (P, G): angle from each cube element
    own = dist[:, 0]
    nearest = dist.min(dim=1).values
    tol = 1e-9
    inside = own < nearest + tol  # in the closed Voronoi cell of the identity
    tie = (dist < own[:, None] + tol).sum(1) > 1  # on the cell's boundary
    interior = local[inside & ~tie]  # strictly inside: each appears once over the 24 cells
    boundary = local[inside & tie]
    pts = [(M[:, None] @ interior[None]).reshape(-1, 3, 3)]
    if boundary.shape[0]:
        cand = (M[:, None] @ boundary[None]).reshape(-1, 3, 3)
        pts.append(_unique(cand))
    return torch.cat(pts)


def _unique(R: Tensor) -> Tensor:
    """The rotations of ``(N, 3, 3)`` with duplicates (equal to 1e-6) removed, in order."""
    q = matrix_to_quaternion(R)  # (N, 4), w >= 0; fix the sign of w == 0 ones too
    lead = (q.abs() > 1e-6).to(torch.int8).argmax(dim=-1, keepdim=True)
    q = torch.where(q.gather(-1, lead) < 0, -q, q)
    keys = torch.round(q * 1e5).to(torch.int64)
    _, inv = torch.unique(keys, dim=0, return_inverse=True)
    first = torch.full((int(inv.max()) + 1,), R.shape[0], dtype=torch.long)
    first = first.scatter_reduce(0, inv, torch.arange(R.shape[0]), reduce="amin")
    return R[first.sort().values]


def so3_grid(level: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """A near-uniform grid of rotations, ``(N, 3, 3)``; element 0 is the identity.

    Level 0 is the 24 cube rotations; each level halves the lattice spacing (about
    8× the points). Sizes: 24, 96, 720, 8304 for levels 0–3.
    """
    return _grid64(level).to(dtype)


@functools.cache
def left_cube_permutation(level: int) -> Tensor:
    """``(24, N)`` long: entry ``[g, i]`` is the index of ``M_g · grid[i]`` in the grid of
    ``level`` (``M_g`` the cube rotation ``g`` of ``cube_group()``).

    The grid is a union of the 24 cells' points moved by every ``M`` in O, so turning it
    on the left by a cube rotation permutes it; turning a rotation ``R`` in cell ``i``
    lands ``M_g R`` in cell ``[g, i]``, since ``M_g`` is an isometry of SO(3).
    """
    grid = _grid64(level)  # (N, 3, 3)
    qg = matrix_to_quaternion(grid)  # (N, 4)
    rows = []
    for m in _cube_matrices():
        dots = (matrix_to_quaternion(m @ grid) @ qg.T).abs()  # (N, N)
        best, idx = dots.max(dim=1)
        if bool((best < 1 - 1e-9).any()):
            raise AssertionError(f"the level-{level} grid is not closed under the cube group")
        rows.append(idx)
    return torch.stack(rows)


@functools.cache
def _offsets(level: int) -> Tensor:
    u = torch.tensor(list(itertools.product((-1.0, 0.0, 1.0), repeat=3)), dtype=torch.float64)
    u = torch.cat([u[13:14], u[:13], u[14:]])  # the centre (0, 0, 0) first
    return axis_angle_to_matrix(u * grid_spacing(level))  # (27, 3, 3)


def neighbours(R_center: Tensor, level: int) -> Tensor:
    """``(..., 3, 3) -> (..., 27, 3, 3)``: ``R @ exp(h_L u)`` for ``u ∈ {-1, 0, 1}³``.

    The perturbation is applied first (right-multiplied), as in the grid itself;
    index 0 is ``R_center``. Around a point of the level ``L - 1`` grid, the level
    ``L`` neighbourhood covers that point's lattice cell.
    """
    off = _offsets(level).to(R_center.dtype).to(R_center.device)
    return R_center[..., None, :, :] @ off


def covering_radius(
    grid: Tensor, n_probe: int = 20000, generator: torch.Generator | None = None
) -> float:
    """Estimated covering radius in radians: the largest distance from a random
    rotation to its nearest grid point (a lower bound that tightens with ``n_probe``)."""
    probes = random_rotations(n_probe, generator, dtype=torch.float64)
    q_grid = matrix_to_quaternion(grid.to(torch.float64))  # (N, 4)
    q_probe = matrix_to_quaternion(probes)  # (P, 4)
    best = torch.zeros(n_probe, dtype=torch.float64)
    for s in range(0, n_probe, 2048):
        dots = (q_probe[s : s + 2048] @ q_grid.T).abs()  # (p, N); angle = 2 acos |<q, q'>|
        best[s : s + 2048] = dots.max(dim=1).values
    return float(2 * torch.acos(best.clamp(max=1.0)).max())
