"""Training speed, FLOPs and memory; bf16 vs fp32 quality. Writes "## Training" in BENCHMARKS.md.

    python benchmarks/bench_train.py [--repeats 3] [--budget 3] [--total 200] [--no-write]

Each variant (D = 16 and 32, batch 64, Z = 32, channels_last_3d; fp32 and bf16,
2 threads and 1) runs in its own subprocess (so ``ru_maxrss``
is its own peak), with the tuned allocator the CLI uses, and measures the matmul
peak (2048², in the variant's precision: fp32, or bf16 for the bf16 rows) right
before its training steps. Variants are interleaved
over the repeats; medians are reported. FLOPs of one forward+backward step come from
``torch.utils.flop_counter.FlopCounterMode``. Then two short runs with the same
seed, fp32 and bf16, compare the test MSE.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from _machine import machine_line
from _sections import EACH_PART, show_machine_part
from orient3d.config import Config, apply_overrides
from orient3d.data import VoxelSet
from orient3d.devices import bf16_matmul_speedup, native_bf16, resolve_precision, tune_allocator
from orient3d.training import loop as train
from orient3d.training.distributed import Dist
from orient3d.training.state import build_state

ROOT = Path(__file__).resolve().parents[1]
INTRO = (
    "Training throughput of the default model against the matmul peak of the same "
    "process, fp32 and bf16 (`benchmarks/bench_train.py`). " + EACH_PART
)
THREADS = min(2, os.cpu_count() or 1)
# (D, precision, torch threads)
VARIANTS = [
    (16, "fp32", THREADS),
    (16, "fp32", 1),
    (16, "bf16", THREADS),
    (16, "bf16", 1),
    (32, "fp32", THREADS),
    (32, "fp32", 1),
    (32, "bf16", THREADS),
    (32, "bf16", 1),
]


def matmul_gflops(n: int = 2048, seconds: float = 0.5, dtype: torch.dtype = torch.float32) -> float:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or reps < 2:
        a @ b
        reps += 1
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e9


def _random_set(n: int, res: int) -> VoxelSet:
    gen = torch.Generator().manual_seed(0)
    vox = (torch.rand(n, res, res, res, generator=gen) < 0.1).to(torch.uint8)
    return VoxelSet(
        vox,
        torch.zeros(n, dtype=torch.long),
        ("r",),
        tuple(map(str, range(n))),
        torch.zeros(n, 24, dtype=torch.bool),
        "random",
    )


def worker(res: int, precision: str, threads: int, budget: float) -> dict[str, Any]:
    """One variant in this process: matmul peak, FLOPs per step, samples/s, peak RSS."""
    tune_allocator()
    torch.set_num_threads(threads)
    peak = matmul_gflops(dtype=torch.bfloat16 if precision == "bf16" else torch.float32)
    cfg = apply_overrides(
        Config(),
        [f"data.res={res}", "train.batch_size=64", f'train.precision="{precision}"'],
    )
    data = _random_set(64, res)
    st = build_state(cfg, data, torch.device("cpu"), Dist())  # one process
    idx = torch.arange(64)
    t0 = time.perf_counter()
    with FlopCounterMode(display=False) as counter:
        train._step(st, cfg, data.voxels, idx, 1)  # also the warm-up step
    steps, seconds = 1, time.perf_counter() - t0
    if seconds < budget:  # else (emulated bf16 at 32³: minutes a step) time that one step
        steps, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < budget or steps < 1:
            loss, _ = train._step(st, cfg, data.voxels, idx, 1)
            float(loss)
            steps += 1
        seconds = time.perf_counter() - t0
    return {
        "res": res,
        "precision": precision,
        "threads": threads,
        "peak_gflops": peak,
        "flops_step": counter.get_total_flops(),
        "samples_per_s": 64 * steps / seconds,
        "gflops": counter.get_total_flops() * steps / seconds / 1e9,
        "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def run_variants(repeats: int, budget: float, total: float) -> list[dict[str, Any]]:
    """Interleaved repeats; after the first round, a variant whose last run would
    overrun ``total`` seconds is not repeated."""
    rows: list[dict[str, Any]] = []
    cost: dict[tuple[int, str, int], float] = {}
    start = time.perf_counter()
    for r in range(repeats):
        order = VARIANTS[r % len(VARIANTS) :] + VARIANTS[: r % len(VARIANTS)]
        for v in order:
            if r > 0 and time.perf_counter() - start + cost[v] > total:
                continue
            t0 = time.perf_counter()
            cmd = [sys.executable, __file__, "--worker", *map(str, v), "--budget", str(budget)]
            out = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            cost[v] = time.perf_counter() - t0
            print(rows[-1], file=sys.stderr)
    return rows


def quality(epochs: int) -> dict[str, dict[str, float]]:
    """Same seed, fp32 vs bf16: final test MSE and wall time of a short run."""
    out = {}
    for prec in ("fp32", "bf16"):
        cfg = apply_overrides(
            Config(),
            [
                "data.n_train=192",
                "data.n_test=64",
                "model.width=8",
                "train.batch_size=16",
                f"train.epochs={epochs}",
                "train.lr=2e-3",
                f'train.precision="{prec}"',
                "train.progress=false",
                "train.threads=1",  # faster than 2 on a shared machine (see the table)
            ],
        )
        t0 = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            res = train.train(cfg, tmp)
        out[prec] = {"test_mse": res["test_mse"], "seconds": time.perf_counter() - t0}
        print(prec, out[prec], file=sys.stderr)
    return out


def _of(rows: list[dict[str, Any]], v: tuple[int, str, int]) -> list[dict[str, Any]]:
    return [r for r in rows if (r["res"], r["precision"], r["threads"]) == v]


def _median(rows: list[dict[str, Any]], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def render(rows: list[dict[str, Any]], q: dict[str, dict[str, float]], args: Any) -> str:
    kinds = sorted({(r["precision"], r["threads"]) for r in rows}, key=lambda k: (k[0], -k[1]))
    peak = {k: _median([r for r in rows if (r["precision"], r["threads"]) == k], "peak_gflops")
            for k in kinds}  # fmt: skip
    peaks = ", ".join(f"{p} {peak[p, t]:.0f} GFLOP/s ({t} thread{'s' * (t > 1)})" for p, t in kinds)
    lines = [
        f"`python benchmarks/bench_train.py --repeats {args.repeats} --budget {args.budget:g} "
        f"--total {args.total:g}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{machine_line()} (torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}), shared with other jobs, torch "
        f"{torch.__version__}, tuned allocator (mallopt), the "
        "training loop's own step (`train._step`: rotation-free single mode, Adam, clipping), "
        "default model (width 32), batch 64, Z = 32, channels_last_3d. Medians of up to "
        f"{args.repeats} interleaved repeats (n), one subprocess each, at least {args.budget:g} s "
        "of timed steps after one warm-up step (a variant slower than that is timed on its one "
        f"step). Matmul peak (2048², in the row's precision, measured in each subprocess "
        f"right before its steps; 'of peak' is the median of each run's own ratio): {peaks}.",
        "",
        "| D | precision | threads | GFLOP/step (fwd+bwd) | samples/s | GFLOP/s | of peak "
        "| peak RSS | n |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for v in VARIANTS:
        sel = _of(rows, v)
        if not sel:
            continue
        ratio = statistics.median(r["gflops"] / r["peak_gflops"] for r in sel)
        lines.append(
            f"| {v[0]} | {v[1]} | {v[2]} | {_median(sel, 'flops_step') / 1e9:.2f} "
            f"| {_median(sel, 'samples_per_s'):.1f} | {_median(sel, 'gflops'):.1f} | {ratio:.0%} "
            f"| {_median(sel, 'maxrss_mib'):.0f} MiB | {len(sel)} |"
        )
    fp32 = [r["peak_gflops"] for r in rows if r["precision"] == "fp32"] or [math.nan]
    lo, hi = min(fp32), max(fp32)
    lines += [
        "",
        f"The machine's load varied during the run (fp32 matmul peak per subprocess "
        f"{lo:.0f}–{hi:.0f} "
        "GFLOP/s): read samples/s as medians over that, and 'of peak' as the efficiency. When "
        "other jobs keep both cores busy, 1 thread can beat 2 (OpenMP threads wait on each "
        "other): set `train.threads=1` on a shared machine, or run two 1-thread jobs side by side.",
    ]
    f32, b16 = q["fp32"], q["bf16"]
    rel = abs(b16["test_mse"] - f32["test_mse"]) / f32["test_mse"]
    lines += [
        "",
        f"bf16 vs fp32, same seed (procedural 16³, 192 train / 64 test, width 8, batch 16, "
        f"{args.epochs} epochs, 1 thread): test MSE {f32['test_mse']:.5f} "
        f"(fp32, {f32['seconds']:.0f} s) vs {b16['test_mse']:.5f} (bf16, {b16['seconds']:.0f} s), "
        f"a {rel:.2%} difference.",
        "",
        _verdict(rel, _bf16_speed(rows)),
        "",
    ]
    return "\n".join(lines) + "\n"


def _bf16_speed(rows: list[dict[str, Any]]) -> dict[int, float]:
    """Per D: bf16 training samples/s over fp32's, both at the most threads measured."""
    out = {}
    for res in sorted({v[0] for v in VARIANTS}):
        b16, f32 = _of(rows, (res, "bf16", THREADS)), _of(rows, (res, "fp32", THREADS))
        if b16 and f32:
            out[res] = _median(b16, "samples_per_s") / _median(f32, "samples_per_s")
    return out


