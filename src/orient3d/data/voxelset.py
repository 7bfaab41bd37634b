"""The common currency of the data layer: a whole split held as tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from orient3d.errors import DataError

__all__ = ["VoxelSet"]


@dataclass(frozen=True)
class VoxelSet:
    """One split of a dataset.

    Attributes:
        voxels: ``(N, D, D, D)`` uint8 occupancy in {0, 1}, axes x, y, z (z up).
        labels: ``(N,)`` int64 class index into ``class_names``.
        class_names: the class names.
        ids: ``N`` object identifiers (file stem or generated id), unique.
        stabilizers: ``(N, 24)`` bool; ``stabilizers[i, g]`` is True when element
            ``g`` of ``groups.cube_group()`` maps object ``i`` onto itself.
        source: where it came from (``"procedural"`` or a path), for reports.
    """

    voxels: Tensor
    labels: Tensor
    class_names: tuple[str, ...]
    ids: tuple[str, ...]
    stabilizers: Tensor
    source: str = "procedural"

    def __post_init__(self) -> None:
        n = self.voxels.shape[0]
        if self.voxels.dim() != 4 or len({*self.voxels.shape[1:]}) != 1:
            raise DataError(
                f"{self.source}: voxels must be (N, D, D, D), got {tuple(self.voxels.shape)}"
            )
        if self.labels.shape != (n,) or len(self.ids) != n or self.stabilizers.shape[0] != n:
            raise DataError(
                f"{self.source}: voxels, labels, ids and stabilizers disagree in length"
            )

    def __len__(self) -> int:
        return int(self.voxels.shape[0])

    @property
    def res(self) -> int:
        return int(self.voxels.shape[-1])

    def subset(self, index: Tensor | list[int]) -> VoxelSet:
        """The objects at ``index``, in that order."""
        idx = torch.as_tensor(index, dtype=torch.long)
        return VoxelSet(
            voxels=self.voxels[idx],
            labels=self.labels[idx],
            class_names=self.class_names,
            ids=tuple(self.ids[i] for i in idx.tolist()),
            stabilizers=self.stabilizers[idx],
            source=self.source,
        )
