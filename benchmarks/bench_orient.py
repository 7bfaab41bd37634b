"""``orient3d orient`` on shapes the default model never saw: accuracy, speed, calibration.

    python benchmarks/bench_orient.py [--n-grids 758] [--so3-turns 4] [--model RUN] [--no-write]

Held-out shapes (never trained on; scripts/build_default_model.py drops every train
grid identical to a test grid):

- the ModelNet10 TEST grids ``voxnet32_test.npz`` (read into the ``.off`` frame), each
  turned by a uniform random element of O (seeded) and written as its own ``.npy``;
- the eight ``.off`` mesh samples, each turned by all 24 elements of O (cube mode)
  and by ``--so3-turns`` uniform random rotations (so3 mode), about its bounding-box
  centre, written as ``.off`` (``--cube-turns``: the first that many elements).

Each set goes through :func:`orient3d.orient.orient_paths`, exactly what the command
runs, and the record is read back. A shape counts right when the output is in the
original pose modulo symmetry: the error ``E = A·G`` (``A`` found, ``G`` the turn) is
in the stabilizer of the original's grid (cube), or within ``--so3-deg`` degrees of
one of its elements (so3). "Upright" asks only that the up axis comes back up
(modulo the same symmetry). Throughput counts whole files: reading, voxelizing,
scoring and writing. Calibration: accuracy per confidence bin, and the accuracy and
share of shapes kept above each ``--min-confidence`` threshold.
Replaces only the "## Orient" section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from scipy.spatial.transform import Rotation

from _machine import machine_line
from _sections import write_section
from orient3d.data.files import load_file, read_mesh, voxelize_trimesh
from orient3d.devices import tune_allocator
from orient3d.geometry.groups import cube_group, rotate_array, stabilizer_mask
from orient3d.metrics.stats import wilson_ci
from orient3d.orient import CSV, OrientOptions, load_model, orient_paths

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
HEADING = "## Orient"
O = cube_group()
MATS = O.matrices.double().numpy()
BINS = (0.0, 0.5, 0.8, 0.95, 0.99, 1.0000001)
THRESHOLDS = (0.0, 0.5, 0.8, 0.9, 0.95, 0.99)
MESH_NOTE = (
    " Eight objects, two per class: the turns of one object are far from independent, so "
    "the intervals (which treat them as independent) are too narrow; read the per-class rows "
    "as the outcomes of two objects."
)


def grid_inputs(folder: Path, n: int, res: int, seed: int) -> dict[str, dict]:
    """The test grids, each turned by a random element of O, one ``.npy`` each."""
    test = load_file(SHARED / "modelnet10_vox32" / "voxnet32_test.npz", res)
    keep = np.sort(np.random.default_rng(seed).permutation(len(test.voxels))[:n])
    g = np.random.default_rng([seed, 1]).integers(len(O), size=len(keep))
    stab = stabilizer_mask(torch.from_numpy(test.voxels[keep]), O).numpy()
    truth = {}
    for k, i in enumerate(keep):
        cls = test.class_names[int(test.labels[i])]
        path = folder / cls / f"{cls}_{i:04d}.npy"  # (not voxnet32_*: stored in the .off frame)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, rotate_array(test.voxels[i], O, int(g[k])))
        truth[str(path)] = {"G": MATS[g[k]], "stab": MATS[stab[k]], "cls": cls}
    return truth


def mesh_inputs(folder: Path, turns: list[np.ndarray] | int, res: int, seed: int) -> dict:
    """The mesh samples turned by each of ``turns``, or by that many random rotations."""
    truth = {}
    for k, src in enumerate(sorted((SHARED / "modelnet_mesh_samples").rglob("*.off"))):
        mesh = read_mesh(src)
        stab = stabilizer_mask(torch.from_numpy(voxelize_trimesh(mesh, res)), O).numpy()
        c = mesh.bounds.mean(axis=0)
        rot = turns if isinstance(turns, list) else Rotation.random(turns, seed + k).as_matrix()
        for j, G in enumerate(rot):
            T = np.eye(4)
            T[:3, :3], T[:3, 3] = G, c - G @ c
            path = folder / src.parent.parent.name / f"{src.stem}_{j:02d}.off"
            path.parent.mkdir(parents=True, exist_ok=True)
            trimesh.Trimesh(mesh.vertices, mesh.faces, process=False).apply_transform(T).export(
                path
            )
            truth[str(path)] = {"G": G, "stab": MATS[stab], "cls": src.parent.parent.name}
    return truth


def _angle(M: np.ndarray) -> np.ndarray:
    """Rotation angles in degrees of ``(..., 3, 3)``."""
    return np.degrees(np.arccos(np.clip((np.trace(M, axis1=-2, axis2=-1) - 1) / 2, -1, 1)))


def judge(rows: list[dict[str, str]], truth: dict, tol: float) -> list[dict]:
    """Per shape: right (pose), upright (z), confidence, class."""
    out = []
    for r in rows:
        t = truth[r["file"]]
        A = np.array([float(r[f"r{i}{j}"]) for i in range(3) for j in range(3)]).reshape(3, 3)
        E = A @ t["G"] @ t["stab"]  # (S, 3, 3): the error modulo each symmetry
        up = np.degrees(np.arccos(np.clip(E[:, 2, 2], -1, 1)))
        right = bool((_angle(E) <= tol).any())
        upright = bool((up <= tol).any())
        conf = float(r["confidence"])
        out.append({"right": right, "upright": upright, "conf": conf, "cls": t["cls"]})
    return out


def run(inputs: Path, out: Path, args: argparse.Namespace, **kw: object) -> tuple[list, float]:
    opt = OrientOptions(sheet=16, **kw)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    summary = orient_paths([inputs], out, args.loaded, opt)
    seconds = time.perf_counter() - t0
    if summary.failed:
        raise SystemExit(f"failures: {summary.failed[:3]}")
    with (out / CSV).open() as f:
        return list(csv.DictReader(f)), seconds


def _pct(k: int, n: int) -> str:
    if n == 0:
        return "—"
    _, lo, hi = wilson_ci(k, n)
    return f"{k / n:.3f} [{lo:.2f}, {hi:.2f}] (n={n})"


def accuracy_table(res: list[dict]) -> list[str]:
    lines = ["| classes | pose right (mod symmetry) | up axis right |", "| --- | --- | --- |"]
    classes = sorted({r["cls"] for r in res})
    groups = {"all": res, **{c: [r for r in res if r["cls"] == c] for c in classes}}
    for name, rs in groups.items():
        right = sum(r["right"] for r in rs)
        up = sum(r["upright"] for r in rs)
        lines.append(f"| {name} | {_pct(right, len(rs))} | {_pct(up, len(rs))} |")
    return lines


def calibration_table(res: list[dict]) -> list[str]:
    lines = [
        "| confidence bin | shapes | mean confidence | accuracy |",
        "| --- | --- | --- | --- |",
    ]
    for lo, hi in itertools.pairwise(BINS):
        rs = [r for r in res if lo <= r["conf"] < hi]
        acc = f"{sum(r['right'] for r in rs) / len(rs):.3f}" if rs else "—"
        mean = f"{np.mean([r['conf'] for r in rs]):.3f}" if rs else "—"
        edge = f"[{lo:.2f}, {min(hi, 1):.2f}{']' if hi > 1 else ')'}"
        lines.append(f"| {edge} | {len(rs)} | {mean} | {acc} |")
    lines += ["", "| --min-confidence | share rotated | accuracy of those |", "| --- | --- | --- |"]
    accs = []
    for p in THRESHOLDS:
        rs = [r for r in res if r["conf"] >= p]
        acc = _pct(sum(r["right"] for r in rs), len(rs))
        lines.append(f"| {p:.2f} | {len(rs) / len(res):.3f} | {acc} |")
        if rs:
            accs.append((p, sum(r["right"] for r in rs) / len(rs)))
    rises = all(b[1] >= a[1] for a, b in itertools.pairwise(accs))
    (p0, a0), (p1, a1) = accs[0], accs[-1]
    verdict = "yes" if rises and a1 > a0 else "no"
    lines += ["", f"A higher threshold, a higher accuracy: **{verdict}** ({a0:.3f} at {p0:.2f}, "]
    lines[-1] += f"{a1:.3f} at {p1:.2f}, the highest threshold any shape passes)."
    return lines


def section(title: str, res: list[dict], seconds: float, files: int, note: str) -> list[str]:
    return [
        f"**{title}**: {files} files in {seconds:.1f} s, {files / seconds:.1f} files/s.{note}",
        "",
        *accuracy_table(res),
        "",
        *calibration_table(res),
        "",
    ]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n-grids", type=int, default=758, help="test grids (all: 758)")
    p.add_argument("--cube-turns", type=int, default=24, help="elements of O per mesh (all: 24)")
    p.add_argument("--so3-turns", type=int, default=4, help="random rotations per mesh (0: none)")
    p.add_argument("--so3-deg", type=float, default=15.0, help="so3: right within this angle")
    p.add_argument("--model", help="a run folder (default: the shipped model)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    tune_allocator()
    torch.set_num_threads(args.threads)
    args.loaded = load_model(args.model)
    res, t0 = args.loaded.res, time.perf_counter()
    parts = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        sets = [
            ("Test grids (voxnet32_test), cube", "grids", "cube", 1e-3),
            (f"Mesh samples × {args.cube_turns} cube rotations, cube", "meshes", "cube", 1e-3),
        ]
        if args.so3_turns:
            title = f"Mesh samples × {args.so3_turns} random SO(3) rotations, so3"
            sets.append((f"{title} (right within {args.so3_deg:g}°)", "so3", "so3", args.so3_deg))
        for title, name, mode, tol in sets:
            if name == "grids":
                truth = grid_inputs(work / name, args.n_grids, res, args.seed)
            else:
                turns = list(MATS[: args.cube_turns]) if mode == "cube" else args.so3_turns
                truth = mesh_inputs(work / name, turns, res, args.seed)
            rows, sec = run(work / name, work / f"out_{name}", args, rotations=mode)
            note = "" if name == "grids" else MESH_NOTE
            lines = section(title, judge(rows, truth, tol), sec, len(rows), note)
            print(*lines, sep="\n", flush=True)
            parts += lines
    cmd = (
        f"python benchmarks/bench_orient.py --n-grids {args.n_grids} "
        f"--cube-turns {args.cube_turns} --so3-turns {args.so3_turns}"
    )
    m = args.loaded
    head = (
        f"`{cmd}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine_line()}, "
        f"torch threads {args.threads}, torch {torch.__version__}, load average "
        f"{os.getloadavg()[0]:.1f} at the end (a shared machine: files/s are lower bounds); "
        f"{time.perf_counter() - t0:.0f} s in all. Model: {m.name} ({res}³, mode {m.mode}), "
        f"confidence temperature T = {m.temperature:.3g}. Shapes never trained on, turned by "
        "known rotations, oriented by `orient_paths` (what `orient3d orient` runs), judged "
        "modulo symmetry (the original grid's stabilizer in O); intervals: 95% Wilson."
    )
    text = "\n".join([HEADING, "", head, "", *parts])
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
