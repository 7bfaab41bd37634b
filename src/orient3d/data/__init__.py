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
views as torch Datasets), :mod:`.cache`, :mod:`.load` (the sets a config names),
:mod:`.voxelset`.
"""

from orient3d.data.arrays import trivial_fraction
from orient3d.data.load import load_data
from orient3d.data.procedural import CLASSES, generate
from orient3d.data.sources import load_dataset, split_validation, train_test
from orient3d.data.views import make_view
from orient3d.data.voxelset import VoxelSet
from orient3d.errors import DataError

__all__ = [
    "CLASSES",
    "DataError",
    "VoxelSet",
    "generate",
    "load_data",
    "load_dataset",
    "make_view",
    "split_validation",
    "train_test",
    "trivial_fraction",
]
