"""Continuous search training: epoch time against augmented training, final test MSE.

    python benchmarks/bench_continuous.py [--epochs 6] [--n-train 192] [--no-write]

Trains, side by side from the same initial weights and data order, with epochs
interleaved (a different variant first each epoch): ``augmented`` (the 24 cube
rotations, exact), SO(3)-augmented (``train.mode=continuous`` kept in its warm-up:
random SO(3) views, no search), and continuous search training with the pose
cache, refined every epoch (the defaults) or reused as is. Reports per variant the
median epoch time, its ratio to the augmented epoch of the same index (steady
search epochs, and the first search epoch, which searches everything in full), the
forward passes per sample, and the final test MSE under protocol ``so3+search``
(each test object turned by a fixed seeded SO(3) rotation, resampled and
thresholded; pose by the full coarse-to-fine search; x̂ = P·decode(encode(P⁻¹x)))
and under ``so3`` (no search), plus the consistency of the canonical pose.
``--precision`` sets training and scoring alike (``train.precision`` and
``continuous.precision``; ``auto``, the default config's, resolves per machine). Each
machine kind and precision writes its own part of the "## Continuous search training"
section of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from _machine import machine_line
from _sections import show_machine_part
from _side_by_side import Run, make_run, train_epoch
from orient3d.data import VoxelSet, train_test
from orient3d.devices import resolve_precision, tune_allocator
from orient3d.evaluation.protocols import evaluate, so3_eval_rotations
from orient3d.geometry.groups import cube_group
from orient3d.model import VAE
from orient3d.search.discrete import scoring_precision
from orient3d.search.poses import search
from orient3d.training.modes.continuous import canonical_consistency, search_options

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Continuous search training"
INTRO = (
    "Continuous (SO(3)) search training against augmented training "
    "(`benchmarks/bench_continuous.py`). Each part below is one machine kind, as its CPU "
    "names itself, and one precision; a run replaces only its own part."
)
O = cube_group()
BASE = [
    "data.res=16",
    "model.width=16",
    "model.latent=16",
    "train.batch_size=32",
    "train.lr=2e-3",
]
REFERENCE = "augmented (O, reference)"


DEFAULTS = "continuous: cache, refine every epoch (defaults)"


def variants(epochs: int, warmup: int) -> dict[str, list[str]]:
    cont = ["train.mode=continuous", f"continuous.warmup_epochs={warmup}"]
    return {
        REFERENCE: ["train.mode=augmented"],
        "SO(3)-augmented (views, no search)": [*cont, f"continuous.warmup_epochs={epochs}"],
        DEFAULTS: cont,
        "continuous: cache, reuse (refine_every=0, 5% per step)": [
            *cont,
            "continuous.refine_every=0",
            "continuous.refresh_every=0",
        ],
        "continuous: coarse grid level 0, top 2 (78 passes), refine every epoch": [
            *cont,
            "continuous.grid_level=0",
            "continuous.top_k=2",
        ],
    }


def final_metrics(run: Run, test: VoxelSet) -> dict[str, float]:
    opt = search_options(run.cfg.continuous)

    def canon(model: VAE, x: torch.Tensor) -> torch.Tensor:
        return search(model, x, opt).pose.matrix()

    ev = {
        p: evaluate(run.model, test, run.cfg, protocol=p, canonicalize=canon)
        for p in ("so3", "so3+search")
    }
    R_true = so3_eval_rotations(len(test), run.cfg.seed)
    cons = canonical_consistency(run.model, test.voxels, R_true, opt)
    return {
        "mse_search": ev["so3+search"]["test_mse"],
        "mse_plain": ev["so3"]["test_mse"],
        **cons,
    }


def _base(precision: str) -> list[str]:
    return [*BASE, f"train.precision={precision}", f"continuous.precision={precision}"]


def train_all(args: argparse.Namespace, train: VoxelSet) -> dict[str, Run]:
    vs = variants(args.epochs, args.warmup)
    base = _base(args.precision)
    runs = {n: make_run(n, base, ov, args.epochs, train) for n, ov in vs.items()}
    names = list(runs)
    for epoch in range(1, args.epochs + 1):
        k = epoch % len(names)
        for name in names[k:] + names[:k]:  # a different order every epoch
            runs[name].seconds.append(train_epoch(runs[name], train.voxels, epoch))
        line = "  ".join(f"{r.seconds[-1]:.2f}s" for r in runs.values())
        print(f"epoch {epoch}: {line}", flush=True)
    return runs


def row(run: Run, ref: Run, final: dict[str, float], first: int) -> str:
    """One table row; ``first``: the index of the first search epoch."""
    steady = [a / b for a, b in zip(run.seconds[first + 1 :], ref.seconds[first + 1 :])]
    passes = [e.get("forward_passes_per_sample") for e in run.extras[first + 1 :]]
    passes_s = f"{statistics.median(passes):.1f}" if passes and None not in passes else "0"
    return (
        f"| {run.name} | {statistics.median(run.seconds[first + 1 :]):.2f} | "
        f"{statistics.median(steady):.2f}× | {run.seconds[first] / ref.seconds[first]:.1f}× | "
        f"{sum(run.seconds) / sum(ref.seconds):.2f}× | {passes_s} | {final['mse_search']:.5f} | "
        f"{final['mse_plain']:.5f} | {final['consistency']:.2f} |"
    )


def markdown(args: argparse.Namespace, rows: list[str], runs: dict[str, Run], t: float) -> str:
    """This machine's part of the section (without the heading)."""
    cont = runs[DEFAULTS].extras
    change = [e.get("pose_change_median_deg") for e in cont[args.warmup + 1 :]]
    cpu = torch.device("cpu")
    train_p, score_p = (
        resolve_precision(cpu, args.precision),
        scoring_precision(cpu, args.precision),
    )
    return "\n".join(
        [
            f"`python benchmarks/bench_continuous.py --epochs {args.epochs} --n-train "
            f"{args.n_train} --warmup {args.warmup} --precision {args.precision}`, "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
            f"{machine_line()}, torch threads {args.threads}, torch {torch.__version__}; "
            f"{t:.0f} s in all. 16³ procedural data ({args.n_train} train / {args.n_test} test), "
            f"width 16, latent 16, batch 32, Adam 2e-3 constant, training in {train_p}, "
            f"scoring in {score_p}; every variant from the "
            f"same initial weights and data order, {args.epochs} epochs interleaved, "
            f"{args.warmup} warm-up epochs (SO(3) views, no search). Search (defaults): SO(3) "
            "grid level 1 (96) → top 4 → 27 neighbours each at level 2 (204 forward passes "
            "per sample); refinement of a cached pose: its 27 neighbours at level 3. Ratios: "
            "against the augmented epoch of the same index.",
            "",
            "| variant | epoch s (median, search epochs after the first) | ratio to augmented "
            "(median) | first search epoch (all searched in full) | ratio, whole run | "
            "forward passes / sample | test MSE so3+search | test MSE so3 | consistency |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
            *rows,
            "",
            "Test MSE: protocol so3+search (each test object turned by a fixed seeded uniform "
            "rotation, resampled and thresholded at 0.5; pose by the full coarse-to-fine search "
            "with the variant's own model; x̂ = P·decode(encode(P⁻¹x)) by resampling, against "
            "the binary x) and so3 (same views, no search). Consistency: largest fraction of "
            "test objects whose canonical rotation H = R⁻¹R_true lies within 15° of one of "
            "them (1: one canonical pose for all). Median pose change between epochs "
            "(defaults variant, search epochs after the first): "
            + ", ".join("—" if c is None else f"{c:.1f}°" for c in change)
            + ".",
            "",
        ]
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-train", type=int, default=256)
    p.add_argument("--warmup", type=int, default=2, help="warm-up epochs (views, no search)")
    p.add_argument("--n-test", type=int, default=48)
    p.add_argument("--threads", type=int, default=1, help="1: stable timings on a shared machine")
    p.add_argument(
        "--precision",
        choices=("auto", "fp32", "bf16"),
        default="auto",
        help="training and scoring (auto: the default config's choice on this machine)",
    )
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    tune_allocator()
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train, test = train_test("procedural", 16, args.n_train, args.n_test, 0)
    runs = train_all(args, train)
    ref = runs[REFERENCE]
    rows = []
    for run in runs.values():
        final = final_metrics(run, test)
        print(run.name, final, flush=True)
        rows.append(row(run, ref, final, args.warmup))
    body = markdown(args, rows, runs, time.perf_counter() - t0)
    precision = resolve_precision(torch.device("cpu"), args.precision)
    show_machine_part(HEADING, INTRO, body, write=not args.no_write, suffix=f", {precision}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
