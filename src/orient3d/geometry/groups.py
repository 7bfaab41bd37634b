"""The rotation groups of the cube and their exact action on voxel grids.

``cube_group()`` is the chiral octahedral group O (24 proper rotations);
``cube_group(reflections=True)`` is the full octahedral group Oh (48 elements).
Every element is a signed permutation matrix, so it acts on a cubic grid exactly,
by a permutation of the three spatial axes followed by flips: no interpolation.

Convention (see the package docstring): rotating a grid by ``R`` moves the voxel
at centred coordinate ``c`` to ``R @ c``, and ``compose(a, b) = a @ b`` applies
``b`` first, so ``rotate(rotate(x, O, a), O, b) == rotate(x, O, O.compose(b, a))``.

This module imports nothing else of orient3d.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

__all__ = [
    "CubeGroup",
    "axis_angle_matrix",
    "cube_group",
    "orbit",
    "relative",
    "rotate",
    "rotate_array",
    "same_voxels",
    "stabilizer",
    "stabilizer_mask",
    "view_elements",
]


def axis_angle_matrix(axis: np.ndarray | list[float], angle: float) -> np.ndarray:
    """The rotation matrix of ``angle`` radians about ``axis`` (right-hand rule)."""
    a = np.asarray(axis, dtype=np.float64)
    a = a / np.linalg.norm(a)
    k = np.array([[0.0, -a[2], a[1]], [a[2], 0.0, -a[0]], [-a[1], a[0], 0.0]])
    return np.eye(3) + np.sin(angle) * k + (1.0 - np.cos(angle)) * (k @ k)


def _rounded(m: np.ndarray) -> np.ndarray:
    out = np.rint(m).astype(np.int64)
    if not np.allclose(out, m, atol=1e-9):
        raise ValueError(f"matrix is not integral: {m}")
    return out


def _closure(generators: list[np.ndarray]) -> list[np.ndarray]:
    """All products of the generators, identity first, in breadth-first order."""
    elements = [np.eye(3, dtype=np.int64)]
    seen = {elements[0].tobytes()}
    frontier = list(elements)
    while frontier:
        nxt = []
        for e in frontier:
            for s in generators:
                p = s @ e
                key = p.tobytes()
                if key not in seen:
                    seen.add(key)
                    elements.append(p)
                    nxt.append(p)
        frontier = nxt
    return elements


def _axis_angle(m: np.ndarray) -> tuple[np.ndarray, float]:
    """Unit axis and angle in [0, pi] of a proper rotation matrix.

    The identity gets the zero axis; a half turn gets the axis whose first
    non-zero component is positive.
    """
    r = m.astype(np.float64)
    angle = float(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0)))
    if angle < 1e-9:
        return np.zeros(3), 0.0
    # The axis spans the null space of (R - I).
    _, _, vt = np.linalg.svd(r - np.eye(3))
    axis = vt[-1]
    if np.pi - angle < 1e-9:
        nz = axis[np.abs(axis) > 1e-9]
        if nz[0] < 0:
            axis = -axis
    elif not np.allclose(axis_angle_matrix(axis, angle), r, atol=1e-9):
        axis = -axis
    return axis / np.linalg.norm(axis), angle


@dataclass(frozen=True, eq=False)
class CubeGroup:
    """A finite group of signed permutation matrices, with its tables.

    Built by :func:`cube_group`; every table is checked when built.

    Attributes:
        name: ``"O"`` or ``"Oh"``.
        matrices: ``(G, 3, 3)`` int64 tensor; element 0 is the identity.
        inverse: ``(G,)`` index of each element's inverse.
        table: ``(G, G)`` Cayley table, ``table[a, b]`` = index of ``M[a] @ M[b]``.
        generators: indices of the generators the group was built from.
        generator_names: a description of each generator.
        angles: ``(G,)`` rotation angle in radians of each element's proper part
            (for an improper element ``R`` the proper part is ``-R``).
        axes: ``(G, 3)`` unit rotation axis of the proper part (zero for angle 0).
        determinants: ``(G,)`` +1 for rotations, -1 for improper elements.
        classes: conjugacy classes, each a tuple of element indices.
    """

    name: str
    matrices: Tensor
    inverse: Tensor
    table: Tensor
    generators: tuple[int, ...]
    generator_names: tuple[str, ...]
    angles: Tensor
    axes: Tensor
    determinants: Tensor
    classes: tuple[tuple[int, ...], ...]
    _index: dict[bytes, int] = field(repr=False)

    def __len__(self) -> int:
        return int(self.matrices.shape[0])

    @property
    def order(self) -> int:
        return len(self)

    def compose(self, a: Tensor | int, b: Tensor | int) -> Tensor:
        """Index of ``M[a] @ M[b]`` (``b`` applied first); broadcasts over tensors."""
        return self.table[torch.as_tensor(a), torch.as_tensor(b)]

    def inv(self, a: Tensor | int) -> Tensor:
        """Index of the inverse of ``a``."""
        return self.inverse[torch.as_tensor(a)]

    def index_of(self, matrix: np.ndarray | Tensor) -> int:
        """Index of the element equal to ``matrix`` (after rounding); KeyError if absent."""
        m = _rounded(np.asarray(matrix, dtype=np.float64))
        key = m.astype(np.int64).tobytes()
        if key not in self._index:
            raise KeyError(f"matrix is not an element of {self.name}: {m.tolist()}")
        return self._index[key]

    def element_label(self, g: int) -> str:
        """A short human-readable label, e.g. ``'90° about (0, 0, 1)'``."""
        ang = round(float(np.degrees(self.angles[g])))
        ax = tuple(round(float(v), 2) + 0.0 for v in self.axes[g])
        prefix = "" if int(self.determinants[g]) > 0 else "inversion ∘ "
        if ang == 0:
            return "identity" if prefix == "" else "inversion"
        return f"{prefix}{ang}° about {ax}"


def _build(name: str, gens: list[tuple[str, np.ndarray]]) -> CubeGroup:
    mats = _closure([m for _, m in gens])
    index = {m.tobytes(): i for i, m in enumerate(mats)}
    n = len(mats)
    table = np.empty((n, n), dtype=np.int64)
    for a in range(n):
        for b in range(n):
            table[a, b] = index[(mats[a] @ mats[b]).tobytes()]
    inverse = np.array([index[m.T.copy().tobytes()] for m in mats], dtype=np.int64)
    dets = np.array([round(np.linalg.det(m)) for m in mats], dtype=np.int64)
    axes = np.zeros((n, 3))
    angles = np.zeros(n)
    for i, m in enumerate(mats):
        axes[i], angles[i] = _axis_angle(m * dets[i])
    classes: list[tuple[int, ...]] = []
    assigned: set[int] = set()
    for a in range(n):
        if a in assigned:
            continue
        cls = sorted({int(table[table[g, a], inverse[g]]) for g in range(n)})
        assigned.update(cls)
        classes.append(tuple(cls))
    gen_idx = tuple(index[m.tobytes()] for _, m in gens)
    # The tables are checked here, once, so that nothing downstream can rely on a
    # broken group.
    assert (table[0] == np.arange(n)).all() and (table[:, 0] == np.arange(n)).all()
    assert (table[np.arange(n), inverse] == 0).all()
    assert all(sorted(row) == list(range(n)) for row in table.tolist())
    return CubeGroup(
        name=name,
        matrices=torch.from_numpy(np.stack(mats)),
        inverse=torch.from_numpy(inverse),
        table=torch.from_numpy(table),
        generators=gen_idx,
        generator_names=tuple(s for s, _ in gens),
        angles=torch.from_numpy(angles),
        axes=torch.from_numpy(axes),
        determinants=torch.from_numpy(dets),
        classes=tuple(classes),
        _index=index,
    )


@functools.cache
def cube_group(reflections: bool = False) -> CubeGroup:
    """The rotation group of the cube: O (24 elements) or, with reflections, Oh (48).

    Generated by a quarter turn about the z axis and a third of a turn about the
    body diagonal (1, 1, 1); Oh adds the central inversion ``-I``.
    """
    quarter_z = _rounded(axis_angle_matrix([0, 0, 1], np.pi / 2))
    third_diag = _rounded(axis_angle_matrix([1, 1, 1], 2 * np.pi / 3))
    gens = [("90° about z", quarter_z), ("120° about (1, 1, 1)", third_diag)]
    if reflections:
        gens.append(("inversion", -np.eye(3, dtype=np.int64)))
        group = _build("Oh", gens)
    else:
        group = _build("O", gens)
    assert len(group) == (48 if reflections else 24), len(group)
    return group


# ----------------------------------------------------------------------------
# Exact voxel action


_AxisOp = tuple[tuple[int, ...], tuple[int, ...]]


@functools.cache
def _axis_ops(group: CubeGroup) -> tuple[_AxisOp, ...]:
    """Per element: the axis permutation and the axes to flip that realize it.

    For a signed permutation ``R`` with ``R[i, p(i)] = s_i``, the rotated grid is
    ``y = x.permute(p)`` over the spatial axes, then flipped along every output
    axis ``i`` with ``s_i = -1``: ``out[c'] = x[R^T c']``, i.e. the voxel at ``c``
    moves to ``R @ c``.
    """
    ops: list[_AxisOp] = []
    for m in group.matrices.numpy():
        perm = tuple(int(np.flatnonzero(m[i])[0]) for i in range(3))
        flips = tuple(i for i in range(3) if m[i, perm[i]] < 0)
        ops.append((perm, flips))
    return tuple(ops)


def _apply(x: Tensor, perm: tuple[int, ...], flips: tuple[int, ...]) -> Tensor:
    lead = x.dim() - 3
    y = x.permute(*range(lead), *(lead + p for p in perm))
    if flips:
        y = torch.flip(y, dims=[lead + f for f in flips])
    return y


def _check_grid(x: Tensor, min_dim: int = 3) -> None:
    if x.dim() < min_dim or x.shape[-1] != x.shape[-2] or x.shape[-2] != x.shape[-3]:
        raise ValueError(f"expected a cubic grid (..., D, D, D), got shape {tuple(x.shape)}")


def rotate(x: Tensor, group: CubeGroup, g: int | Tensor) -> Tensor:
    """Rotate voxel grids exactly by group elements.

    Args:
        x: ``(..., D, D, D)`` grids.
        group: the group ``g`` indexes.
        g: one element for all grids (an int or a 0-d tensor), or a ``(B,)``
            index tensor, one element per grid of ``x`` of shape ``(B, ..., D, D, D)``.

    Returns:
        A new tensor of the shape of ``x``: the voxel at centred coordinate ``c``
        of grid ``b`` moved to ``M[g_b] @ c``.
    """
    _check_grid(x)
    ops = _axis_ops(group)
    if isinstance(g, int) or (isinstance(g, Tensor) and g.dim() == 0):
        return _apply(x, *ops[int(g)]).contiguous()
    if g.dim() != 1 or x.dim() < 4 or g.shape[0] != x.shape[0]:
        raise ValueError(
            f"g must be an int or a (B,) tensor matching x's first axis; "
            f"got g {tuple(g.shape)} and x {tuple(x.shape)}"
        )
    d = x.shape[-1]
    if d <= _GATHER_MAX_SIDE:
        # One gather for the whole batch: a few kernels instead of ~5 per distinct
        # element (on 2 threads each small op costs a parallel region).
        index = _voxel_index(group, d, x.device)[g.to(x.device, torch.long)]  # (B, D³)
        flat = x.reshape(x.shape[0], -1, d**3)  # (B, M, D³); M: any axes between
        return flat.gather(2, index[:, None, :].expand_as(flat)).view(x.shape)
    out = torch.empty_like(x)
    g_cpu = g.detach().to("cpu", torch.long)
    # Loop over the distinct elements (at most G), never over the batch.
    for e in torch.unique(g_cpu).tolist():
        idx = (g_cpu == e).nonzero(as_tuple=True)[0].to(x.device)
        out[idx] = _apply(x[idx], *ops[e])
    return out


def rotate_array(a: np.ndarray, group: CubeGroup, g: int) -> np.ndarray:
    """:func:`rotate` for a NumPy array of any dtype: ``(..., D, D, D)`` turned by element
    ``g`` (the same axis permutation and flips), as a new contiguous array."""
    if a.ndim < 3 or len(set(a.shape[-3:])) != 1:
        raise ValueError(f"expected a cubic grid (..., D, D, D), got shape {a.shape}")
    perm, flips = _axis_ops(group)[int(g)]
    lead = a.ndim - 3
    y = np.transpose(a, (*range(lead), *(lead + p for p in perm)))
    if flips:
        y = np.flip(y, axis=tuple(lead + f for f in flips))
    return np.ascontiguousarray(y)


# Grids up to this side rotate by one gather with a cached (G, D³) index (6 MiB for O
# at 32³); larger ones loop over the distinct elements.
_GATHER_MAX_SIDE = 32


@functools.cache
def _voxel_index(group: CubeGroup, d: int, device: torch.device) -> Tensor:
    """``(G, D³)``: the flat source voxel of every output voxel under each element."""
    base = torch.arange(d**3, device=device).view(d, d, d)
    return torch.stack([_apply(base, *op).reshape(-1) for op in _axis_ops(group)])


def orbit(x: Tensor, group: CubeGroup, elements: Sequence[int] | Tensor | None = None) -> Tensor:
    """All rotations of each grid at once: ``(B, D, D, D) -> (B, G, D, D, D)``.

    ``orbit(x)[b, g] == rotate(x[b], group, g)``. Works for any leading shape:
    ``(..., D, D, D) -> (..., G, D, D, D)``. ``elements`` (K indices) picks and
    orders the rotations instead: ``orbit(x, group, e)[b, k] == rotate(x[b], group, e[k])``
    (e.g. ``group.inverse`` for every ``r⁻¹·x``, with no gather afterwards).
    """
    _check_grid(x)
    ops = _axis_ops(group)
    chosen = ops if elements is None else [ops[int(e)] for e in elements]
    return torch.stack([_apply(x, *op) for op in chosen], dim=-4)


def stabilizer_mask(x: Tensor, group: CubeGroup) -> Tensor:
    """``(..., G)`` boolean mask of the elements with ``g·x == x`` for each grid."""
    _check_grid(x)
    lead = x.shape[:-3]
    flat = x.reshape(-1, *x.shape[-3:])
    rows = []
    for op in _axis_ops(group):
        y = _apply(flat, *op)
        rows.append((y == flat).flatten(1).all(dim=1))
    return torch.stack(rows, dim=-1).reshape(*lead, len(group))


def stabilizer(x: Tensor, group: CubeGroup) -> Tensor:
    """Indices of the elements that leave one grid ``(D, D, D)`` unchanged."""
    if x.dim() != 3:
        raise ValueError(
            f"stabilizer takes one grid (D, D, D), got {tuple(x.shape)}; "
            "use stabilizer_mask for batches"
        )
    return stabilizer_mask(x, group).nonzero(as_tuple=True)[0]


def relative(r: Tensor, g: Tensor, group: CubeGroup) -> Tensor:
    """Indices of ``r⁻¹g`` (on ``r``'s device); ``r`` and ``g`` broadcast.

    With ``x = g·c`` shown and ``r`` the element a model picks to turn ``x`` back, this
    is the model's canonical frame ``h`` (``search.canonical_pose``,
    ``metrics.canonical_pose``).
    """
    table, inverse = group.table.to(r.device), group.inverse.to(r.device)
    return table[inverse[r], g.to(r.device)]


def same_voxels(stab_mask: Tensor, group: CubeGroup, g1: Tensor | int, g2: Tensor | int) -> Tensor:
    """Whether ``g1·x`` and ``g2·x`` are the same voxels, from x's stabilizer mask.

    ``g1·x == g2·x`` exactly when ``g2⁻¹ g1`` fixes ``x``. Orientation metrics
    count a prediction right this way, never by comparing indices alone.

    Args:
        stab_mask: ``(G,)`` or ``(B, G)`` from :func:`stabilizer_mask`.
        g1, g2: element indices, ints or tensors broadcastable to ``(B,)``.

    Returns:
        A boolean tensor of the broadcast shape of ``g1`` and ``g2`` (and ``B``).
    """
    rel = group.compose(group.inv(g2), g1)
    if stab_mask.dim() == 1:
        return stab_mask[rel]
    rel = rel.expand(stab_mask.shape[0]) if rel.dim() == 0 else rel
    return stab_mask.gather(1, rel.reshape(-1, 1).to(stab_mask.device)).squeeze(1)


def view_elements() -> tuple[int, ...]:
    """The elements of O in the order exact views of a grid are taken when a head's
    answers are averaged over views (``orient3d.evaluation.recovery.head_log_probs``,
    ``head-refine`` of ``orient3d.search.continuous``): the identity, the quarter,
    half and three-quarter turns about z (the up axis), then the others by index."""
    o = cube_group()
    about_z = sorted(
        (round(float(o.angles[g] * o.axes[g, 2]) % math.tau, 6), g)  # 90°, 180°, 270°
        for g in range(1, len(o))
        if abs(float(o.axes[g, 2])) > 0.99
    )
    first = [0, *(g for _, g in about_z)]
    return (*first, *(g for g in range(len(o)) if g not in first))
