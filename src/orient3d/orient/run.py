"""Orient every shape file under some inputs into an output folder (``orient3d orient``).

For each file (:mod:`.shapes`), each of its grids gets the rotation to the model's
canonical pose (:mod:`.pose`); the file is written turned, in its own format, at
its relative path under ``out``; ``out/orientations.csv`` (:mod:`.record`) gets a
row per shape and ``out/before_after.png`` shows a sample of inputs beside their
oriented versions.

A shape whose confidence is below ``min_confidence`` is ``kept``: written
unrotated (so that the output folder holds every input), its row giving the
rotation found. A file that cannot be read, oriented or written fails alone: its
row says why, nothing of it is written, and the others go on.

Files are read and scored ``batch`` at a time; ``progress(n, total)`` is called
after each batch with the number of files it held and the number to do.
"""

from __future__ import annotations

import io
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from orient3d.errors import ConfigError, DataError, Orient3dError
from orient3d.orient.load import OrientModel
from orient3d.orient.pose import MODES, Orientation, find_orientations
from orient3d.orient.record import failed_row, shape_row, write_csv
from orient3d.orient.shapes import Item, Shape, find_inputs, read_shape, write_shape
from orient3d.rundir.jsonio import atomic_open
from orient3d.search.discrete import Precision

__all__ = ["CSV", "SHEET", "OrientOptions", "Summary", "orient_paths"]

log = logging.getLogger(__name__)

CSV = "orientations.csv"
SHEET = "before_after.png"


@dataclass(frozen=True)
class OrientOptions:
    rotations: str = "cube"  # cube (the 24 of O, exact) | so3 (continuous search, meshes only)
    min_confidence: float = 0.0  # below it a shape is kept: written unrotated
    temperature: float | None = None  # T of the confidence (None: the model's own)
    precision: Precision = "fp32"  # scoring autocast: fp32 | bf16 | auto
    batch: int = 16  # files read and scored together
    sheet: int = 12  # shapes shown in before_after.png (0: no picture)

    def __post_init__(self) -> None:
        if self.rotations not in MODES:
            raise ConfigError(f"--rotations: {self.rotations!r} is not one of {MODES}")
        if not 0 <= self.min_confidence <= 1:
            raise ConfigError(f"--min-confidence: {self.min_confidence} is not in [0, 1]")
        if self.temperature is not None and not self.temperature > 0:
            raise ConfigError(f"--temperature: {self.temperature} must be > 0")
        if self.batch < 1 or self.sheet < 0:
            raise ConfigError(f"batch must be >= 1 and sheet >= 0, got {self.batch}, {self.sheet}")


@dataclass
class Summary:
    out: Path
    files: int = 0  # input files found (failed ones included)
    shapes: int = 0  # shapes oriented (rotated or kept)
    rotated: int = 0
    kept: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)  # (file, reason)
    seconds: float = 0.0

    def line(self) -> str:
        rate = self.files / self.seconds if self.seconds > 0 else float("inf")
        return (
            f"{self.shapes} shape(s) from {self.files} file(s) into {self.out}: "
            f"{self.rotated} rotated, {self.kept} kept, {len(self.failed)} file(s) failed "
            f"({rate:.1f} files/s); see {self.out / CSV}"
        )


@dataclass
class _Batch:
    """What one batch of files gave: rows, failures, samples for the picture."""

    rows: list[dict[str, str]] = field(default_factory=list)
    samples: list[tuple[str, np.ndarray, np.ndarray, str]] = field(default_factory=list)


def _reason(err: Exception, path: Path) -> str:
    msg = str(err) if isinstance(err, Orient3dError | OSError) else f"{type(err).__name__}: {err}"
    return msg.removeprefix(f"{path}: ")


def _read(item: Item, model: OrientModel, rotations: str) -> Shape:
    if rotations == "so3" and item.path.suffix.lower() in (".npy", ".npz", ".binvox"):
        raise DataError(
            "so3 rotations would resample a voxel grid (not exact); voxel files are "
            "oriented with --rotations cube"
        )
    return read_shape(item.path, model.res, fit=model.framing == "fit")


