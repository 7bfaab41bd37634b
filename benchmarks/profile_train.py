"""Where a training step's time goes. Writes "## Training profile" in BENCHMARKS.md.

    python benchmarks/profile_train.py [--steps 5] [--threads 2] [--precision fp32] [--no-write]

For the default model (width 32, batch 64, Z = 32, channels_last_3d, fp32 or bf16
autocast) at D = 16 and 32, on the training loop's own step (as ``bench_train.py``):

1. ``torch.profiler`` over ``--steps`` steps after two warm-up steps: the share of
   the CPU time in convolutions (forward and backward), BatchNorm, ReLU, copies,
   the optimizer step and the rest, grouped from the ops' self times.
2. Each convolution layer on its own, forward and backward (the input gradient
   too, except for the first layer, whose input needs none in training): its
   median time and GFLOP/s, against the matmul peak of the same process in the same
   precision.

It explains ``bench_train.py``'s "of peak" column; it sets no target. Each machine kind
and precision keeps its own part of the section; a run replaces only its own.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn
from torch.profiler import ProfilerActivity, profile
from torch.utils.flop_counter import FlopCounterMode

from _machine import machine_line
from _sections import show_machine_part
from bench_train import _random_set, matmul_gflops
from orient3d.config import Config, apply_overrides
from orient3d.devices import autocast, tune_allocator
from orient3d.model import VAE
from orient3d.training import loop as train
from orient3d.training.distributed import Dist
from orient3d.training.state import build_state

# op-name prefixes (after "aten::") of each group; the first group that matches wins.
# Ops run inside the optimizer's step or zero_grad count as "optimizer (Adam)".
GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("convolution", ("conv", "_convolution", "mkldnn_convolution")),
    ("BatchNorm", ("native_batch_norm", "batch_norm", "_batch_norm")),
    ("ReLU", ("threshold_backward", "relu", "clamp_min")),
    ("copies", ("copy_", "_to_copy", "clone", "contiguous")),
)
OPTIMIZER = "optimizer (Adam)"
NAMES = (*(g for g, _ in GROUPS), OPTIMIZER, "other")


def group_of(name: str, in_optimizer: bool = False) -> str:
    """The group of an op: :data:`OPTIMIZER` inside the optimizer, else the first of
    :data:`GROUPS` with a prefix of the name (without ``aten::``), else "other"."""
    if in_optimizer:
        return OPTIMIZER
    op = name.removeprefix("aten::")
    return next((g for g, prefixes in GROUPS if op.startswith(prefixes)), "other")


def shares(times: dict[str, float]) -> dict[str, float]:
    """Each group's share (in :data:`NAMES` order) of the total of ``times``."""
    total = sum(times.values()) or 1.0
    return {g: times.get(g, 0.0) / total for g in NAMES}


def _in_optimizer(event: Any) -> bool:
    while event is not None:
        if event.name.startswith("Optimizer."):
            return True
        event = event.cpu_parent
    return False


def profile_steps(res: int, steps: int, precision: str = "fp32") -> dict[str, float]:
    """Self CPU time (µs) per group over ``steps`` training steps at ``res``³."""
    cfg = apply_overrides(
        Config(), [f"data.res={res}", "train.batch_size=64", f'train.precision="{precision}"']
    )
    data = _random_set(64, res)
    st = build_state(cfg, data, torch.device("cpu"), Dist())
    idx = torch.arange(64)
    for _ in range(2):
        train._step(st, cfg, data.voxels, idx, 1)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            float(train._step(st, cfg, data.voxels, idx, 1)[0])
    times: dict[str, float] = {}
    for e in prof.events():
        if e.name.startswith(("Optimizer.", "ProfilerStep")):  # ranges: their ops count
            continue
        g = group_of(e.name, _in_optimizer(e.cpu_parent))
        times[g] = times.get(g, 0.0) + e.self_cpu_time_total
    return times


def _timed(fn: Callable[[], Any], reps: int) -> tuple[float, int]:
    fn()
    with FlopCounterMode(display=False) as counter:
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), counter.get_total_flops()


