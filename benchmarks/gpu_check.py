"""GPU check: 32³ and 64³ training with bf16, full search, fp32/bf16 agreement.

    python benchmarks/gpu_check.py [--res 32 64] [--steps 300] [--batch 64] [--no-write]
    python benchmarks/gpu_check.py --device cpu      # a tiny smoke run; writes nothing

For each resolution it trains the augmented configuration through the real
training loop (``orient3d.train.fit``: bf16 autocast, channels_last_3d, procedural
data) for about ``--steps`` steps, reads the training throughput from
``metrics.jsonl`` (the median over epochs after the first), and records the peak
GPU memory (``torch.cuda.max_memory_allocated``). It then scores every rotation
of O (``orient3d.search.score_orientations``, G = 24) for a batch of rotated test
objects with the trained model, in fp32 and in bf16, and reports objects/s and
how often the two precisions choose the same pose (exactly, and modulo the
objects' symmetry). On CUDA it replaces the "## GPU check" section of
BENCHMARKS.md with the card's name. Without CUDA it says so and exits 0.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from _sections import write_section
from orient3d.config import Config, apply_overrides
from orient3d.data import VoxelSet, train_test
from orient3d.devices import tune_allocator
from orient3d.evaluation.protocols import load_run
from orient3d.geometry import groups
from orient3d.rundir import runs
from orient3d.search import canonical_pose, score_orientations
from orient3d.training.loop import fit

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## GPU check"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _config(res: int, args: argparse.Namespace, n_train: int, epochs: int) -> Config:
    tiny = args.device == "cpu"
    return apply_overrides(
        Config(),
        [
            f"data.res={res}",
            f"data.n_train={n_train}",
            f"data.n_test={args.search_batch}",
            f"data.cache_dir={args.cache_dir!r}" if args.cache_dir else "data.cache_dir=''",
            "model.width=4" if tiny else "model.width=32",
            'train.mode="augmented"',
            f"train.epochs={epochs}",
            f"train.batch_size={args.batch}",
            f"train.device={args.device!r}",
            'train.precision="bf16"',
            "train.progress=false",
            'train.lr_schedule="constant"',
        ],
    )


def train_one(res: int, args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """Train ~``args.steps`` steps at ``res``³; throughput and peak memory."""
    steps_per_epoch = max(1, min(args.steps // 3, 1024 // args.batch))  # <= 1024 objects
    epochs = max(2, math.ceil(args.steps / steps_per_epoch))
    cfg = _config(res, args, steps_per_epoch * args.batch, epochs)
    t0 = time.perf_counter()
    train_set, test_set = train_test(
        "procedural", res, cfg.data.n_train, cfg.data.n_test, cfg.seed, cfg.data.cache_dir or None
    )
    data_s = time.perf_counter() - t0
    device = torch.device(args.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    fit(cfg, train_set, test_set, out)
    _sync(device)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else 0
    speeds = [float(r["samples_per_s"]) for r in runs.read_jsonl(out / "metrics.jsonl")]
    return {
        "res": res,
        "width": cfg.model.width,
        "steps": steps_per_epoch * epochs,
        "samples_per_s": statistics.median(speeds[1:] or speeds),
        "peak_gib": peak / 2**30,
        "data_s": data_s,
        "test": test_set,
    }


def search_check(out: Path, test: VoxelSet, device: torch.device) -> dict[str, float]:
    """Full search (G = 24) over ``test`` rotated; objects/s and fp32/bf16 agreement."""
    _, model = load_run(out, str(device))
    group = groups.cube_group()
    g = torch.randint(len(group), (len(test),), generator=torch.Generator().manual_seed(0))
    x = groups.rotate(test.voxels, group, g).to(device)  # (B, D, D, D) uint8
    result: dict[str, float] = {}
    choice: dict[str, torch.Tensor] = {}
    for precision in ("fp32", "bf16"):
        score_orientations(model, x[:2], group, precision=precision)  # warm-up
        _sync(device)
        t0 = time.perf_counter()
        scores = score_orientations(model, x, group, precision=precision)  # (B, G)
        _sync(device)
        result[f"{precision}_objects_per_s"] = len(test) / (time.perf_counter() - t0)
        choice[precision] = scores.argmin(dim=1).cpu()
    same = choice["fp32"] == choice["bf16"]
    h32, h16 = (canonical_pose(choice[p], g, group) for p in ("fp32", "bf16"))
    sym = groups.same_voxels(test.stabilizers, group, h32, h16)
    result["agree"] = float(same.float().mean())
    result["agree_sym"] = float(sym.float().mean())
    return result


def markdown(rows: list[dict[str, Any]], args: argparse.Namespace) -> str:
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "CPU"
    lines = [
        HEADING,
        "",
        f"`python benchmarks/gpu_check.py --steps {args.steps} --batch {args.batch}` on "
        f"**{name}**, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"{time.strftime('%Y-%m-%d')}. Augmented training through `orient3d.train.fit` "
        f"(width {rows[0]['width']}, latent 32, BatchNorm, bf16 autocast, channels_last_3d, batch "
        f"{args.batch}); full search = `score_orientations` over the 24 rotations of O "
        f"for {args.search_batch} rotated test objects with the trained model.",
        "",
        "| D | steps | training samples/s | peak GPU memory | search objects/s fp32 | "
        "search objects/s bf16 | fp32 = bf16 choice | same voxels |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        lines.append(
            f"| {r['res']}³ | {r['steps']} | {r['samples_per_s']:.0f} | {r['peak_gib']:.2f} GiB "
            f"| {r['fp32_objects_per_s']:.0f} | {r['bf16_objects_per_s']:.0f} "
            f"| {r['agree']:.1%} | {r['agree_sym']:.1%} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (smoke run)")
    p.add_argument("--res", type=int, nargs="+", default=None, help="default: 32 64 (cpu: 16)")
    p.add_argument("--steps", type=int, default=None, help="default: 300 (cpu: 4)")
    p.add_argument("--batch", type=int, default=None, help="default: 64 (cpu: 4)")
    p.add_argument("--search-batch", type=int, default=None, help="default: 256 (cpu: 4)")
    p.add_argument("--cache-dir", default="", help="procedural data cache (default: the usual)")
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    cpu = args.device == "cpu"
    args.res = args.res or ([16] if cpu else [32, 64])
    args.steps = args.steps or (4 if cpu else 300)
    args.batch = args.batch or (4 if cpu else 64)
    args.search_batch = args.search_batch or (4 if cpu else 256)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("gpu_check: no CUDA device on this machine: nothing measured, nothing written")
        print("           (python benchmarks/gpu_check.py --device cpu runs a tiny smoke version)")
        return 0
    tune_allocator()
    device = torch.device(args.device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for res in args.res:
            out = Path(tmp) / f"res{res}"
            row = train_one(res, args, out)
            row.update(search_check(out, row.pop("test"), device))
            print(
                f"{res}³: {row['samples_per_s']:.0f} samples/s training, "
                f"peak {row['peak_gib']:.2f} GiB, search {row['fp32_objects_per_s']:.0f} (fp32) / "
                f"{row['bf16_objects_per_s']:.0f} (bf16) objects/s, fp32 = bf16 choice "
                f"{row['agree']:.1%} ({row['agree_sym']:.1%} same voxels); "
                f"data {row['data_s']:.1f} s",
                flush=True,
            )
            rows.append(row)
    text = markdown(rows, args)
    print(text)
    if device.type != "cuda":
        print("gpu_check: smoke run on the CPU: BENCHMARKS.md not written")
    elif not args.no_write:
        write_section(text)
        print("gpu_check: wrote", HEADING, "in", ROOT / "BENCHMARKS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
