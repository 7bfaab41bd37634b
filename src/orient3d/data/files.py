"""Real data files: voxel arrays, ``.binvox`` and meshes, one file or a folder.

Formats (by extension):

- ``.npy``: one grid ``(D, D, D)`` or a batch ``(N, D, D, D)``;
- ``.npz``: key ``voxels`` (required), optional ``labels`` (int, ``(N,)``) and
  ``class_names``;
- ``.binvox``: dense binvox (see :mod:`orient3d.data.binvox`);
- ``.off``, ``.obj``, ``.stl``: meshes, voxelized through trimesh as **solid**
  (surface voxels, then enclosed holes filled), centred in the grid and scaled so
  the largest side spans ``res - 2 * margin`` voxels, keeping the aspect ratio.

Voxel values must be exactly 0 or 1 and no grid may be empty. Arrays whose side
differs from the requested ``res`` are resampled (:func:`arrays.resample`: down
by any-occupancy max-pooling, up by nearest neighbour); grids smaller than 4³
are not scaled up (a 1³ grid would become a solid cube). Text meshes are read
with any bytes in comments, and a vertex with NaN or inf coordinates is an error.

**voxnet frame.** The shared ``voxnet32_*`` files store axes ``(y, x, z)``
relative to ModelNet's ``.off`` frame. ``swap_xy=None`` (the default) swaps
axes x and y back for every array file whose name starts with ``voxnet32_``,
so that everything loads in the ``.off`` frame (z up); ``True``/``False``
forces the swap on or off.

A folder is laid out like ModelNet, ``root/<class>/<split>/<file>``. Every bad
file is collected and reported in one :class:`DataError`.
"""

from __future__ import annotations

import io
import logging
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from orient3d.data.arrays import check_grids, resample
from orient3d.data.binvox import read_binvox
from orient3d.errors import DataError

__all__ = [
    "ARRAY_EXTENSIONS",
    "EXTENSIONS",
    "MESH_EXTENSIONS",
    "Loaded",
    "find_files",
    "load_file",
    "load_files",
    "read_mesh",
    "voxelize_mesh",
    "voxelize_trimesh",
]

log = logging.getLogger(__name__)

MESH_EXTENSIONS = (".off", ".obj", ".stl")
ARRAY_EXTENSIONS = (".npy", ".npz", ".binvox")
EXTENSIONS = ARRAY_EXTENSIONS + MESH_EXTENSIONS
VOXNET_PREFIX = "voxnet32_"
MIN_UPSAMPLE_SIDE = 4  # smaller grids are refused rather than scaled up into blocks


@dataclass(frozen=True)
class Loaded:
    """The objects of one or more files, before they become a VoxelSet."""

    voxels: np.ndarray  # (N, res, res, res) uint8
    labels: np.ndarray  # (N,) int64
    class_names: tuple[str, ...]
    ids: tuple[str, ...]


DEFAULT_MAX_SIDE = 256  # data.max_res: the largest grid side a file may hold


def _check_side(path: Path, shape: tuple[int, ...], max_side: int) -> None:
    if shape and max(shape[-3:]) > max_side:
        raise DataError(
            f"{path}: grids of shape {shape} are larger than data.max_res={max_side}; "
            "raise data.max_res to read them"
        )


_MAGIC = {".npy": b"\x93NUMPY", ".npz": b"PK"}  # a NumPy array; a zip archive


def _check_magic(path: Path) -> None:
    """A clear error for a file that is not what its extension says (e.g. a renamed PNG),
    before NumPy reads it (and suggests unpickling it)."""
    want = _MAGIC[path.suffix.lower()]
    with path.open("rb") as f:
        head = f.read(len(want))
    if head != want:
        kind = "NumPy array" if path.suffix.lower() == ".npy" else "NumPy zip archive"
        raise DataError(f"{path}: not a {kind} ({path.suffix} files start with {want!r})")


def _load_npy(path: Path, max_side: int) -> np.ndarray:
    _check_magic(path)
    header = np.load(path, allow_pickle=False, mmap_mode="r")  # reads the header only
    _check_side(path, header.shape, max_side)
    return np.load(path, allow_pickle=False)


def _npz_shape(z: Any, key: str) -> tuple[int, ...]:
    """The shape of ``key`` in an open ``.npz`` from its header, without loading it."""
    with z.zip.open(f"{key}.npy") as f:
        major, _ = np.lib.format.read_magic(f)
        read = (
            np.lib.format.read_array_header_1_0
            if major == 1
            else np.lib.format.read_array_header_2_0
        )
        shape, _, _ = read(f)
    return tuple(shape)


