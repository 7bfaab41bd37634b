"""``DIR/orientations.csv``: one row per input shape.

Columns (a header line first; numbers with up to 9 significant digits):

- ``file``: the input file as found; ``index``: the grid's index in a file holding
  several (an ``(N, D, D, D)`` ``.npy`` or ``.npz``), empty otherwise;
- ``output``: the file written, relative to DIR (empty when nothing was written);
- ``status``: ``rotated``; ``kept`` (confidence below ``--min-confidence``: the shape
  is written unrotated, and the row gives the rotation found but not applied); or
  ``failed: <reason>`` (nothing written for the file, the other columns empty);
- ``rotations``: ``cube`` or ``so3``; ``temperature``: ``T`` of the confidence;
- ``angle_deg``: the rotation's angle in degrees, in ``[0, 180]``;
- ``r00`` … ``r22``: the rotation ``A`` as a 3×3 matrix, row-major, acting on column
  vectors (``out = A·in`` about the shape's centre), on the file's own axes: mesh
  coordinates x, y, z; array axes 0, 1, 2 of a grid (for ``voxnet32_*`` files these
  hold y, x, z, so ``A`` there is the model-frame rotation conjugated by that swap);
- ``qx, qy, qz, qw``: the same rotation as a unit quaternion in SciPy's order
  (``Rotation.as_quat()``: scalar last), with ``qw >= 0``;
- ``score``: negative ELBO of the turned grid (nats, lower is better);
- ``confidence``, ``margin``, ``symmetric``: see :mod:`orient3d.orient.pose`.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from orient3d.rundir.jsonio import write_text

__all__ = ["COLUMNS", "failed_row", "shape_row", "write_csv"]

MATRIX = tuple(f"r{i}{j}" for i in range(3) for j in range(3))
COLUMNS = (
    "file",
    "index",
    "output",
    "status",
    "rotations",
    "temperature",
    "angle_deg",
    *MATRIX,
    "qx",
    "qy",
    "qz",
    "qw",
    "score",
    "confidence",
    "margin",
    "symmetric",
)


def _num(v: float) -> str:
    v = float(v)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v + 0.0:.9g}"  # (+ 0.0: no "-0")


def shape_row(
    file: str,
    index: int | None,
    output: str,
    status: str,
    A: np.ndarray,
    values: dict[str, Any],
) -> dict[str, str]:
    """One shape's row: ``A`` the rotation (file's axes), ``values`` the other columns
    (``rotations``, ``temperature``, ``score``, ``confidence``, ``margin``, ``symmetric``)."""
    q = Rotation.from_matrix(A).as_quat()  # (x, y, z, w)
    q = -q if q[3] < 0 else q
    angle = math.degrees(2 * math.atan2(float(np.linalg.norm(q[:3])), float(q[3])))
    row = {
        "file": file,
        "index": "" if index is None else str(index),
        "output": output,
        "status": status,
        "rotations": str(values["rotations"]),
        "temperature": _num(values["temperature"]),
        "angle_deg": _num(round(angle, 6)),
        **{k: _num(v) for k, v in zip(MATRIX, np.asarray(A, dtype=np.float64).reshape(-1))},
        **{k: _num(v) for k, v in zip(("qx", "qy", "qz", "qw"), q)},
        "symmetric": "true" if values["symmetric"] else "false",
    }
    row.update({k: _num(values[k]) for k in ("score", "confidence", "margin")})
    return row


def failed_row(file: str, reason: str) -> dict[str, str]:
    """The row of a file that failed: ``status`` is ``failed: <reason>`` on one line."""
    one_line = " ".join(reason.split())
    return {"file": file, "status": f"failed: {one_line}"}


def write_csv(path: Path, rows: Sequence[dict[str, str]]) -> None:
    """Write the rows (missing columns empty) to ``path`` atomically."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, restval="", lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    write_text(path, buf.getvalue())