def _batch(
    items: Sequence[Item],
    out: Path,
    model: OrientModel,
    opt: OrientOptions,
    t: float,
    show: set[Path],
) -> _Batch:
    res = _Batch()
    shapes: list[tuple[Item, Shape]] = []
    for it in items:
        try:
            shapes.append((it, _read(it, model, opt.rotations)))
        except Exception as err:  # a bad file fails alone, whatever broke
            log.debug("%s: read failed", it.path, exc_info=True)
            res.rows.append(failed_row(str(it.path), _reason(err, it.path)))
    if not shapes:
        return res
    x = torch.from_numpy(np.concatenate([s.grids for _, s in shapes]))
    found = find_orientations(model.model, x, opt.rotations, temperature=t, precision=opt.precision)
    start = 0
    for it, shape in shapes:
        sl = slice(start, start + len(shape.grids))
        start = sl.stop
        try:
            rows, kept = _write_file(it, shape, found, sl, out, opt, t)
        except Exception as err:
            log.debug("%s: write failed", it.path, exc_info=True)
            res.rows.append(failed_row(str(it.path), _reason(err, it.path)))
            continue
        res.rows += rows
        if it.path in show:
            after = shape.grids[0] if kept[0] else found.turned[sl.start].numpy()
            note = rows[0]["status"] + ("" if kept[0] else f" {float(rows[0]['angle_deg']):.0f}°")
            res.samples.append((it.path.name, shape.grids[0], after, note))
    return res


def _write_file(
    item: Item,
    shape: Shape,
    found: Orientation,
    sl: slice,
    out: Path,
    opt: OrientOptions,
    t: float,
) -> tuple[list[dict[str, str]], np.ndarray]:
    kept = found.confidence[sl] < opt.min_confidence
    rows = []
    for k, i in enumerate(range(sl.start, sl.stop)):
        values = {
            "rotations": opt.rotations,
            "temperature": t,
            "score": found.score[i],
            "confidence": found.confidence[i],
            "margin": found.margin[i],
            "symmetric": bool(found.symmetric[i]),
        }
        A = shape.frame.T @ found.A[i] @ shape.frame  # on the file's own axes
        status = "kept" if kept[k] else "rotated"
        index = k if shape.multi else None
        rows.append(shape_row(str(item.path), index, str(item.rel), status, A, values))
    write_shape(shape, out / item.rel, np.where(kept[:, None, None], np.eye(3), found.A[sl]))
    return rows, kept


def _sheet(samples: list[tuple[str, np.ndarray, np.ndarray, str]], path: Path) -> None:
    """Inputs beside their oriented versions, four pairs a row."""
    from matplotlib.image import imsave

    from orient3d.report.render import render_sheet

    grids = [g for _, before, after, _ in samples for g in (before, after)]
    labels = [s for name, _, _, note in samples for s in (f"in: {name[:18]}", f"out: {note}")]
    image = render_sheet(np.stack(grids), ncols=8, labels=labels, size=112)
    buf = io.BytesIO()
    imsave(buf, image, format="png")
    with atomic_open(path, "wb") as f:
        f.write(buf.getvalue())


def orient_paths(
    inputs: Sequence[str | Path],
    out: str | Path,
    model: OrientModel,
    options: OrientOptions | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> Summary:
    """Orient every shape file of ``inputs`` into ``out`` (module docstring)."""
    opt = options or OrientOptions()
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)  # (one that cannot be made fails here, at once)
    t = model.temperature if opt.temperature is None else opt.temperature
    t0 = time.perf_counter()
    items, bad = find_inputs(inputs, out)
    if not items and not bad:
        raise DataError(f"no shape files found in {', '.join(map(str, inputs))}")
    rows = [failed_row(p, why) for p, why in bad]
    pick = np.unique(np.linspace(0, len(items) - 1, min(opt.sheet, len(items))).round())
    show = {items[int(i)].path for i in pick} if items else set()
    samples = []
    for s in range(0, len(items), opt.batch):
        chunk = items[s : s + opt.batch]
        got = _batch(chunk, out, model, opt, t, show)
        rows += got.rows
        samples += got.samples
        if progress is not None:
            progress(len(chunk), len(items))
    write_csv(out / CSV, rows)
    if samples:
        _sheet(samples, out / SHEET)
    summary = Summary(out, files=len(items) + len(bad), seconds=time.perf_counter() - t0)
    for r in rows:
        status = r["status"]
        if status.startswith("failed: "):
            summary.failed.append((r["file"], status.removeprefix("failed: ")))
        else:
            summary.shapes += 1
            summary.rotated += status == "rotated"
            summary.kept += status == "kept"
    return summary