def _verdict(rel: float, speed: dict[int, float]) -> str:
    cpu = torch.device("cpu")
    auto = resolve_precision(cpu, "auto")
    measured = ", ".join(f"{r:.2f}× fp32's samples/s at {d}³" for d, r in speed.items())
    here = (
        f"This CPU ({torch.backends.cpu.get_cpu_capability()}): native bf16 "
        f"{'yes' if native_bf16(cpu) else 'no'}"
        + (f", bf16 matmul at {bf16_matmul_speedup():.2f}× fp32's" if native_bf16(cpu) else "")
        + f", so auto means {auto} here."
    )
    if speed:
        here += f" Measured above, bf16 trained at {measured} ({THREADS} threads)."
        faster = "bf16" if statistics.median(speed.values()) > 1 else "fp32"
        if faster != auto:
            here += f" Here auto's choice is the slower one: set `train.precision={faster}`."
    rule = (
        "bf16 where it pays (CUDA with bf16; a CPU with native bf16 whose bf16 matmul runs "
        "at least twice fp32's, timed once per process: `orient3d.devices.bf16_pays`), "
        "fp32 elsewhere. "
    )
    if rel < 0.01:
        return (
            "bf16 moves the test MSE by less than 1%, so `train.precision` defaults to "
            "`auto`: " + rule + here
        )
    return (
        f"bf16 moves the test MSE by {rel:.1%} (over 1%): use `train.precision=fp32` for "
        "comparisons; `auto` still picks " + rule + here
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--worker", nargs=3, metavar=("RES", "PRECISION", "THREADS"), help=argparse.SUPPRESS
    )
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget", type=float, default=3.0, help="seconds of timed steps per variant")
    p.add_argument("--total", type=float, default=200.0, help="seconds for all speed repeats")
    p.add_argument("--epochs", type=int, default=4, help="epochs of the bf16/fp32 quality runs")
    p.add_argument("--no-write", action="store_true", help="print instead of editing BENCHMARKS.md")
    args = p.parse_args()
    if args.worker:
        res, prec, threads = args.worker
        print(json.dumps(worker(int(res), prec, int(threads), args.budget)))
        return
    rows = run_variants(args.repeats, args.budget, args.total)
    text = render(rows, quality(args.epochs), args)
    show_machine_part("## Training", INTRO, text, write=not args.no_write)


if __name__ == "__main__":
    main()