def layer_rows(res: int, reps: int, precision: str = "fp32") -> list[dict[str, Any]]:
    """Each conv layer of the default model at ``res``³: shape, median ms, GFLOP/s
    (under the training step's autocast for ``precision``)."""
    cpu = torch.device("cpu")
    cfg = apply_overrides(Config(), [f"data.res={res}"])
    vae = VAE(cfg.model, res).use_channels_last(True)
    fmt = torch.channels_last_3d
    rows: list[dict[str, Any]] = []

    def run(part: str, seq: nn.Sequential, h: Tensor) -> None:
        for i, m in enumerate(seq):
            if not isinstance(m, nn.BatchNorm3d | nn.ReLU):
                x = h.detach().requires_grad_(not (part == "encoder" and i == 0))

                def step(m: nn.Module = m, x: Tensor = x) -> None:
                    with autocast(cpu, precision):
                        y = m(x).float().sum()
                    y.backward()

                t, flops = _timed(step, reps)
                rows.append(
                    {
                        "part": part,
                        "layer": type(m).__name__,
                        "input": tuple(h.shape[1:]),
                        "ms": t * 1e3,
                        "gflops": flops / t / 1e9,
                    }
                )
            with torch.no_grad():
                h = m(h)

    x = (torch.rand(64, 1, res, res, res) < 0.1).float().contiguous(memory_format=fmt)
    run("encoder", vae.encoder, x)
    b = vae.bottom
    with torch.no_grad():
        top = vae.from_z(torch.randn(64, cfg.model.latent)).view(-1, vae.top_channels, b, b, b)
    run("decoder", vae.decoder, top.relu().contiguous(memory_format=fmt))
    return rows


INTRO = (
    "Where a training step's time goes (`benchmarks/profile_train.py`): the share of "
    "each op group, and each convolution layer's speed against the matmul peak in the "
    "same precision. Each part below is one machine kind and precision; a run replaces "
    "only its own part."
)


def render(results: dict[int, dict[str, Any]], args: Any, peak: float) -> str:
    lines = [
        f"`python benchmarks/profile_train.py --steps {args.steps} --threads {args.threads} "
        f"--precision {args.precision}`, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {machine_line()}, "
        f"torch {torch.__version__}, {args.threads} thread(s), {args.precision}, tuned "
        f"allocator; {args.precision} matmul peak (2048²) {peak:.0f} GFLOP/s. The default "
        "model (width 32, batch 64, "
        'Z = 32, channels_last_3d) on the training loop\'s own step, as in "Training".',
        "",
        f"Share of the CPU time of {args.steps} profiled steps (`torch.profiler`, ops' self "
        "times grouped by name):",
        "",
        "| D | " + " | ".join(NAMES) + " |",
        "| --- | " + " | ".join("---" for _ in NAMES) + " |",
    ]
    for res, r in results.items():
        cells = " | ".join(f"{100 * v:.0f}%" for v in r["shares"].values())
        lines.append(f"| {res} | {cells} |")
    lines += [
        "",
        "Each convolution layer alone, forward and backward (the first layer without an "
        "input gradient, as in training), median of repeated calls:",
        "",
        "| D | part | layer | input (C, d, d, d) | ms | GFLOP/s | of peak |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for res, r in results.items():
        for row in r["layers"]:
            lines.append(
                f"| {res} | {row['part']} | {row['layer']} | {row['input']} | "
                f"{row['ms']:.1f} | {row['gflops']:.0f} | {100 * row['gflops'] / peak:.0f}% |"
            )
    lines += [
        "",
        "The step's efficiency in \"Training\" is the convolutions' own (the rows above) "
        "diluted by the other groups' time, which adds FLOPs the count barely sees. "
        + conv_ceiling(results, peak),
    ]
    return "\n".join(lines) + "\n"


def conv_ceiling(results: dict[int, dict[str, Any]], peak: float) -> str:
    """A sentence on the ceiling the convolutions alone put on the step's efficiency:
    all layers' FLOPs over all layers' times, as if every other op cost nothing."""
    parts = []
    for res, r in results.items():
        seconds = sum(row["ms"] for row in r["layers"]) / 1e3
        gflop = sum(row["gflops"] * row["ms"] / 1e3 for row in r["layers"])
        parts.append(
            f"{res}³: {gflop:.1f} GFLOP in {1e3 * seconds:.0f} ms, {gflop / seconds:.0f} GFLOP/s, "
            f"{100 * gflop / seconds / peak:.0f}% of peak"
        )
    return (
        "The convolution layers alone, at the times above, would run a step at "
        + "; ".join(parts)
        + ": the most the step can reach with the convolutions as they are, were "
        "BatchNorm, ReLU, copies and the optimizer free."
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5, help="profiled training steps per size")
    p.add_argument("--reps", type=int, default=8, help="timed calls per layer")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--res", type=int, nargs="+", default=[16, 32])
    p.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    p.add_argument("--no-write", action="store_true", help="print instead of editing BENCHMARKS.md")
    args = p.parse_args()
    tune_allocator()
    torch.set_num_threads(args.threads)
    print(machine_line(), flush=True)
    peak = matmul_gflops(dtype=torch.bfloat16 if args.precision == "bf16" else torch.float32)
    results = {
        res: {
            "shares": shares(profile_steps(res, args.steps, args.precision)),
            "layers": layer_rows(res, args.reps, args.precision),
        }
        for res in args.res
    }
    text = render(results, args, peak)
    show_machine_part(
        "## Training profile", INTRO, text, write=not args.no_write, suffix=f", {args.precision}"
    )


if __name__ == "__main__":
    main()
