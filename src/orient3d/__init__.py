"""orient3d: 3D shape representations with orientation disentangled from shape.

Conventions (written once, tested in ``tests/test_geometry_groups.py``):

Shape letters
    B batch, G group order, D voxel side, Z latent size, K kept candidates.

Axes
    A voxel grid is a tensor ``x[..., D, D, D]`` whose last three axes are the
    spatial axes x, y, z in that order. z (the last axis) points **up**: the floor
    of an upright object is at ``x[..., :, :, 0]``. The front of an object faces
    -y (towards index 0 of the y axis). This matches ModelNet's ``.off`` frame.

Coordinates
    The voxel with indices ``(i, j, k)`` has centred coordinate
    ``c = (i, j, k) - (D - 1) / 2``.

Rotations
    Matrices act on column vectors. Rotating a grid by ``R`` moves the voxel at
    centred coordinate ``c`` to ``R @ c``. Composition ``compose(a, b) = a @ b``
    applies ``b`` first, so ``rotate(rotate(x, a), b) == rotate(x, b @ a)``.
    ``group.table[a, b]`` is the index of ``matrices[a] @ matrices[b]``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("orient3d")
except PackageNotFoundError:  # running from a source tree without installation
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
