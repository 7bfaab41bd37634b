"""Put misoriented shapes into a shared canonical pose: files in, files out.

  orient3d orient INPUT... --out DIR [--model RUN] [--rotations cube|so3]
                  [--min-confidence P] [--temperature T]

INPUT: any mix of files and folders (walked recursively) of .off, .obj, .stl,
.binvox, .npy and .npz files; an .npy/.npz holding several grids has each grid
oriented and is written as one file of the same layout (other .npz arrays kept).

For each shape the model scores rotations by its negative ELBO, as `recover` does:
--rotations cube (default) scores the 24 cube rotations exactly; so3 runs the
coarse-to-fine continuous search (meshes only: a voxel file fails, since turning a
grid by a general rotation would resample it). The shape is written turned, in its
own format, under DIR at its path relative to its INPUT folder (a file INPUT: its
name). Meshes are turned by their vertices about the centre of their bounding box
(the point the voxelizer centres), never re-voxelized; grids are turned exactly.
Every file is written to a temporary file and renamed: never half written.

DIR/orientations.csv has one row per shape: the rotation (3x3 matrix r00..r22 and
quaternion qx,qy,qz,qw, SciPy's scalar-last order), its angle, the score, the
confidence (posterior mass of the choice: softmax(-score/T) summed over the
candidates that give the same voxels; T from the model, or --temperature), the
margin in nats to the best rotation giving different voxels, whether the shape is
symmetric under the choice, and the status: rotated; kept (confidence below
--min-confidence: written unrotated); or failed: <reason> (nothing written for that
file; the others go on, and the exit status is 1). DIR/before_after.png shows a
sample of inputs beside their oriented versions.

--model RUN: any trained run folder (default: the model shipped with orient3d, a
single-orientation model at 32³ that knows upright furniture: the ModelNet10 bed,
chair, desk, dresser, monitor, night stand, sofa and table, and the procedural
furniture, lamps and shelves included).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="shape files or folders")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder")
    parser.add_argument("--model", metavar="RUN", help="a trained run (default: the built-in)")
    parser.add_argument("--rotations", choices=("cube", "so3"), default="cube")
    parser.add_argument(
        "--min-confidence",
        type=float,
        default=0.0,
        metavar="P",
        help="below it a shape is kept: written unrotated (default 0: all rotated)",
    )
    parser.add_argument(
        "--temperature", type=float, metavar="T", help="confidence temperature (default: model's)"
    )
    parser.add_argument("--precision", choices=("fp32", "bf16", "auto"), default="fp32")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--batch", type=int, default=16, help="files scored together")
    parser.add_argument("--sheet", type=int, default=12, help="shapes in before_after.png")


class _Bar:
    """A tqdm bar over files, on a terminal only."""

    def __init__(self) -> None:
        self.bar: Any = None

    def __call__(self, n: int, total: int) -> None:
        if self.bar is None and sys.stderr.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="file", leave=False)
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def main(args: argparse.Namespace) -> int:
    from orient3d.devices import resolve_device
    from orient3d.orient import OrientOptions, load_model, orient_paths

    options = OrientOptions(
        rotations=args.rotations,
        min_confidence=args.min_confidence,
        temperature=args.temperature,
        precision=args.precision,
        batch=args.batch,
        sheet=args.sheet,
    )
    model = load_model(args.model, str(resolve_device(args.device)))
    bar = _Bar()
    try:
        summary = orient_paths(args.inputs, args.out, model, options, progress=bar)
    finally:
        bar.close()
    for path, why in summary.failed:
        print(f"failed: {path}: {why}", file=sys.stderr)
    print(summary.line())
    return 1 if summary.failed else 0
