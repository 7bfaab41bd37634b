"""Run the built-in demo: both questions answered on procedural shapes at 16³.

  orient3d demo [--out DIR] [--workers N] [--tiny] [--key=value ...]

Trains and measures three small experiments (one orientation vs all 24 per latent
size; orientation recovery by single-orientation models; training with orientation
search), a few minutes on a laptop CPU, and writes DIR/report.html (default
DIR: runs/demo). Running it again resumes where it stopped. --tiny runs a much
smaller version (a smoke test, under a minute) whose numbers mean little.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from orient3d.cli.experiment import print_progress
from orient3d.errors import ConfigError


def add_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", metavar="DIR", default="runs/demo", help="demo folder")
    parser.add_argument(
        "--workers", type=int, default=2, help="runs trained side by side (default 2)"
    )
    parser.add_argument("--tiny", action="store_true", help="a tiny smoke-test version")
    parser.set_defaults(overrides=[], _accepts_overrides=True)


def main(args: argparse.Namespace) -> int:
    from orient3d.experiments.demo import run_demo

    if args.workers < 1:
        raise ConfigError(f"--workers: must be >= 1, got {args.workers}")
    res = run_demo(
        Path(args.out),
        tiny=args.tiny,
        workers=args.workers,
        overrides=args.overrides,
        progress=print_progress,
    )
    for item in res["answers"]:
        print(f"\n{item['question']}\n  {item['answer']}")
    secs = res["seconds"]
    print("\n" + ", ".join(f"{k} {v:.0f} s" for k, v in secs.items()))
    print(f"report: {res['report']}")
    return 0
