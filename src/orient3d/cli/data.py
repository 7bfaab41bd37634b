"""Inspect datasets: `orient3d data preview` draws a contact sheet.

preview: a sheet with sample objects of every class (one row per class) and one
object in all 24 orientations of the cube group, written as a PNG; prints the
fraction of objects per class whose stabilizer in O is trivial (only such
objects have a unique orientation).

Examples:
  orient3d data preview --out sheet.png
  orient3d data preview --source ../shared/data/modelnet10_vox32/voxnet32_test.npz --out mn.png
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from orient3d.config import DataConfig
from orient3d.errors import ConfigError

if TYPE_CHECKING:  # (imported where used: torch and numpy load only for the work)
    import numpy as np

    from orient3d.data import VoxelSet

log = logging.getLogger(__name__)


def add_args(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    p = sub.add_parser("preview", help="draw a sheet of sample objects and one object's orbit")
    p.add_argument("--source", default="procedural", help="'procedural' or a file/folder path")
    p.add_argument("--res", type=int, default=32, help="grid side D")
    p.add_argument("--seed", type=int, default=0, help="seed of every random draw")
    p.add_argument("--split", default="train", choices=["train", "test"])
    p.add_argument("--n", type=int, default=None, help="objects to load (procedural: 50/class)")
    p.add_argument("--per-class", type=int, default=8, help="samples shown per class")
    p.add_argument("--object", type=int, default=0, help="index of the object shown in 24 poses")
    p.add_argument("--size", type=int, default=96, help="pixels per rendered object")
    p.add_argument("--cache-dir", default=None, help="cache folder (default ~/.cache/orient3d)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the cache")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument(
        "--max-gib",
        type=float,
        default=8.0,
        help="refuse to load more than this many GiB of grids (objects × res³ bytes)",
    )


def _short(obj_id: str) -> str:
    """The last part of an id, e.g. ``chair_000009`` -> ``000009``."""
    tail = obj_id.replace("#", "/").split("/")[-1]
    return tail.split("_")[-1][-6:]


def preview_image(vs: VoxelSet, per_class: int = 8, obj: int = 0, size: int = 96) -> np.ndarray:
    """The preview sheet of ``vs``: class rows, then object ``obj`` in all 24 poses."""
    import numpy as np

    from orient3d.geometry import groups
    from orient3d.report import render

    O = groups.cube_group()
    parts = []
    for k, name in enumerate(vs.class_names):
        members = np.flatnonzero(vs.labels.numpy() == k)[:per_class].tolist()
        if members:
            labels = [f"{name[:9]} {_short(vs.ids[i])}" for i in members]
            parts.append(render.render_sheet(vs.voxels[members], per_class, labels, size))
    orbit = groups.orbit(vs.voxels[obj : obj + 1], O)[0]
    angles = O.angles.numpy()
    labels = [f"g={g} {round(float(np.degrees(angles[g])))}°" for g in range(len(O))]
    parts.append(render.render_sheet(orbit, 8, labels, size))
    return render.stack_images(parts, gap=size // 6)


def check_preview_args(args: argparse.Namespace, n: int | None) -> None:
    """Refuse, before any work, what training refuses or what cannot fit (one line each)."""
    try:
        DataConfig(res=args.res)  # the resolutions training accepts
    except ConfigError as err:
        raise ConfigError(f"--res: {err}") from None
    for name in ("size", "per_class"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}: must be >= 1")
    if n is not None:
        gib = n * args.res**3 / 2**30
        if gib > args.max_gib:
            raise ConfigError(
                f"--res {args.res} with {n} objects needs {gib:.1f} GiB of grids, more than "
                f"--max-gib {args.max_gib:g}; lower --res or --n, or raise --max-gib"
            )
    out = Path(args.out)
    if out.is_dir():
        raise ConfigError(f"--out {out}: is a folder; give a .png file name")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ConfigError(f"--out {out}: cannot write in {parent}")


def main(args: argparse.Namespace) -> int:
    import numpy as np

    from orient3d.data import load_dataset
    from orient3d.data.arrays import trivial_fraction
    from orient3d.report import render

    n = args.n
    if n is None and args.source == "procedural":
        n = 50 * 9
    check_preview_args(args, n)
    vs = load_dataset(
        args.source,
        args.res,
        args.split,
        n,
        args.seed,
        args.cache_dir,
        use_cache=not args.no_cache,
    )
    log.info("%s: %d objects at %d³", vs.source, len(vs), vs.res)
    obj = min(max(args.object, 0), len(vs) - 1)
    image = preview_image(vs, args.per_class, obj, args.size)
    path = render.save_png(image, args.out)
    print(f"wrote {path} ({image.shape[1]}x{image.shape[0]}); orbit of {vs.ids[obj]}")
    print("| class | objects | trivial stabilizer |")
    print("| --- | --- | --- |")
    fractions = trivial_fraction(vs)
    counts = np.bincount(vs.labels.numpy(), minlength=len(vs.class_names))
    for name, frac in fractions.items():
        print(f"| {name} | {counts[vs.class_names.index(name)]} | {frac:.3f} |")
    total = float((vs.stabilizers.sum(1) == 1).float().mean())
    print(f"| all | {len(vs)} | {total:.3f} |")
    return 0
