"""Shape files for ``orient``: finding them, reading them, writing them turned.

Reading (:func:`read_shape`) gives the grids the model scores, at its resolution and
in its frame (axes x, y, z, z up), and what is needed to write the file back:

- meshes (``.off``, ``.obj``, ``.stl``): read once by trimesh, unprocessed; the grid
  is :func:`orient3d.data.files.voxelize_trimesh` of a copy (grid axes 0, 1, 2 are the
  mesh's x, y, z; the bounding-box centre at the grid centre);
- grids (``.npy``, ``.npz``, ``.binvox``): :func:`orient3d.data.files.load_file`
  (checks, resampling to the model's side, and for ``voxnet32_*`` files the swap of
  axes 0 and 1 into the ``.off`` frame), plus the stored arrays as they are.

With ``fit`` (a model trained so) every scored grid is then framed like a
voxelized mesh (:func:`orient3d.data.arrays.reframe`); the file itself is not.

Writing (:func:`write_shape`) turns each shape by its rotation ``A`` (``out = A·in``,
given in the model's frame) and writes it in its own format:

- meshes: the vertices ``v ↦ A (v - c) + c`` about the centre ``c`` of the mesh's
  axis-aligned bounding box (the point the voxelizer puts at the grid centre), by
  ``trimesh.Trimesh.apply_transform``; never re-voxelized. Exported by trimesh in the
  input's format (binary or ASCII STL as read): vertices and faces are kept, OBJ
  materials, texture coordinates and comments are not;
- grids: each grid turned exactly (a permutation of its voxels, at its own side
  and dtype) by ``Fᵀ A F``, ``F`` the stored-to-model frame (the identity, or the
  x↔y swap of ``voxnet32_*`` files); other ``.npz`` arrays and the binvox header
  (``translate``, ``scale``) are kept. Only the 24 cube rotations turn a grid
  exactly; any other rotation of a grid is refused.

A file whose every rotation is the identity is copied byte for byte. Every file is
written to a temporary file next to its destination and renamed over it, so no
output is ever half written.
"""

from __future__ import annotations

import logging
import shutil
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orient3d.data import files
from orient3d.data.arrays import check_grids, reframe
from orient3d.data.binvox import binvox_bytes, read_binvox, read_binvox_header
from orient3d.errors import DataError
from orient3d.geometry.groups import cube_group, rotate_array
from orient3d.rundir.jsonio import atomic_open

__all__ = ["GRID_EXTENSIONS", "Item", "Shape", "find_inputs", "read_shape", "write_shape"]

log = logging.getLogger(__name__)

GRID_EXTENSIONS = (".npy", ".npz", ".binvox")
SWAP_XY = np.array([[0, 1, 0], [1, 0, 0], [0, 0, 1]], dtype=np.float64)
_EXPORT = {".off": "off", ".obj": "obj", ".stl": "stl"}


@dataclass(frozen=True)
class Item:
    path: Path  # the input file
    rel: Path  # its output path under DIR: relative to its INPUT folder, or its name


def _skip(f: Path, out: Path) -> bool:
    """Files a folder walk leaves out: hidden ones and anything under the output folder."""
    return f.name.startswith(".") or out in f.resolve().parents


def _walk(folder: Path, out: Path) -> list[Item]:
    found = []
    for f in sorted(folder.rglob("*")):
        if not f.is_file() or _skip(f, out):
            continue
        if f.suffix.lower() in files.EXTENSIONS:
            found.append(Item(f, f.relative_to(folder)))
        else:
            log.debug("skipping %s: not a shape file", f)
    return found


def find_inputs(
    inputs: Sequence[str | Path], out: Path
) -> tuple[list[Item], list[tuple[str, str]]]:
    """The shape files under ``inputs`` (files, and folders walked recursively), and
    ``(input, reason)`` for each input that cannot be oriented (missing, not a shape
    file, or an output path that another input, or the input itself, already has)."""
    out = out.resolve()
    items: list[Item] = []
    bad: list[tuple[str, str]] = []
    for given in inputs:
        p = Path(given)
        if p.is_dir():
            if p.resolve() == out:
                bad.append((str(p), "is the output folder; give --out another folder"))
                continue
            items += _walk(p, out)
        elif p.is_file():
            if p.suffix.lower() in files.EXTENSIONS:
                items.append(Item(p, Path(p.name)))
            else:
                known = ", ".join(files.EXTENSIONS)
                bad.append((str(p), f"unknown extension {p.suffix!r}; known: {known}"))
        else:
            bad.append((str(p), "no such file or folder"))
    kept: list[Item] = []
    owner: dict[Path, Item] = {}
    for it in items:
        first = owner.get(it.rel)
        if first is not None and first.path.resolve() == it.path.resolve():
            continue  # the same file named twice
        if first is not None:
            bad.append((str(it.path), f"its output {it.rel} is already that of {first.path}"))
        elif (out / it.rel).resolve() == it.path.resolve():
            bad.append((str(it.path), "its output would replace the input itself"))
        else:
            owner[it.rel] = it
            kept.append(it)
    return kept, bad


@dataclass
class Shape:
    """One input file, read: the grids the model scores and what writing it back needs."""

    path: Path
    kind: str  # "mesh", ".npy", ".npz" or ".binvox"
    grids: np.ndarray  # (N, D, D, D) uint8 at the model's side, model frame
    multi: bool  # several grids in one file: the record gives each an index
    frame: np.ndarray  # (3, 3) F: model-frame grid = F · stored axes (I, or the x↔y swap)
    data: Any  # mesh: trimesh.Trimesh; .npy: ndarray; .npz: {key: ndarray}; .binvox: grid
    centre: np.ndarray | None = None  # mesh: the bounding-box centre it turns about
    header: bytes = b""  # .binvox: the header, kept
    compressed: bool = False  # .npz: written compressed like the input


