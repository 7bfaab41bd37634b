"""Rebuild the default model of ``orient3d orient`` (src/orient3d/orient/default_model/).

    OMP_NUM_THREADS=1 python scripts/build_default_model.py [--epochs 14] [--no-modelnet]

What it trains on (every grid at 32³, upright, z up, front towards -y, each one
framed as the mesh voxelizer frames a mesh, :func:`orient3d.data.arrays.reframe`:
its largest side spanning 30 voxels, centred; ``orient`` frames what it scores the
same way, as ``model.json`` says with ``"framing": "fit"``):

- the built-in procedural furniture: chair, table, bed, sofa, lamp, desk, shelf,
  monitor (``--n-procedural`` objects, classes taking turns; no polycubes, which
  have no canonical pose);
- ModelNet10 TRAIN grids from the shared data (unless ``--no-modelnet``):
  ``voxnet32_train_chair.npz`` (read by the loader with axes 0 and 1 swapped back
  into the ``.off`` frame), less every grid identical to a grid of the test file
  ``voxnet32_test.npz``; and ``binvox32_train_chair_monitor.npz``, whose hollow
  shells are filled (``scipy.ndimage.binary_fill_holes``) to be solid like the
  mesh voxelizer's grids;
- ModelNet10 TRAIN point clouds (``modelnet10_points1024.npz``, split ``train``) of
  the classes with no train grids: bed, desk, dresser, night_stand, sofa, table,
  less the objects that are mesh samples; each voxelized by marking the voxels
  its 1024 points fall in, then closed (two dilations, two erosions) and filled.

The TEST split ``voxnet32_test.npz`` and the mesh samples are never trained on:
they are what ``benchmarks/bench_orient.py`` measures the model with.

Each source is split, seeded, into the run's train part and a held-out part
(``--held-out`` of it), laid out as ``WORK/data/<class>/<train|test>/<source>.npz``
so that ``orient3d train`` reads the given split (no file name starts with
``voxnet32_``: these grids are already in the ``.off`` frame). The run selects its checkpoint
on its own validation split (10% of train). The held-out part then calibrates the
confidence temperature ``T`` of ``softmax(-score / T)`` (one value minimizing the
negative log posterior of the true pose, every object in all 24 rotations) and
checks that fp16 weights choose the same rotations as fp32 ones.

Written to ``--dest``: ``config.toml`` (the run's resolved config),
``checkpoints/best.pt`` (the best checkpoint's weights stored as fp16) and
``model.json`` (the temperature, the data counts, the run's results, the exact
commands). ModelNet is for academic research only; so are weights trained on it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.ndimage import binary_closing, binary_fill_holes
from scipy.optimize import minimize_scalar

from orient3d.config import Config, apply_overrides, dumps
from orient3d.data import generate
from orient3d.data.arrays import reframe
from orient3d.data.files import load_file
from orient3d.evaluation.protocols import load_run
from orient3d.geometry.groups import cube_group, stabilizer_mask
from orient3d.rundir import runs
from orient3d.search.discrete import score_orientations

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "modelnet10_vox32"
DEST = ROOT / "src" / "orient3d" / "orient" / "default_model"
FURNITURE = ("chair", "table", "bed", "sofa", "lamp", "desk", "shelf", "monitor")
POINT_CLASSES = ("bed", "desk", "dresser", "night_stand", "sofa", "table")
RES = 32


def points_grid(points: np.ndarray) -> np.ndarray:
    """A ``(P, 3)`` surface sample (longest side 1) as a solid ``(RES,) * 3`` grid."""
    q = (points.astype(np.float64) - points.min(axis=0)) * (RES - 2)
    idx = np.minimum(np.floor(q).astype(np.int64), RES - 3)
    g = np.zeros((RES + 6,) * 3, bool)  # padded: the closing must not touch the border
    g[tuple((idx + 3).T)] = True
    g = binary_closing(g, structure=np.ones((3, 3, 3)), iterations=2)[3:-3, 3:-3, 3:-3]
    return binary_fill_holes(g).astype(np.uint8)


def point_clouds(held_out: set[str]) -> tuple[np.ndarray, list[str]]:
    z = np.load(SHARED.parent / "modelnet10_points1024" / "modelnet10_points1024.npz")
    names = [str(c) for c in z["class_names"]]
    cls = [names[k] for k in z["labels"]]
    ok = (z["split"] == "train") & ~np.isin(z["name"], sorted(held_out))
    keep = [i for i, c in enumerate(cls) if ok[i] and c in POINT_CLASSES]
    grids = np.stack([points_grid(z["points"][i]) for i in keep])
    return reframe(grids, RES), [cls[i] for i in keep]


def sources(args: argparse.Namespace) -> dict[str, tuple[np.ndarray, list[str]]]:
    """``{source name: (grids, class name per grid)}``, all centred, in the .off frame."""
    proc = generate(args.n_procedural, RES, np.random.default_rng([args.seed, 7]), FURNITURE)
    names = [proc.class_names[k] for k in proc.labels.tolist()]
    out = {"procedural": (reframe(proc.voxels.numpy(), RES), names)}
    if args.no_modelnet:
        return out
    test = load_file(SHARED / "voxnet32_test.npz", RES).voxels
    seen = {g.tobytes() for g in test}
    vox = load_file(SHARED / "voxnet32_train_chair.npz", RES).voxels
    keep = np.array([g.tobytes() not in seen for g in vox])
    print(f"voxnet32_train_chair: {int((~keep).sum())} grids identical to test grids dropped")
    out["voxnet_train_chair"] = (reframe(vox[keep], RES), ["chair"] * int(keep.sum()))
    bv = load_file(SHARED / "binvox32_train_chair_monitor.npz", RES)
    filled = np.stack([binary_fill_holes(g) for g in bv.voxels]).astype(np.uint8)
    bnames = [bv.class_names[k] for k in bv.labels.tolist()]
    out["binvox_train_chair_monitor"] = (reframe(filled, RES), bnames)
    samples = {f.stem for f in (SHARED.parent / "modelnet_mesh_samples").rglob("*.off")}
    out["points_train"] = point_clouds(samples)
    return out


def write_data(args: argparse.Namespace, root: Path) -> dict[str, dict[str, int]]:
    """The folder ``root/<class>/<split>/<source>.npz``; returns the counts."""
    counts: dict[str, dict[str, int]] = {}
    for k, (src, (vox, names)) in enumerate(sources(args).items()):
        rng = np.random.default_rng([args.seed, 11, k])
        held = rng.random(len(vox)) < args.held_out
        for split, mask in (("train", ~held), ("test", held)):
            for cls in sorted(set(names)):
                sel = mask & (np.array(names) == cls)
                if not sel.any():
                    continue
                path = root / cls / split / f"{src}.npz"
                path.parent.mkdir(parents=True, exist_ok=True)
                np.savez_compressed(path, voxels=vox[sel])
                counts.setdefault(f"{src}/{cls}", {})[split] = int(sel.sum())
    return counts


def train(args: argparse.Namespace, work: Path) -> tuple[Path, str]:
    cfg = apply_overrides(
        Config(),
        [
            f"seed={args.seed}",
            f"data.source={work / 'data'}",
            f"data.res={RES}",
            "data.n_train=0",
            "data.n_test=0",
            f"model.width={args.width}",
            f"model.latent={args.latent}",
            "train.mode=single",
            f"train.epochs={args.epochs}",
            "train.batch_size=32",
            "train.precision=fp32",
            "train.threads=1",
        ],
    )
    (work / "config.toml").write_text(dumps(cfg))
    run = work / "run"
    exe = Path(sys.executable).with_name("orient3d")
    cmd = [str(exe), "train", str(work / "config.toml"), "--out", str(run), "--force"]
    print("$", shlex.join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    return run, shlex.join(["orient3d", *cmd[1:]])


def calibrate(run: Path, data: Path) -> dict[str, float]:
    """Temperature and fp16 agreement on the held-out split.

    Shown as ``x = g·c``, an object's 24 scores are those of ``c`` permuted (the group
    acts exactly), so scoring each object in its stored pose covers every view: the
    right elements are its stabilizer."""
    _, model = load_run(run)
    held = np.concatenate([load_file(f, RES).voxels for f in sorted(data.glob("*/test/*.npz"))])
    x = torch.from_numpy(held)
    o = cube_group()
    scores = score_orientations(model, x, o).double()  # (N, G)
    right = stabilizer_mask(x, o)  # (N, G): r⁻¹·c == c

    def nll(log_t: float) -> float:
        logq = torch.log_softmax(-scores / np.exp(log_t), dim=1)
        return float(-torch.logsumexp(logq.masked_fill(~right, -np.inf), dim=1).mean())

    best = minimize_scalar(nll, bounds=(-3.0, 8.0), method="bounded")
    half = model.half().float()
    agree = (score_orientations(half, x, o).argmin(1) == scores.argmin(1)).float().mean()
    pick = scores.argmin(1)
    return {
        "temperature": float(np.exp(best.x)),
        "nll_at_temperature": float(best.fun),
        "nll_at_1": nll(0.0),
        "held_out_objects": len(x),
        "held_out_accuracy": float(right[torch.arange(len(x)), pick].float().mean()),
        "fp16_choice_agreement": float(agree),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=Path("/tmp/orient3d_default_model"))
    p.add_argument("--dest", type=Path, default=DEST)
    p.add_argument("--epochs", type=int, default=14)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--latent", type=int, default=32)
    p.add_argument("--n-procedural", type=int, default=1200)
    p.add_argument("--held-out", type=float, default=0.05)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-modelnet", action="store_true", help="procedural furniture only")
    args = p.parse_args()
    t0 = time.time()
    (args.work / "data").mkdir(parents=True, exist_ok=True)
    counts = write_data(args, args.work / "data")
    run, train_cmd = train(args, args.work)
    cal = calibrate(run, args.work / "data")
    print(json.dumps(cal, indent=1))
    args.dest.mkdir(parents=True, exist_ok=True)
    (args.dest / "checkpoints").mkdir(exist_ok=True)
    cfg = runs.read_run_config(run)
    state = runs.load_checkpoint(runs.checkpoint_path(run, "best"))
    half = {k: v.half() if v.is_floating_point() else v for k, v in state["model"].items()}
    torch.save({"model": half, "epoch": state.get("epoch")}, args.dest / "checkpoints" / "best.pt")
    text = dumps(cfg).replace(str(args.work / "data"), "built by scripts/build_default_model.py")
    (args.dest / "config.toml").write_text(text)
    meta = {
        "temperature": cal["temperature"],
        "framing": "fit",
        "calibration": cal,
        "rebuild": "OMP_NUM_THREADS=1 python scripts/build_default_model.py "
        + shlex.join(sys.argv[1:]),
        "train_command": train_cmd,
        "data": counts,
        "knows": "upright furniture: ModelNet10 chair, monitor, "
        + ", ".join(POINT_CLASSES)
        + "; procedural "
        + ", ".join(FURNITURE),
        "results": runs.read_json(run / "results.json"),
        "git": runs.git_info(ROOT)[0],
        "built": runs.now(),
        "seconds": round(time.time() - t0),
    }
    meta["results"].pop("per_object", None)
    (args.dest / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {args.dest} in {meta['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
