"""Shaded pictures of voxel grids, as numpy uint8 RGB images.

An orthographic camera looks at the grid from the front (-y), the right (+x)
and above (+z), so one picture shows which way is up and which way is front:

- the three visible face orientations are shaded differently, and faces
  pointing **front (-y) are tinted orange**, top faces are lightest;
- farther surfaces are darker (depth cue);
- the floor plane ``z = 0`` under the grid is drawn in light grey with the
  object's **shadow** from a light straight above, so "down" is visible.

Rendering casts one ray per pixel through the grid. All rays share one direction,
so the voxels each ray visits (an exact grid traversal) and the face it enters
them by are computed once per (D, size) and cached; rendering a grid is then one
gather and an ``argmax`` over the first occupied voxel of every ray.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["VIEW_DIR", "render", "render_batch", "render_sheet", "save_png"]

# Direction the camera looks along (into the scene): from front-right-above.
VIEW_DIR = np.array([-0.55, 1.0, -0.75])
_LIGHT = np.array([0.35, -0.6, 0.75])  # towards the light: above, front, right
_BASE = np.array([0.72, 0.78, 0.88])  # object colour
_FRONT = np.array([0.98, 0.62, 0.3])  # tint of the faces pointing -y
_FLOOR = np.array([0.88, 0.88, 0.86])
_SHADOW = np.array([0.62, 0.62, 0.62])
_BACKGROUND = np.array([1.0, 1.0, 1.0])


@dataclass(frozen=True)
class _Rays:
    idx: np.ndarray  # (P, S) int, index into the flattened grid padded with one 0
    face: np.ndarray  # (P, S) uint8, axis crossed to enter the voxel
    depth: np.ndarray  # (P, S) float32 in [0, 1], 0 nearest
    floor: np.ndarray  # (P,) int, index into the (D, D) footprint, or -1
    size: int


def _basis() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = VIEW_DIR / np.linalg.norm(VIEW_DIR)
    r = np.cross(d, [0.0, 0.0, 1.0])
    r /= np.linalg.norm(r)
    u = np.cross(r, d)
    return d, r, u


def _traverse(origin: np.ndarray, d: np.ndarray, res: int) -> tuple[np.ndarray, ...]:
    """Exact voxel traversal (Amanatides–Woo) of parallel rays, vectorized over rays."""
    p = origin.shape[0]
    inv = 1.0 / d
    t0 = (0.0 - origin) * inv
    t1 = (res - origin) * inv
    tnear, tfar = np.minimum(t0, t1), np.maximum(t0, t1)
    t_in, t_out = tnear.max(1), tfar.min(1)
    hit = t_in < t_out
    face = tnear.argmax(1).astype(np.uint8)
    pos = origin + (t_in[:, None] + 1e-6) * d
    cell = np.clip(np.floor(pos).astype(np.int64), 0, res - 1)
    step = np.sign(d).astype(np.int64)
    nxt = cell + (step > 0)
    t_max = (nxt - origin) * inv
    t_delta = np.abs(inv)
    t = t_in.copy()
    n_steps = 3 * res
    idx = np.full((p, n_steps), res**3, np.int64)
    faces = np.zeros((p, n_steps), np.uint8)
    ts = np.zeros((p, n_steps), np.float32)
    rows = np.arange(p)
    for s in range(n_steps):
        inside = hit & (cell >= 0).all(1) & (cell < res).all(1)
        idx[inside, s] = (cell[inside, 0] * res + cell[inside, 1]) * res + cell[inside, 2]
        faces[:, s], ts[:, s] = face, t
        axis = t_max.argmin(1)
        t = t_max[rows, axis]
        cell[rows, axis] += step[axis]
        t_max[rows, axis] += t_delta[axis]
        face = axis.astype(np.uint8)
    return idx, faces, ts


@functools.cache
def _rays(res: int, size: int) -> _Rays:
    d, r, u = _basis()
    corners = np.array([[i, j, k] for i in (0, res) for j in (0, res) for k in (0, res)], float)
    centre = np.full(3, res / 2)
    half = max(np.abs((corners - centre) @ r).max(), np.abs((corners - centre) @ u).max())
    half *= 1.04
    coords = (np.arange(size) + 0.5) / size * 2 * half - half
    a, b = np.meshgrid(coords, -coords)  # image rows go down
    far = 2.0 * res
    origin = centre + a.reshape(-1, 1) * r + b.reshape(-1, 1) * u - far * d
    idx, faces, ts = _traverse(origin, d, res)
    span = np.sqrt(3) * res / 2
    depth = np.clip((ts - far + span) / (2 * span), 0, 1).astype(np.float32)
    tf = -origin[:, 2] / d[2]
    fp = origin + tf[:, None] * d
    fx, fy = np.floor(fp[:, 0]).astype(np.int64), np.floor(fp[:, 1]).astype(np.int64)
    on = (fx >= 0) & (fx < res) & (fy >= 0) & (fy < res)
    floor = np.where(on, fx * res + fy, -1)
    return _Rays(idx=idx, face=faces, depth=depth, floor=floor, size=size)


@functools.cache
def _face_colours() -> np.ndarray:
    """``(3, 3)`` colour of a face entered across axis x, y, z (normals +x, -y, +z)."""
    d, _, _ = _basis()
    light = _LIGHT / np.linalg.norm(_LIGHT)
    out = np.empty((3, 3))
    for axis in range(3):
        n = np.zeros(3)
        n[axis] = -np.sign(d[axis])
        base = _FRONT if (axis == 1 and n[1] < 0) else _BASE
        out[axis] = base * (0.45 + 0.55 * max(0.0, float(n @ light)))
    return out


def _as_grids(grids: object, threshold: float) -> np.ndarray:
    a = np.asarray(grids.detach().cpu() if hasattr(grids, "detach") else grids)  # type: ignore[attr-defined]
    if a.ndim < 3 or len(set(a.shape[-3:])) != 1:
        raise ValueError(f"expected grids (..., D, D, D), got shape {a.shape}")
    return a.reshape(-1, *a.shape[-3:]) > threshold


def render_batch(grids: object, size: int = 96, threshold: float = 0.5) -> np.ndarray:
    """Render grids ``(..., D, D, D)`` (numpy or torch) to ``(B, size, size, 3)`` uint8.

    A voxel is drawn when its value is above ``threshold``.
    """
    occ = _as_grids(grids, threshold)
    res = occ.shape[-1]
    rays = _rays(res, size)
    colours = _face_colours()
    out = np.empty((occ.shape[0], size * size, 3), np.float32)
    on_floor = rays.floor >= 0
    for b, grid in enumerate(occ):
        flat = np.append(grid.reshape(-1), False)
        hits = flat[rays.idx]  # (P, S)
        first = hits.argmax(1)
        hit = hits[np.arange(len(first)), first]
        face = rays.face[np.arange(len(first)), first]
        depth = rays.depth[np.arange(len(first)), first]
        shadow = np.append(grid.any(2).reshape(-1), False)[rays.floor]
        img = np.where(on_floor[:, None], np.where(shadow[:, None], _SHADOW, _FLOOR), _BACKGROUND)
        shade = colours[face] * (1.0 - 0.45 * depth)[:, None]
        out[b] = np.where(hit[:, None], shade, img)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8).reshape(-1, size, size, 3)


def render(grid: object, size: int = 96, threshold: float = 0.5) -> np.ndarray:
    """Render one grid ``(D, D, D)`` to a ``(size, size, 3)`` uint8 image."""
    return render_batch(grid, size, threshold)[0]


def _draw_labels(sheet: np.ndarray, labels: Sequence[str], ncols: int, tile: int) -> np.ndarray:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    h, w = sheet.shape[:2]
    dpi = 100
    fig = Figure(figsize=(w / dpi, h / dpi), dpi=dpi)
    canvas = FigureCanvasAgg(fig)
    fig.figimage(sheet, 0, 0, origin="upper")
    for k, text in enumerate(labels):
        row, col = divmod(k, ncols)
        fig.text((col * tile + 3) / w, 1 - (row * tile + 2) / h, str(text), fontsize=7, va="top")
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def render_sheet(
    grids: object,
    ncols: int = 8,
    labels: Sequence[str] | None = None,
    size: int = 96,
    pad: int = 2,
) -> np.ndarray:
    """A contact sheet: the grids rendered in rows of ``ncols``, optional labels.

    Returns a ``(rows * (size + pad), ncols * (size + pad), 3)`` uint8 image.
    """
    tiles = render_batch(grids, size)
    n = tiles.shape[0]
    if labels is not None and len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} grids")
    rows = -(-n // ncols)
    tile = size + pad
    sheet = np.full((rows * tile, ncols * tile, 3), 255, np.uint8)
    for k in range(n):
        r, c = divmod(k, ncols)
        sheet[r * tile : r * tile + size, c * tile : c * tile + size] = tiles[k]
    if labels is not None:
        sheet = _draw_labels(sheet, labels, ncols, tile)
    return sheet


def stack_images(images: Sequence[np.ndarray], gap: int = 8) -> np.ndarray:
    """Stack RGB images vertically on white, left-aligned."""
    w = max(im.shape[1] for im in images)
    parts = []
    for im in images:
        row = np.full((im.shape[0] + gap, w, 3), 255, np.uint8)
        row[: im.shape[0], : im.shape[1]] = im
        parts.append(row)
    return np.concatenate(parts, axis=0)


def save_png(image: np.ndarray, path: str | Path) -> Path:
    """Write an ``(H, W, 3)`` uint8 image as PNG (creating parent folders)."""
    from matplotlib.image import imsave

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    imsave(out, np.ascontiguousarray(image), format="png")
    return out