def _load_npz(
    path: Path, max_side: int
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    _check_magic(path)
    with np.load(path, allow_pickle=False) as z:
        if "voxels" not in z.files:
            raise DataError(f"{path}: .npz has no 'voxels' array (keys: {sorted(z.files)})")
        _check_side(path, _npz_shape(z, "voxels"), max_side)
        vox = z["voxels"]
        labels = z["labels"] if "labels" in z.files else None
        names = tuple(str(c) for c in z["class_names"]) if "class_names" in z.files else None
    return vox, labels, names


def _check_labels(
    path: Path, labels: np.ndarray | None, names: tuple[str, ...] | None, n: int
) -> tuple[np.ndarray, tuple[str, ...]]:
    if labels is None:
        return np.zeros(n, np.int64), names or (path.stem,)
    lab = np.asarray(labels)
    if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer):
        raise DataError(f"{path}: 'labels' must be {n} integers, got {lab.dtype} {lab.shape}")
    if n and lab.min() < 0:
        raise DataError(f"{path}: negative labels")
    if names is None:
        names = tuple(f"class_{k}" for k in range(int(lab.max()) + 1))
    if n and lab.max() >= len(names):
        raise DataError(f"{path}: label {int(lab.max())} has no entry in class_names")
    return lab.astype(np.int64), names


def _place_centred(m: np.ndarray, res: int) -> np.ndarray:
    out = np.zeros((res, res, res), np.uint8)
    src, dst = [], []
    for s in m.shape:
        n = min(s, res)
        a = (s - n) // 2
        b = (res - n) // 2
        src.append(slice(a, a + n))
        dst.append(slice(b, b + n))
    out[tuple(dst)] = m[tuple(src)]
    return out


def _mesh_source(path: Path) -> io.BytesIO:
    """The file's bytes; text formats decoded leniently (a Latin-1 byte in a comment is
    fine), so trimesh need not guess the encoding."""
    data = path.read_bytes()
    if path.suffix.lower() in (".off", ".obj"):
        data = data.decode("utf-8", errors="replace").encode("utf-8")
    return io.BytesIO(data)


def read_mesh(path: str | Path) -> Any:
    """A mesh file as one unprocessed ``trimesh.Trimesh`` (vertices and faces as stored);
    a DataError names the file when it cannot be read, has no triangles or has a vertex
    with NaN or infinite coordinates."""
    import trimesh

    name = str(path)
    try:
        mesh = trimesh.load(
            _mesh_source(Path(path)),
            file_type=Path(path).suffix.lower()[1:],
            force="mesh",
            process=False,
        )
    except Exception as err:  # trimesh raises many kinds on bad input
        raise DataError(f"{name}: trimesh cannot read this mesh ({err})") from err
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise DataError(f"{name}: no triangles in this mesh (empty or unreadable)")
    bad = int((~np.isfinite(mesh.vertices).all(axis=1)).sum())
    if bad:  # (processing would drop them silently, and the faces using them)
        raise DataError(f"{name}: {bad} vertex/vertices with NaN or infinite coordinates")
    return mesh


def voxelize_trimesh(mesh: Any, res: int, margin: int = 1, name: str = "mesh") -> np.ndarray:
    """A ``trimesh.Trimesh`` as one solid ``(res, res, res)`` grid, centred, aspect kept.

    Grid axes 0, 1, 2 are the mesh's x, y, z. The centre of the mesh's bounding box
    (``mesh.bounds``) lands at the grid centre, up to the half voxel by which an odd
    voxel count does not centre exactly: the rounding to whole voxels. ``mesh`` is not
    changed."""
    mesh = mesh.copy()
    mesh.process()
    extent = float(np.max(mesh.extents)) if len(mesh.faces) else 0.0
    if extent <= 0:
        raise DataError(f"{name}: mesh has degenerate vertices (zero extent)")
    n = res - 2 * margin
    # min corner at the origin: trimesh's lattice has a voxel centre at every
    # integer, so a side scaled to n - 1 covers exactly n voxels
    mesh.apply_translation(-mesh.bounds[0])
    mesh.apply_scale((n - 1) / extent)
    try:
        grid = mesh.voxelized(pitch=1.0).fill().matrix
    except Exception as err:
        raise DataError(f"{name}: voxelization failed ({err})") from err
    return _place_centred(np.asarray(grid, dtype=np.uint8), res)


