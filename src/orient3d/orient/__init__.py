"""Put misoriented shapes into a model's canonical pose: files in, files out.

``orient3d orient INPUT... --out DIR`` reads meshes (``.off``, ``.obj``, ``.stl``) and
voxel files (``.npy``, ``.npz``, ``.binvox``), finds for each shape the rotation that
takes it to the canonical pose of a single-orientation VAE, and writes it turned, in
its own format, under DIR, with a record of every rotation and how sure it is.

Modules, in the order the data flows:

- :mod:`.load`: the model (the default one shipped as package data, or a run);
- :mod:`.shapes`: finding the input files, reading them, writing them turned
  (meshes by their vertices about the bounding-box centre, grids exactly);
- :mod:`.pose`: the rotation of each grid (``cube``: the 24 of O scored exactly;
  ``so3``: the continuous coarse-to-fine search) with its confidence;
- :mod:`.record`: ``orientations.csv``;
- :mod:`.run`: :func:`orient_paths`, the whole command as a function.

Frames: the model's grids have axes x, y, z (z up, front towards -y). A mesh's
vertex coordinates x, y, z are grid axes 0, 1, 2, so a rotation found on the grid
turns the vertices by the same matrix; ``voxnet32_*`` files are read with axes 0
and 1 swapped into that frame and written back in their own.
"""

from orient3d.orient.load import DEFAULT_MODEL, OrientModel, load_model
from orient3d.orient.pose import Orientation, find_orientations
from orient3d.orient.run import CSV, SHEET, OrientOptions, Summary, orient_paths

__all__ = [
    "CSV",
    "DEFAULT_MODEL",
    "SHEET",
    "OrientModel",
    "OrientOptions",
    "Orientation",
    "Summary",
    "find_orientations",
    "load_model",
    "orient_paths",
]
