"""Recover the orientation of rotated test objects with a trained run's model.

  orient3d recover RUN [--n N] [--data PATH] [--choice hard|soft]

Each test object (the run's test split, or --data's) is turned by a random
element of O (seeded by --seed, default the run's seed); the model scores all 24
elements (negative ELBO of r⁻¹·x, encoder mean) and picks one. Reports the
accuracy counted modulo the object's symmetry, the errors by angle (90°, 120°,
180°; smallest over symmetric equivalents), the mean posterior mass on the truth
and the throughput; prints a table and writes RUN/recover.json.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from orient3d import runs
from orient3d.devices import resolve_device, tune_allocator
from orient3d.evaluate import load_run
from orient3d.recover import recover, recovery_table


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run", metavar="RUN", help="run folder written by orient3d train")
    parser.add_argument("--n", type=int, help="objects to recover (default: the test split once)")
    parser.add_argument("--data", metavar="PATH", help="data source (default: the run's)")
    parser.add_argument("--choice", choices=("hard", "soft"), default="hard")
    parser.add_argument("--temperature", type=float, default=1.0, help="soft posterior T")
    parser.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    parser.add_argument("--seed", type=int, help="seed of the rotations (default: the run's)")
    parser.add_argument("--device", help="device (default: the run's train.device)")


def main(args: argparse.Namespace) -> int:
    from orient3d.train import load_data

    tune_allocator()
    cfg0 = runs.read_run_config(args.run)
    device = resolve_device(args.device or cfg0.train.device)
    cfg, model = load_run(args.run, str(device))
    if args.data:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, source=args.data))
    _, test_set = load_data(cfg)
    seed = cfg.seed if args.seed is None else args.seed
    result = recover(
        model,
        test_set,
        args.n,
        generator=torch.Generator().manual_seed(seed),
        choice=args.choice,
        temperature=args.temperature,
        precision=args.precision,
    )
    result["protocol"].update(seed=seed, data=cfg.data.source, checkpoint_run=str(args.run))
    runs.write_json(Path(args.run) / "recover.json", result)
    print(recovery_table(result))
    return 0
