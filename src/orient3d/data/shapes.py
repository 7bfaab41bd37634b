"""Recipes of the built-in procedural classes, as lists of primitives.

Each builder draws one object's random proportions and parts from ``rng`` and
returns its primitives in normalized coordinates: the object lives in the unit
cube ``[0, 1]³`` with axes x, y, z, **z up, floor at z = 0, front towards -y**
(y = 0). The rasterizer in :mod:`orient3d.data.procedural` maps that cube onto
any grid, so one seed gives the same objects at every resolution.

Every furniture recipe has a part that no proper cube rotation can map onto
itself (a chair's back, a lamp's forward arm, a desk's drawer pedestal, a
table's front drawer, books on a shelf), so almost every object has a trivial
stabilizer in O. Mirror symmetries (left/right) are allowed: they are
reflections, not elements of O.

Primitives:
    ``("box", x0, x1, y0, y1, z0, z1)``: an axis-aligned box.
    ``("cyl", axis, u, v, r, lo, hi)``: a cylinder along ``axis`` (0, 1, 2) whose
    centre has coordinates ``(u, v)`` on the two other axes (in increasing axis
    order), radius ``r``, spanning ``[lo, hi]`` along ``axis``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from orient3d.errors import DataError

Prim = tuple
Builder = Callable[[np.random.Generator], list[Prim]]

__all__ = ["BUILDERS", "POLYCUBE_TRIES", "Builder", "Prim", "polycube"]


def _box(x0: float, x1: float, y0: float, y1: float, z0: float, z1: float) -> Prim:
    return ("box", x0, x1, y0, y1, z0, z1)


def _vcyl(x: float, y: float, r: float, z0: float, z1: float) -> Prim:
    return ("cyl", 2, x, y, r, z0, z1)


def _legs(
    rng: np.random.Generator, x0: float, x1: float, y0: float, y1: float, z1: float, s: float
) -> list[Prim]:
    """Four legs of side ``s`` inside the rectangle, square or round."""
    round_legs = rng.random() < 0.4
    out: list[Prim] = []
    for lx in (x0, x1 - s):
        for ly in (y0, y1 - s):
            if round_legs:
                out.append(_vcyl(lx + s / 2, ly + s / 2, s / 2, 0.0, z1))
            else:
                out.append(_box(lx, lx + s, ly, ly + s, 0.0, z1))
    return out


def _footprint(rng: np.random.Generator, w: tuple[float, float], d: tuple[float, float]):
    wx, dy = rng.uniform(*w), rng.uniform(*d)
    return (1 - wx) / 2, (1 + wx) / 2, (1 - dy) / 2, (1 + dy) / 2


def chair(rng: np.random.Generator) -> list[Prim]:
    x0, x1, y0, y1 = _footprint(rng, (0.5, 0.75), (0.5, 0.7))
    hs, t, top = rng.uniform(0.38, 0.5), rng.uniform(0.04, 0.07), rng.uniform(0.85, 1.0)
    prims = _legs(rng, x0, x1, y0, y1, hs - t, rng.uniform(0.05, 0.08))
    prims.append(_box(x0, x1, y0, y1, hs - t, hs))
    bt = rng.uniform(0.04, 0.08)
    if rng.random() < 0.4:  # posts, a top rail and vertical slats
        post = rng.uniform(0.05, 0.08)
        rail = top - rng.uniform(0.08, 0.15)
        prims += [
            _box(x0, x0 + post, y1 - bt, y1, hs, top),
            _box(x1 - post, x1, y1 - bt, y1, hs, top),
        ]
        prims.append(_box(x0, x1, y1 - bt, y1, rail, top))
        n = int(rng.integers(1, 4))
        for k in range(n):
            cx = x0 + (x1 - x0) * (k + 1) / (n + 1)
            prims.append(_box(cx - 0.02, cx + 0.02, y1 - bt, y1, hs, rail))
    else:
        prims.append(_box(x0, x1, y1 - bt, y1, hs, top))
    if rng.random() < 0.4:  # armrests on front supports
        ha, aw = hs + rng.uniform(0.15, 0.25), rng.uniform(0.05, 0.08)
        for ax in (x0, x1 - aw):
            prims.append(_box(ax, ax + aw, y0, y1, ha - 0.04, ha))
            prims.append(_box(ax, ax + aw, y0, y0 + aw, hs, ha))
    return prims


def table(rng: np.random.Generator) -> list[Prim]:
    x0, x1, y0, y1 = _footprint(rng, (0.7, 1.0), (0.45, 0.8))
    h, t = rng.uniform(0.45, 0.7), rng.uniform(0.04, 0.08)
    inset = rng.uniform(0.0, 0.06)
    prims = _legs(
        rng, x0 + inset, x1 - inset, y0 + inset, y1 - inset, h - t, rng.uniform(0.05, 0.09)
    )
    prims.append(_box(x0, x1, y0, y1, h - t, h))
    w = x1 - x0
    dw, dc = rng.uniform(0.25, 0.45) * w, 0.5 + rng.uniform(-0.2, 0.2) * w
    dh, dd = rng.uniform(0.08, 0.15), rng.uniform(0.15, 0.3) * (y1 - y0)
    prims.append(_box(dc - dw / 2, dc + dw / 2, y0 + inset, y0 + inset + dd, h - t - dh, h - t))
    if rng.random() < 0.4:  # a lower shelf between the legs
        zs = rng.uniform(0.08, 0.2)
        prims.append(_box(x0 + inset, x1 - inset, y0 + inset, y1 - inset, zs, zs + 0.04))
    return prims


def bed(rng: np.random.Generator) -> list[Prim]:
    x0, x1, y0, y1 = _footprint(rng, (0.55, 0.8), (0.85, 1.0))
    zl, hb, hm = rng.uniform(0.03, 0.08), rng.uniform(0.15, 0.25), rng.uniform(0.08, 0.15)
    ht, bt = rng.uniform(0.5, 0.8), rng.uniform(0.04, 0.07)
    prims = _legs(rng, x0, x1, y0, y1, zl, 0.06)
    prims.append(_box(x0, x1, y0, y1 - bt, zl, hb))
    prims.append(_box(x0 + 0.02, x1 - 0.02, y0 + 0.02, y1 - bt, hb, hb + hm))
    prims.append(_box(x0, x1, y1 - bt, y1, 0.0, ht))
    if rng.random() < 0.6:
        prims.append(_box(x0, x1, y0, y0 + bt, 0.0, rng.uniform(hb + 0.05, 0.4)))
    n = int(rng.integers(1, 3))
    pw, pd = (x1 - x0 - 0.08) / n, rng.uniform(0.1, 0.16)
    for k in range(n):
        px = x0 + 0.04 + k * pw
        prims.append(
            _box(px + 0.01, px + pw - 0.01, y1 - bt - pd, y1 - bt, hb + hm, hb + hm + 0.06)
        )
    return prims


def sofa(rng: np.random.Generator) -> list[Prim]:
    x0, x1, y0, y1 = _footprint(rng, (0.8, 1.0), (0.4, 0.6))
    zl, hs, top = rng.uniform(0.03, 0.08), rng.uniform(0.3, 0.42), rng.uniform(0.6, 0.8)
    bt, aw = rng.uniform(0.1, 0.18), rng.uniform(0.06, 0.12)
    prims = _legs(rng, x0, x1, y0, y1, zl, 0.05)
    prims.append(_box(x0, x1, y0, y1, zl, hs))
    prims.append(_box(x0, x1, y1 - bt, y1, hs, top))
    ha = hs + rng.uniform(0.1, 0.2)
    prims += [_box(x0, x0 + aw, y0, y1, hs, ha), _box(x1 - aw, x1, y0, y1, hs, ha)]
    if rng.random() < 0.5:  # back cushions
        n = int(rng.integers(2, 4))
        cw = (x1 - x0 - 2 * aw) / n
        for k in range(n):
            cx = x0 + aw + k * cw
            prims.append(_box(cx + 0.01, cx + cw - 0.01, y1 - bt - 0.06, y1 - bt, hs, top - 0.05))
    if rng.random() < 0.25:  # a chaise on one side
        cx = x0 if rng.random() < 0.5 else x1 - 0.35
        prims.append(_box(cx, cx + 0.35, max(0.0, y0 - 0.3), y0, zl, hs))
    return prims


def lamp(rng: np.random.Generator) -> list[Prim]:
    px, py = 0.5 + rng.uniform(-0.05, 0.05), rng.uniform(0.6, 0.75)
    br, bh = rng.uniform(0.12, 0.2), rng.uniform(0.03, 0.06)
    pr, ph = rng.uniform(0.02, 0.04), rng.uniform(0.55, 0.9)
    prims: list[Prim] = []
    if rng.random() < 0.5:
        prims.append(_vcyl(px, py, br, 0.0, bh))
    else:
        prims.append(_box(px - br, px + br, py - br, py + br, 0.0, bh))
    prims.append(_vcyl(px, py, pr, bh, ph))
    reach = rng.uniform(0.25, 0.45)  # the arm reaches forward, towards -y
    ay = py - reach
    prims.append(("cyl", 1, px, ph, pr, ay, py))
    sr, sh = rng.uniform(0.08, 0.15), rng.uniform(0.1, 0.2)
    prims.append(_vcyl(px, ay, sr, ph - sh, ph + 0.02))
    if rng.random() < 0.5:  # a narrower cap on the shade
        prims.append(_vcyl(px, ay, sr * 0.5, ph + 0.02, ph + 0.06))
    return prims


def desk(rng: np.random.Generator) -> list[Prim]:
    x0, x1, y0, y1 = _footprint(rng, (0.8, 1.0), (0.45, 0.65))
    h, t = rng.uniform(0.5, 0.7), rng.uniform(0.04, 0.06)
    w = x1 - x0
    pw = rng.uniform(0.25, 0.4) * w
    left = rng.random() < 0.5
    px0, px1 = (x0, x0 + pw) if left else (x1 - pw, x1)
    prims = [_box(x0, x1, y0, y1, h - t, h), _box(px0, px1, y0, y1, 0.0, h - t)]
    n = int(rng.integers(2, 5))
    dh = (h - t) / n
    for k in range(n):  # drawer fronts with handles, standing out at the front
        z0 = k * dh
        prims.append(_box(px0 + 0.01, px1 - 0.01, y0 - 0.02, y0, z0 + 0.01, z0 + dh - 0.01))
        cx = (px0 + px1) / 2
        prims.append(
            _box(cx - 0.04, cx + 0.04, y0 - 0.04, y0 - 0.02, z0 + dh / 2, z0 + dh / 2 + 0.02)
        )
    s = rng.uniform(0.04, 0.07)
    lx = x1 - s if left else x0
    if rng.random() < 0.5:
        prims.append(_box(lx, lx + s, y0, y1, 0.0, h - t))
    else:
        prims += [
            _box(lx, lx + s, y0, y0 + s, 0.0, h - t),
            _box(lx, lx + s, y1 - s, y1, 0.0, h - t),
        ]
    prims.append(_box(x0, x1, y1 - 0.03, y1, rng.uniform(0.2, 0.4) * h, h - t))
    if rng.random() < 0.3 and h < 0.65:  # a hutch at the back
        hh = rng.uniform(0.2, 1.0 - h)
        prims += [
            _box(x0, x1, y1 - 0.12, y1, h + hh - 0.03, h + hh),
            _box(x0, x0 + 0.03, y1 - 0.12, y1, h, h + hh),
        ]
    return prims


def shelf(rng: np.random.Generator) -> list[Prim]:
    x0, x1, y0, y1 = _footprint(rng, (0.5, 0.9), (0.25, 0.4))
    h, pt, ph = rng.uniform(0.7, 1.0), rng.uniform(0.03, 0.05), rng.uniform(0.05, 0.1)
    prims = [
        _box(x0, x0 + pt, y0, y1, 0.0, h),
        _box(x1 - pt, x1, y0, y1, 0.0, h),
        _box(x0, x1, y0, y1, h - pt, h),
        _box(x0, x1, y1 - pt, y1, 0.0, h),
        _box(x0, x1, y0, y1, ph, ph + pt),
        _box(x0, x1, y0 + 0.03, y0 + 0.06, 0.0, ph),  # recessed kick plate
    ]
    n = int(rng.integers(1, 4))
    levels = np.sort(rng.uniform(ph + 0.15, h - 0.15, size=n))
    bottoms = [ph + pt, *(levels + pt)]
    for z in levels:
        prims.append(_box(x0, x1, y0, y1, z, z + pt))
    for zb in bottoms:  # a few books on each level
        for _ in range(int(rng.integers(0, 4))):
            bw = rng.uniform(0.04, 0.12)
            bx = rng.uniform(x0 + pt, x1 - pt - bw)
            prims.append(_box(bx, bx + bw, y0 + 0.05, y1 - pt, zb, zb + rng.uniform(0.08, 0.14)))
    return prims


def monitor(rng: np.random.Generator) -> list[Prim]:
    w, sh, st = rng.uniform(0.7, 1.0), rng.uniform(0.4, 0.6), rng.uniform(0.04, 0.07)
    zb, ys = rng.uniform(0.15, 0.3), rng.uniform(0.35, 0.45)
    x0, x1 = (1 - w) / 2, (1 + w) / 2
    prims = [_box(x0, x1, ys, ys + st, zb, zb + sh)]
    bw, bd = w * rng.uniform(0.4, 0.7), rng.uniform(0.03, 0.08)
    prims.append(
        _box(0.5 - bw / 2, 0.5 + bw / 2, ys + st, ys + st + bd, zb + 0.1 * sh, zb + 0.7 * sh)
    )
    ny = ys + st + bd
    nw, nd = rng.uniform(0.06, 0.12), rng.uniform(0.04, 0.07)
    prims.append(_box(0.5 - nw / 2, 0.5 + nw / 2, ny, ny + nd, 0.0, zb + 0.4 * sh))
    fw = rng.uniform(0.3, 0.5)
    front = ny - rng.uniform(0.15, 0.25)
    if rng.random() < 0.5:
        prims.append(_box(0.5 - fw / 2, 0.5 + fw / 2, front, ny + nd + 0.05, 0.0, 0.03))
    else:
        prims.append(_vcyl(0.5, (front + ny + nd) / 2, fw / 2, 0.0, 0.03))
    return prims


_NEIGHBOURS = np.array([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]])


def polycube_cells(rng: np.random.Generator, lattice: int = 4) -> np.ndarray:
    """Cells ``(K, 3)`` of a random face-connected polycube grown in a small lattice."""
    k = int(rng.integers(5, 11))
    cells = [tuple(int(v) for v in rng.integers(0, lattice, size=3))]
    while len(cells) < k:
        base = np.array(cells[int(rng.integers(len(cells)))])
        nxt = base + _NEIGHBOURS[int(rng.integers(6))]
        if (nxt >= 0).all() and (nxt < lattice).all() and tuple(nxt.tolist()) not in cells:
            cells.append(tuple(int(v) for v in nxt))
    return np.array(cells)


def _symmetric(cells: np.ndarray) -> bool:
    """Whether a rotation of the 90° family (other than identity) maps the cells' shape
    onto itself up to translation inside the lattice; used to reject symmetric polycubes."""
    c = cells - cells.min(0)
    key = {tuple(v) for v in c.tolist()}
    for m in _ROTATIONS[1:]:
        r = c @ m.T
        r = r - r.min(0)
        if {tuple(v) for v in r.tolist()} == key:
            return True
    return False


def _rotations() -> list[np.ndarray]:
    from orient3d.geometry.groups import cube_group

    return list(cube_group().matrices.numpy())


_ROTATIONS = _rotations()


# Draws of polycube() before it gives up. About one draw in ten is symmetric, so 1000
# symmetric draws in a row mean a broken generator (p ~ 1e-1000), not bad luck.
POLYCUBE_TRIES = 1000


def polycube(rng: np.random.Generator, lattice: int = 4) -> list[Prim]:
    """A random polycube with no rotational symmetry (even up to translation).

    Symmetric draws are rejected and drawn again from ``rng``; after
    :data:`POLYCUBE_TRIES` symmetric draws in a row it raises a ``DataError``
    rather than return a symmetric one."""
    for _ in range(POLYCUBE_TRIES):
        cells = polycube_cells(rng, lattice)
        if not _symmetric(cells):
            break
    else:
        raise DataError(
            f"polycube: {POLYCUBE_TRIES} draws in a row were rotationally symmetric "
            f"(lattice {lattice}); the generator cannot give an asymmetric polycube"
        )
    s = 1.0 / lattice
    return [_box(i * s, (i + 1) * s, j * s, (j + 1) * s, k * s, (k + 1) * s) for i, j, k in cells]


# name -> builder, in label order.
BUILDERS: dict[str, Builder] = {
    "chair": chair,
    "table": table,
    "bed": bed,
    "sofa": sofa,
    "lamp": lamp,
    "desk": desk,
    "shelf": shelf,
    "monitor": monitor,
    "polycube": polycube,
}