def _npz(path: Path) -> tuple[dict[str, np.ndarray], bool]:
    with zipfile.ZipFile(path) as z:
        compressed = any(i.compress_type != zipfile.ZIP_STORED for i in z.infolist())
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}, compressed


def read_shape(
    path: Path, res: int, fit: bool = False, max_side: int = files.DEFAULT_MAX_SIDE
) -> Shape:
    """Read one shape file for orienting at ``res³`` (see the module docstring); ``fit``:
    frame the grids the model scores with :func:`orient3d.data.arrays.reframe`.

    A DataError names the file and what is wrong with it."""
    ext = path.suffix.lower()
    frame = reframe if fit else (lambda v, _: v)
    if ext in files.MESH_EXTENSIONS:
        mesh = files.read_mesh(path)
        grid = check_grids(files.voxelize_trimesh(mesh, res, name=str(path)), str(path))
        centre = np.asarray(mesh.bounds, dtype=np.float64).mean(axis=0)
        return Shape(path, "mesh", frame(grid, res), False, np.eye(3), mesh, centre)
    if ext not in GRID_EXTENSIONS:
        raise DataError(f"{path}: unknown extension {ext!r}; known: {', '.join(files.EXTENSIONS)}")
    loaded = files.load_file(path, res, max_side=max_side)
    swap = path.name.startswith(files.VOXNET_PREFIX)
    shape = Shape(path, ext, frame(loaded.voxels, res), False, SWAP_XY if swap else np.eye(3), None)
    if ext == ".npy":
        shape.data = np.load(path, allow_pickle=False)
        shape.multi = shape.data.ndim == 4
    elif ext == ".npz":
        shape.data, shape.compressed = _npz(path)
        shape.multi = shape.data["voxels"].ndim == 4
    else:
        shape.data, shape.header = read_binvox(path, max_side), read_binvox_header(path)
    return shape


def _cube_index(A: np.ndarray, what: str) -> int:
    try:
        return cube_group().index_of(A)
    except (KeyError, ValueError):
        raise DataError(
            f"{what}: a voxel grid turns exactly only by the 24 cube rotations, not by "
            f"{np.round(A, 4).tolist()}; use --rotations cube for voxel files"
        ) from None


def _turn_grids(shape: Shape, stored: np.ndarray) -> np.ndarray:
    """The stored grid(s) turned: ``stored`` is ``(N, 3, 3)`` in the stored frame."""
    vox = shape.data["voxels"] if shape.kind == ".npz" else shape.data
    if not shape.multi:
        return rotate_array(vox, cube_group(), _cube_index(stored[0], str(shape.path)))
    out = np.empty_like(vox)
    for k, A in enumerate(stored):
        out[k] = rotate_array(vox[k], cube_group(), _cube_index(A, f"{shape.path} #{k}"))
    return out


def _ascii_stl(path: Path) -> bool:
    """An ASCII STL starts with ``solid`` and has ``facet`` lines (a binary one's
    80-byte header may start with ``solid`` too)."""
    with path.open("rb") as f:
        head = f.read(512)
    return head.lstrip().lower().startswith(b"solid") and b"facet" in head


def _mesh_bytes(shape: Shape, A: np.ndarray) -> bytes:
    assert shape.centre is not None
    T = np.eye(4)
    T[:3, :3] = A
    T[:3, 3] = shape.centre - A @ shape.centre  # v ↦ A (v - c) + c
    mesh = shape.data.copy()
    mesh.apply_transform(T)
    ftype = _EXPORT[shape.path.suffix.lower()]
    if ftype == "stl" and _ascii_stl(shape.path):
        ftype = "stl_ascii"
    try:
        data = mesh.export(file_type=ftype)
    except Exception as err:  # trimesh's exporters raise many kinds
        raise DataError(f"{shape.path}: trimesh cannot write this mesh ({err})") from err
    return data.encode() if isinstance(data, str) else bytes(data)


def write_shape(shape: Shape, dest: Path, rotations: np.ndarray) -> None:
    """Write ``shape`` turned by ``rotations`` (``(N, 3, 3)``, ``out = A·in`` in the
    model frame, one per grid) to ``dest``, atomically (module docstring)."""
    if np.array_equal(rotations, np.broadcast_to(np.eye(3), rotations.shape)):
        with atomic_open(dest, "wb") as f, shape.path.open("rb") as src:
            shutil.copyfileobj(src, f)
        return
    if shape.kind == "mesh":
        data = _mesh_bytes(shape, rotations[0])
        with atomic_open(dest, "wb") as f:
            f.write(data)
        return
    F = shape.frame
    stored = np.einsum("ji,njk,kl->nil", F, rotations, F)  # Fᵀ A F per grid
    turned = _turn_grids(shape, stored)
    with atomic_open(dest, "wb") as f:
        if shape.kind == ".npy":
            np.save(f, turned, allow_pickle=False)
        elif shape.kind == ".npz":
            save = np.savez_compressed if shape.compressed else np.savez
            save(f, **{**shape.data, "voxels": turned})
        else:
            f.write(binvox_bytes(turned, shape.header))