def voxelize_mesh(path: str | Path, res: int, margin: int = 1) -> np.ndarray:
    """A mesh file as one solid ``(res, res, res)`` grid, centred, aspect kept."""
    return voxelize_trimesh(read_mesh(path), res, margin, str(path))


def _raw(
    path: Path, res: int, max_side: int
) -> tuple[np.ndarray, np.ndarray | None, tuple[str, ...] | None]:
    ext = path.suffix.lower()
    if ext == ".npy":
        return _load_npy(path, max_side), None, None
    if ext == ".npz":
        return _load_npz(path, max_side)
    if ext == ".binvox":
        return read_binvox(path, max_side), None, None
    if ext in MESH_EXTENSIONS:
        return voxelize_mesh(path, res), None, None
    raise DataError(f"{path}: unknown extension {ext!r}; known: {', '.join(EXTENSIONS)}")


def load_file(
    path: str | Path,
    res: int,
    swap_xy: bool | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Loaded:
    """Load every grid of one file at ``res³`` (see the module docstring).

    A file whose grids are larger than ``max_side`` (``data.max_res``) is refused
    before its grids are read."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file")
    try:
        raw, labels, names = _raw(p, res, max_side)
    except DataError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, KeyError, zlib.error) as err:
        raise DataError(f"{p}: unreadable or corrupt {p.suffix} file ({err})") from err
    vox = check_grids(raw, str(p))
    swap = p.name.startswith(VOXNET_PREFIX) if swap_xy is None else swap_xy
    if swap and p.suffix.lower() in ARRAY_EXTENSIONS:
        vox = np.ascontiguousarray(vox.swapaxes(1, 2))
    if vox.shape[1] < min(res, MIN_UPSAMPLE_SIDE):
        raise DataError(
            f"{p}: grids are {vox.shape[1]}³, too coarse to scale up to {res}³ "
            f"(each voxel would become a solid block); need at least {MIN_UPSAMPLE_SIDE}³"
        )
    vox = resample(vox, res)
    lab, class_names = _check_labels(p, labels, names, len(vox))
    ids = (p.stem,) if len(vox) == 1 else tuple(f"{p.stem}#{k}" for k in range(len(vox)))
    return Loaded(vox, lab, class_names, ids)


def find_files(root: Path, split: str | None) -> list[tuple[str, Path]]:
    """``(class, file)`` pairs under ``root/<class>/<split>/`` (all splits if None)."""
    out: list[tuple[str, Path]] = []
    for cls_dir in sorted(d for d in root.iterdir() if d.is_dir()):
        base = cls_dir / split if split is not None else cls_dir
        if not base.is_dir():
            continue
        for f in sorted(base.rglob("*")):
            if not f.is_file():
                continue
            if f.suffix.lower() in EXTENSIONS:
                out.append((cls_dir.name, f))
            else:
                log.warning("skipping %s: unknown extension", f)
    return out


def load_files(
    items: list[tuple[str, Path]],
    res: int,
    swap_xy: bool | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
) -> Loaded:
    """Load ``(class, file)`` pairs; labels follow the sorted class names.

    Every failing file is collected; one DataError lists them all.
    """
    if not items:
        raise DataError("no data files found")
    class_names = tuple(sorted({c for c, _ in items}))
    parts: list[Loaded] = []
    labels: list[np.ndarray] = []
    errors: list[str] = []
    for k, (cls, f) in enumerate(items):
        if k and k % 200 == 0:
            log.info("loaded %d of %d files", k, len(items))
        try:
            part = load_file(f, res, swap_xy, max_side)
        except DataError as err:
            errors.append(str(err))
            continue
        parts.append(part)
        labels.append(np.full(len(part.voxels), class_names.index(cls), np.int64))
    if errors:
        raise DataError(f"{len(errors)} bad file(s):\n  " + "\n  ".join(errors))
    ids = [
        f"{c}/{i}" if f.parent.name == c else f"{c}/{f.parent.name}/{i}"
        for (c, f), part in zip(items, parts)
        for i in part.ids
    ]
    return Loaded(
        np.concatenate([p.voxels for p in parts]), np.concatenate(labels), class_names, tuple(ids)
    )
