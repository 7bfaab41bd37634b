"""Orientation views over a :class:`VoxelSet`, as torch Datasets.

Every item is a dict::

    {"voxels": (D, D, D) uint8 tensor,  # groups.rotate(stored, O, rotation)
     "index": int,                      # the object's position in the VoxelSet
     "id": str, "label": int,
     "rotation": int}                   # index into groups.cube_group()

Views:

- ``single``: each object as stored (rotation 0), ``len = N``;
- ``all``: the 24 rotated copies of every object, item ``k`` is object
  ``k // 24`` rotated by element ``k % 24``, ``len = 24 N``;
- ``random``: each access draws a fresh rotation from the generator given at
  construction (seeded, so a run is reproducible), ``len = N``. Inside a
  DataLoader worker the view first re-seeds its generator from one draw of the
  original generator and torch's per-worker seed (different for every worker and
  every epoch, and reproducible when torch is seeded), so workers do not repeat
  each other's rotations;
- ``subset``: like ``all`` over a given list of elements, ``len = N * len(elements)``.

Build one with :func:`make_view` (a dict dispatch) or the classes directly.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, get_worker_info

from orient3d.data.voxelset import VoxelSet
from orient3d.errors import DataError
from orient3d.geometry import groups

__all__ = ["VIEWS", "AllView", "RandomView", "SingleView", "SubsetView", "make_view"]

Item = dict[str, Any]


class _View(Dataset):
    """Base: maps an item index to (object index, rotation index)."""

    def __init__(self, data: VoxelSet) -> None:
        self.data = data
        self.group = groups.cube_group()

    def locate(self, k: int) -> tuple[int, int]:
        raise NotImplementedError

    def __len__(self) -> int:
        raise NotImplementedError

    def __getitem__(self, k: int) -> Item:
        if not -len(self) <= k < len(self):
            raise IndexError(f"index {k} out of range for a view of {len(self)} items")
        i, g = self.locate(k % len(self))
        return {
            "voxels": groups.rotate(self.data.voxels[i], self.group, g),
            "index": i,
            "id": self.data.ids[i],
            "label": int(self.data.labels[i]),
            "rotation": g,
        }


class SingleView(_View):
    """Each object as stored."""

    def __len__(self) -> int:
        return len(self.data)

    def locate(self, k: int) -> tuple[int, int]:
        return k, 0


class SubsetView(_View):
    """Each object rotated by each of ``elements``, object-major order."""

    def __init__(self, data: VoxelSet, elements: Sequence[int]) -> None:
        super().__init__(data)
        self.elements = [int(e) for e in elements]
        bad = [e for e in self.elements if not 0 <= e < len(self.group)]
        if not self.elements or bad:
            raise DataError(f"subset view needs elements in [0, {len(self.group)}), got {elements}")

    def __len__(self) -> int:
        return len(self.data) * len(self.elements)

    def locate(self, k: int) -> tuple[int, int]:
        i, j = divmod(k, len(self.elements))
        return i, self.elements[j]


class AllView(SubsetView):
    """All 24 rotations of every object: item ``k`` is ``(k // 24, k % 24)``."""

    def __init__(self, data: VoxelSet) -> None:
        super().__init__(data, range(len(groups.cube_group())))


class RandomView(_View):
    """Each access rotates its object by a fresh random element drawn from ``rng``."""

    def __init__(self, data: VoxelSet, rng: np.random.Generator) -> None:
        super().__init__(data)
        self.rng = rng
        self._worker_seed: int | None = None

    def __len__(self) -> int:
        return len(self.data)

    def _generator(self) -> np.random.Generator:
        info = get_worker_info()
        if info is not None and self._worker_seed != info.seed:
            entropy = int(self.rng.integers(2**63))
            self.rng = np.random.default_rng([entropy, info.seed])
            self._worker_seed = info.seed
        return self.rng

    def locate(self, k: int) -> tuple[int, int]:
        return k, int(self._generator().integers(len(self.group)))


def _random(data: VoxelSet, rng: np.random.Generator | None, elements: Any) -> _View:
    if rng is None:
        raise DataError("the random view needs rng (a seeded np.random.Generator)")
    return RandomView(data, rng)


def _subset(data: VoxelSet, rng: Any, elements: Sequence[int] | None) -> _View:
    if elements is None:
        raise DataError("the subset view needs elements (a list of group indices)")
    return SubsetView(data, elements)


VIEWS: dict[str, Callable[..., _View]] = {
    "single": lambda data, rng, elements: SingleView(data),
    "all": lambda data, rng, elements: AllView(data),
    "random": _random,
    "subset": _subset,
}


def make_view(
    data: VoxelSet,
    kind: str,
    rng: np.random.Generator | None = None,
    elements: Sequence[int] | None = None,
) -> Dataset:
    """The view ``kind`` (``single``, ``all``, ``random``, ``subset``) of ``data``."""
    if kind not in VIEWS:
        raise DataError(f"unknown view {kind!r}; expected one of {list(VIEWS)}")
    return VIEWS[kind](data, rng, elements)


def collate(items: list[Item]) -> Item:
    """Stack items into a batch: tensors for voxels/index/label/rotation, a list of ids."""
    return {
        "voxels": torch.stack([it["voxels"] for it in items]),
        "index": torch.tensor([it["index"] for it in items]),
        "id": [it["id"] for it in items],
        "label": torch.tensor([it["label"] for it in items]),
        "rotation": torch.tensor([it["rotation"] for it in items]),
    }
