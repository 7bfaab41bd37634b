"""One entry point for every data source: :func:`load_dataset` and :func:`train_test`.

``source`` is ``"procedural"`` (the built-in shapes) or a path:

- ``"procedural"``: the train and test splits are generated from different
  seeds derived from ``seed`` (``default_rng([seed, 0])`` for train,
  ``default_rng([seed, 1])`` for test), so they never share a draw.
- a folder laid out as ``root/<class>/<split>/<file>`` with both a ``train``
  and a ``test`` folder somewhere: the requested split's files.
- a single file (``.npz``, ``.npy``, ``.binvox``, a mesh), or a folder with only
  one split or none (``root/<class>/<file>``): all its objects, split by a
  seeded permutation; ``test_fraction`` of them (at least one) form ``test``.

:func:`split_validation` carves a seeded validation split, stratified by class,
out of a training split; model selection reads it, never the test split.

``n`` keeps a seeded random subset of ``n`` objects (in their stored order) when
the split holds more; it is a warning, not an error, when it holds fewer.
Results are cached on disk (:mod:`orient3d.data.cache`) keyed by every
parameter and, for files, by their paths, sizes and modification times.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orient3d.data.arrays import make_voxelset
from orient3d.data.cache import cached
from orient3d.data.files import (
    DEFAULT_MAX_SIDE,
    EXTENSIONS,
    Loaded,
    find_files,
    load_file,
    load_files,
)
from orient3d.data.procedural import code_version, generate
from orient3d.data.voxelset import VoxelSet
from orient3d.errors import DataError

__all__ = [
    "DEFAULT_N",
    "SPLITS",
    "VAL_FRACTION",
    "load_all",
    "load_dataset",
    "randomize_frames",
    "split_validation",
    "train_test",
    "validation_size",
]

log = logging.getLogger(__name__)

SPLITS = {"train": 0, "test": 1}
DEFAULT_N = {"train": 2000, "test": 500}  # procedural objects when n is None
VAL_FRACTION = 0.1  # validation objects carved from the training objects by default


def _check_split(split: str) -> int:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    return SPLITS[split]


def _fingerprint(files: list[Path]) -> list[tuple[str, int, int]]:
    return [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in files]


def _has_splits(root: Path) -> bool:
    return any((d / "train").is_dir() for d in root.iterdir() if d.is_dir()) and any(
        (d / "test").is_dir() for d in root.iterdir() if d.is_dir()
    )


def _seeded_split(
    n_all: int, split: str, seed: int, test_fraction: float, source: str = "data"
) -> np.ndarray:
    """Indices of ``split`` in a seeded train/test split of ``n_all`` objects."""
    if n_all < 2:
        raise DataError(
            f"{source}: holds {n_all} object(s); a source without train/test folders is split "
            "into both, which needs at least 2"
        )
    perm = np.random.default_rng([seed, 2]).permutation(n_all)
    n_test = min(n_all - 1, max(1, round(n_all * test_fraction)))
    part = perm[:n_test] if split == "test" else perm[n_test:]
    return np.sort(part)


def _to_voxelset(loaded: Loaded, source: str) -> VoxelSet:
    return make_voxelset(loaded.voxels, loaded.labels, loaded.class_names, loaded.ids, source)


def _load_path(
    path: Path,
    res: int,
    split: str,
    seed: int,
    swap_xy: bool | None,
    test_fraction: float,
    max_side: int,
) -> tuple[dict[str, Any], Any]:
    """Cache parameters and a builder for a path source."""
    if path.is_dir():
        given = _has_splits(path)
        items = find_files(path, split if given else None)
        if not items:
            raise DataError(
                f"{path}: no data files ({', '.join(EXTENSIONS)}) found under "
                f"{path}/<class>/{split if given else '[<split>/]'}"
            )
        files = [f for _, f in items]

        def load() -> Loaded:
            return load_files(items, res, swap_xy, max_side)

    elif path.is_file():
        given, files = False, [path]

        def load() -> Loaded:
            return load_file(path, res, swap_xy, max_side)

    else:
        raise DataError(f"{path}: no such file or folder")
    params = {
        "kind": "files",
        "path": str(path.resolve()),
        "files": _fingerprint(files),
        "res": res,
        "split": split,
        "given_split": given,
        "seed": None if given else seed,
        "test_fraction": None if given else test_fraction,
        "swap_xy": swap_xy,
    }

    def build() -> VoxelSet:
        vs = _to_voxelset(load(), str(path))
        if given:
            return vs
        part = _seeded_split(len(vs), split, seed, test_fraction, str(path))
        return vs.subset(part.tolist())

    return params, build


def _only_classes(vs: VoxelSet, classes: list[str] | None) -> VoxelSet:
    """The objects of the named classes (labels keep indexing ``vs.class_names``)."""
    if not classes:
        return vs
    unknown = [c for c in classes if c not in vs.class_names]
    if unknown:
        raise DataError(f"{vs.source}: unknown class(es) {unknown}; known: {list(vs.class_names)}")
    wanted = [vs.class_names.index(c) for c in classes]
    keep = np.flatnonzero(np.isin(vs.labels.numpy(), wanted))
    if keep.size == 0:
        raise DataError(f"{vs.source}: no objects of class(es) {classes} in this split")
    return vs.subset(keep.tolist())


def _take(vs: VoxelSet, n: int | None, seed: int) -> VoxelSet:
    if n is None or n == len(vs):
        return vs
    if n < 1:
        raise DataError(f"n must be >= 1, got {n}")
    if n > len(vs):
        log.warning("%s: asked for %d objects, the split has %d; using all", vs.source, n, len(vs))
        return vs
    keep = np.sort(np.random.default_rng([seed, 3]).choice(len(vs), n, replace=False))
    return vs.subset(keep.tolist())


def load_dataset(
    source: str | Path,
    res: int,
    split: str = "train",
    n: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    *,
    use_cache: bool = True,
    swap_xy: bool | None = None,
    test_fraction: float = 0.2,
    classes: list[str] | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
) -> VoxelSet:
    """One split of a data source at ``res³`` (see the module docstring).

    Args:
        source: ``"procedural"`` or a path to a file or a folder.
        res: grid side D.
        split: ``"train"`` or ``"test"``.
        n: number of objects (procedural: how many to generate, default
            :data:`DEFAULT_N`; files: a seeded subset, default all).
        seed: decides every random draw.
        cache_dir: cache folder (default ``$ORIENT3D_CACHE`` or ``~/.cache/orient3d``).
        use_cache: read and write the cache.
        swap_xy: for array files, swap axes x and y (None: only ``voxnet32_*`` files).
        test_fraction: share of objects put in ``test`` when a source has no split.
        classes: class names to keep (default all); for procedural data, the
            classes generated, in label order; for files, a filter (labels keep
            indexing the source's ``class_names``).
        max_side: refuse files whose grids are larger (``data.max_res``).
    """
    code = _check_split(split)
    if str(source) == "procedural":
        count = DEFAULT_N[split] if n is None else n
        params: dict[str, Any] = {
            "kind": "procedural",
            "n": count,
            "res": res,
            "seed": seed,
            "split": split,
            "classes": classes,
            "code": code_version(),
        }

        def build() -> VoxelSet:
            return generate(count, res, np.random.default_rng([seed, code]), classes)

        if not use_cache:
            return build()
        return cached(params, build, cache_dir)
    params, build_path = _load_path(
        Path(source), res, split, seed, swap_xy, test_fraction, max_side
    )
    vs = cached(params, build_path, cache_dir) if use_cache else build_path()
    return _take(_only_classes(vs, classes), n, seed)


def train_test(
    source: str | Path,
    res: int,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    cache_dir: str | Path | None = None,
    **kwargs: Any,
) -> tuple[VoxelSet, VoxelSet]:
    """The train and test splits of a source; keyword arguments as :func:`load_dataset`.

    Both splits are read before any error is raised, so one DataError names the
    bad files of both."""
    parts: dict[str, VoxelSet] = {}
    errors: list[str] = []
    for split, n in (("train", n_train), ("test", n_test)):
        try:
            parts[split] = load_dataset(source, res, split, n, seed, cache_dir, **kwargs)
        except DataError as err:
            if str(err) not in errors:  # (a missing source fails both splits alike)
                errors.append(str(err))
    if errors:
        raise DataError("\n".join(errors))
    return parts["train"], parts["test"]


def validation_size(n_train: int, n_val: int = -1) -> int:
    """How many of ``n_train`` objects to hold out: ``n_val``, or 10% (at least 1) if -1."""
    if n_val < 0:
        return min(n_train - 1, max(1, round(n_train * VAL_FRACTION)))
    return n_val


def split_validation(vs: VoxelSet, n_val: int = -1, seed: int = 0) -> tuple[VoxelSet, VoxelSet]:
    """``(train, val)``: ``n_val`` objects of ``vs`` held out for model selection.

    ``n_val = -1`` holds out 10% (at least one object). The draw is seeded and
    stratified by class: each class's objects are put in a seeded random order at
    evenly spaced positions ``(i + u) / n_class`` (``u`` uniform per class), and the
    ``n_val`` objects at the smallest positions are held out, so every class gives
    its share up to rounding. Both parts keep the stored order.
    """
    k = validation_size(len(vs), n_val)
    if k == 0:
        return vs, vs.subset([])
    if k >= len(vs):
        raise DataError(
            f"{vs.source}: cannot hold out {k} validation object(s) from {len(vs)} "
            "training object(s); lower data.n_val or raise data.n_train"
        )
    rng = np.random.default_rng([seed, 4])
    labels = vs.labels.numpy()
    position = np.empty(len(vs))
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        order = rng.permutation(members.size)
        position[members[order]] = (np.arange(members.size) + rng.random()) / members.size
    held = np.zeros(len(vs), dtype=bool)
    held[np.argsort(position, kind="stable")[:k]] = True
    return vs.subset(np.flatnonzero(~held).tolist()), vs.subset(np.flatnonzero(held).tolist())


def randomize_frames(vs: VoxelSet, seed: int = 0) -> VoxelSet:
    """``vs`` with each object turned once by a fixed seeded random element of O.

    A control for methods that read the stored frame: afterwards the stored poses
    carry no alignment across objects. Stabilizers are recomputed for the new grids.
    """
    from orient3d.geometry import groups

    o = groups.cube_group()
    gen = torch.Generator().manual_seed(int(np.random.default_rng([seed, 5]).integers(2**62)))
    g = torch.randint(len(o), (len(vs),), generator=gen)
    voxels = groups.rotate(vs.voxels, o, g).contiguous()
    return VoxelSet(
        voxels=voxels,
        labels=vs.labels,
        class_names=vs.class_names,
        ids=vs.ids,
        stabilizers=groups.stabilizer_mask(voxels, o),
        source=f"{vs.source} (random frames)",
    )


def load_all(
    source: str | Path,
    res: int,
    swap_xy: bool | None = None,
    classes: list[str] | None = None,
    max_side: int = DEFAULT_MAX_SIDE,
) -> VoxelSet:
    """Every object of a file or folder at ``res³``, whatever its splits (no cache).

    What a user means by naming a file: a single file is read whole (no seeded
    split); a folder ``root/<class>/[<split>/]<file>`` gives all of its files.
    """
    path = Path(source)
    if path.is_file():
        vs = _to_voxelset(load_file(path, res, swap_xy, max_side), str(path))
    elif path.is_dir():
        items = find_files(path, None)
        if not items:
            raise DataError(f"{path}: no data files ({', '.join(EXTENSIONS)}) found")
        vs = _to_voxelset(load_files(items, res, swap_xy, max_side), str(path))
    else:
        raise DataError(f"{path}: no such file or folder")
    return _only_classes(vs, classes)
