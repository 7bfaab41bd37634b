"""fp32 against bf16 on this CPU, for the two passes that cost: a training step and a
pose-scoring pass. Writes this machine's part of "## Precision by machine kind".

    python benchmarks/bench_precision.py [--budget 4] [--objects 152] [--no-write]

CPUs with native bf16 (AVX512-BF16, AMX) differ in what it buys: bf16 has run at
0.9× fp32 on one and 2× on another. Each thread count runs in its own subprocess
(tuned allocator, as the CLI): the matmul peak in both precisions (2048²), then for
D = 16 and 32, fp32 and bf16 interleaved call by call, so load hits both alike:
- a training step (the training loop's own ``train._step``: default model, width 32,
  latent 32, batch 64, channels_last_3d, Adam), fp32 and bf16 from the same weights;
- a scoring pass (``score_orientations``: all 24 rotations of 8 objects at 32³, 16 at
  16³, chunk 256, the search's default, inference mode).
Then the choice the two precisions make: the shipped default model (32³) scores all
24 rotations of the shared ModelNet10 32³ test objects, each turned by a seeded
element of O, in fp32 and in bf16; the table reports how often the argmin agrees,
and how often it recovers the applied rotation modulo the object's symmetry.
Each machine kind keeps its own part of the section (``### <CPU model>``); a run
replaces only its own.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import torch

from _machine import machine_line
from _sections import EACH_PART, VOXNET, show_machine_part
from bench_train import _random_set, matmul_gflops
from orient3d.config import Config, ModelConfig, apply_overrides
from orient3d.devices import native_bf16, resolve_precision, tune_allocator
from orient3d.geometry.groups import cube_group, rotate
from orient3d.model import VAE
from orient3d.search.discrete import score_orientations, scoring_precision
from orient3d.training import loop as train
from orient3d.training.distributed import Dist
from orient3d.training.state import build_state

HEADING = "## Precision by machine kind"
INTRO = (
    "fp32 against bf16 per machine kind (`benchmarks/bench_precision.py`): samples/s "
    "of a training step and rows/s of a pose-scoring pass, interleaved call by call "
    "in one process per thread count, and whether bf16 changes the pose a model "
    "picks. " + EACH_PART
)
THREADS = sorted({1, min(2, os.cpu_count() or 1)})
SCORED = {16: 16, 32: 8}  # objects per scoring pass (× 24 rows)
O = cube_group()


def _interleaved(calls: dict[str, Callable[[], None]], budget: float) -> dict[str, float]:
    """Median seconds per call of each, alternating the order call by call, for at
    least ``budget`` seconds and 3 rounds (after one warm-up call each)."""
    for f in calls.values():
        f()
    times: dict[str, list[float]] = {k: [] for k in calls}
    t0, names = time.perf_counter(), list(calls)
    while time.perf_counter() - t0 < budget or len(times[names[0]]) < 3:
        for k in names:
            s = time.perf_counter()
            calls[k]()
            times[k].append(time.perf_counter() - s)
        names.reverse()
    return {k: statistics.median(v) for k, v in times.items()}


def _train_calls(res: int) -> dict[str, Callable[[], None]]:
    data = _random_set(64, res)
    idx = torch.arange(64)
    calls = {}
    for prec in ("fp32", "bf16"):
        cfg = apply_overrides(
            Config(), [f"data.res={res}", "train.batch_size=64", f'train.precision="{prec}"']
        )
        torch.manual_seed(0)
        st = build_state(cfg, data, torch.device("cpu"), Dist())

        def step(st: Any = st, cfg: Config = cfg) -> None:
            loss, _ = train._step(st, cfg, data.voxels, idx, 1)
            float(loss)

        calls[prec] = step
    return calls


def _score_calls(res: int) -> dict[str, Callable[[], None]]:
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=32, width=32), res)
    model.use_channels_last()
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(SCORED[res], res, res, res, generator=gen) < 0.1).float()
    calls = {}
    for prec in ("fp32", "bf16"):

        def score(prec: str = prec) -> None:
            score_orientations(model, x, O, precision=prec)

        calls[prec] = score
    return calls


def worker(threads: int, budget: float) -> dict[str, Any]:
    tune_allocator()
    torch.set_num_threads(threads)
    out: dict[str, Any] = {
        "threads": threads,
        "peak": {
            "fp32": matmul_gflops(dtype=torch.float32),
            "bf16": matmul_gflops(dtype=torch.bfloat16),
        },
        "rows": [],
    }
    for res in (16, 32):
        for kind, calls, per_call in (
            ("training step", _train_calls(res), 64),
            ("scoring pass", _score_calls(res), 24 * SCORED[res]),
        ):
            sec = _interleaved(calls, budget)
            out["rows"].append(
                {"res": res, "kind": kind, "per_call": per_call}
                | {p: per_call / s for p, s in sec.items()}
            )
            print(threads, out["rows"][-1], file=sys.stderr)
    return out


def agreement(n_objects: int, threads: int) -> dict[str, Any]:
    """fp32 and bf16 choices of the default model on rotated ModelNet10 32³ objects."""
    from orient3d.data.sources import train_test
    from orient3d.orient.load import load_model

    torch.set_num_threads(threads)
    om = load_model()
    test = train_test(VOXNET, om.res, seed=0)[1]
    n = min(n_objects, len(test.voxels)) if n_objects else len(test.voxels)
    x = test.voxels[:n].float()
    applied = torch.randint(0, len(O), (n,), generator=torch.Generator().manual_seed(0))
    shown = rotate(x, O, applied)
    picks, secs = {}, {}
    for p in ("fp32", "bf16"):
        t0 = time.perf_counter()
        picks[p] = score_orientations(om.model, shown, O, precision=p).argmin(1)
        secs[p] = time.perf_counter() - t0
    # the pick r undoes the applied g when r⁻¹g fixes the object (its symmetry)
    stab = test.stabilizers[:n]
    right = {
        p: int(stab[torch.arange(n), O.table[O.inverse[picks[p]], applied]].sum()) for p in picks
    }
    return {
        "n": n,
        "agree": int((picks["fp32"] == picks["bf16"]).sum()),
        "recovered": right,
        "seconds": secs,
        "threads": threads,
    }


def render(runs: list[dict[str, Any]], agr: dict[str, Any], args: Any) -> str:
    cpu = torch.device("cpu")
    peaks = "; ".join(
        f"{r['threads']} thread{'s' * (r['threads'] > 1)}: fp32 {r['peak']['fp32']:.0f}, "
        f"bf16 {r['peak']['bf16']:.0f} GFLOP/s"
        for r in runs
    )
    lines = [
        f"`python benchmarks/bench_precision.py --budget {args.budget:g} --objects "
        f"{args.objects}`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{machine_line()} (torch CPU capability {torch.backends.cpu.get_cpu_capability()}, "
        f"native bf16: {native_bf16(cpu)}), torch {torch.__version__}. Matmul peak (2048²): "
        f"{peaks}.",
        "",
        "| D | pass | threads | per call | fp32 per s | bf16 per s | bf16 / fp32 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    ratio: dict[str, list[float]] = {"training step": [], "scoring pass": []}
    for run in runs:
        for r in run["rows"]:
            unit = "samples" if r["kind"] == "training step" else "rows"
            ratio[r["kind"]].append(r["bf16"] / r["fp32"])
            lines.append(
                f"| {r['res']} | {r['kind']} | {run['threads']} | {r['per_call']} {unit} "
                f"| {r['fp32']:.0f} | {r['bf16']:.0f} | {r['bf16'] / r['fp32']:.2f}× |"
            )
    n = agr["n"]
    rec = agr["recovered"]
    lines += [
        "",
        f"Choices (the shipped default model, {n} ModelNet10 32³ test objects, each turned "
        f"by a seeded element of O, all 24 scored, {agr['threads']} threads): bf16 picks "
        f"fp32's rotation for {agr['agree']} of {n}; the applied rotation is recovered "
        f"(modulo symmetry) for {rec['fp32']} in fp32 and {rec['bf16']} in bf16; "
        f"{agr['seconds']['fp32']:.1f} s against {agr['seconds']['bf16']:.1f} s.",
        "",
    ]
    auto_train = resolve_precision(cpu, "auto")
    auto_score = scoring_precision(cpu, "auto")
    for kind, auto in (("training step", auto_train), ("scoring pass", auto_score)):
        med = statistics.median(ratio[kind])
        faster = "bf16" if med > 1 else "fp32"
        verdict = "the faster one" if auto == faster else f"not the faster one ({faster} is)"
        lines.append(
            f"- {kind}: bf16 / fp32 median {med:.2f}× (range {min(ratio[kind]):.2f}–"
            f"{max(ratio[kind]):.2f}×); `precision = auto` picks {auto} here: {verdict}."
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--worker", type=int, metavar="THREADS", help=argparse.SUPPRESS)
    p.add_argument("--budget", type=float, default=4.0, help="seconds per pass and D")
    p.add_argument("--objects", type=int, default=152, help="test objects scored (0: all)")
    p.add_argument("--no-write", action="store_true", help="print instead of editing BENCHMARKS.md")
    args = p.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.budget)))
        return
    if not VOXNET.is_file():
        sys.exit(f"{VOXNET}: missing; the choice comparison scores these ModelNet10 grids")
    runs = []
    for t in THREADS:
        cmd = [sys.executable, __file__, "--worker", str(t), "--budget", str(args.budget)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    body = render(runs, agreement(args.objects, max(THREADS)), args)
    show_machine_part(HEADING, INTRO, body, write=not args.no_write)


if __name__ == "__main__":
    main()
