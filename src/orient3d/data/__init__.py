"""Datasets of voxel grids: built-in procedural shapes, real files, orientation views.

The common currency is :class:`VoxelSet`: a whole split held as tensors, so that
training can index and rotate batches without a per-item Python loop.

Entry points (everything cached on disk, see :mod:`orient3d.data.cache`)::

    train, test = train_test("procedural", res=32, n_train=4000, n_test=1000, seed=0)
    test = load_dataset("../shared/data/modelnet10_vox32/voxnet32_test.npz", 32, "test")
    vs = generate(n, res, np.random.default_rng(seed))     # procedural, no cache
    view = make_view(vs, "all")                            # single | all | random | subset

Modules: :mod:`.procedural` and :mod:`.shapes` (built-in shapes), :mod:`.files`
and :mod:`.binvox` (real files), :mod:`.arrays` (checks, resampling,
stabilizers), :mod:`.sources` (sources and splits), :mod:`.views` (orientation
views as torch Datasets), :mod:`.cache`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from orient3d.errors import DataError


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


__all__ = ["DataError", "VoxelSet"]


# Imported last: these modules import VoxelSet from here.
from orient3d.data.arrays import trivial_fraction  # noqa: E402
from orient3d.data.load import load_data  # noqa: E402
from orient3d.data.procedural import CLASSES, generate  # noqa: E402
from orient3d.data.sources import load_dataset, split_validation, train_test  # noqa: E402
from orient3d.data.views import make_view  # noqa: E402

__all__ += [
    "CLASSES",
    "generate",
    "load_data",
    "load_dataset",
    "make_view",
    "split_validation",
    "train_test",
    "trivial_fraction",
]
