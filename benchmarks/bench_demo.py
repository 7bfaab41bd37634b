"""Time the built-in demo and write the "## Demo" section of BENCHMARKS.md.

    python benchmarks/bench_demo.py [--workers 2] [--out DIR] [--tiny] [--no-write]

Runs ``orient3d demo`` from scratch (a fresh folder: nothing is resumed) as a
subprocess, the way a user runs it, and records its wall time, each experiment's
wall time, the machine's load when it started, and the answers the demo gave.
Replaces only the "## Demo" section of BENCHMARKS.md (up to the next "## "
heading), creating it if needed.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from _machine import machine_line
from _sections import write_section

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Demo"
EXPERIMENTS = ("single_vs_all", "recover", "search_modes")


def run(out: Path, workers: int, tiny: bool) -> tuple[float, str]:
    """Run the demo CLI into an empty ``out``; its wall time and printed output."""
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-m", "orient3d", "-q", "demo", "--out", str(out)]
    cmd += ["--workers", str(workers)] + (["--tiny"] if tiny else [])
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"demo failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def experiment_seconds(out: Path) -> dict[str, float]:
    """Each experiment's wall time (summary.json ``seconds``: training to summary)."""
    times = {}
    for name in EXPERIMENTS:
        summary = json.loads((out / name / "summary.json").read_text())
        times[name] = float(summary.get("seconds", float("nan")))
    return times


def answers(out: Path) -> list[tuple[str, str]]:
    qa = []
    for name in EXPERIMENTS:
        summary = json.loads((out / name / "summary.json").read_text())
        qa += [(name, a["answer"]) for a in summary.get("answers", [])]
    return qa


def count_runs(out: Path) -> dict[str, int]:
    return {
        name: len(json.loads((out / name / "experiment.json").read_text())["runs"])
        for name in EXPERIMENTS
    }


def section(wall: float, out: Path, workers: int, tiny: bool, machine: str) -> str:
    cmd = f"orient3d demo --workers {workers}" + (" --tiny" if tiny else "")
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    runs = count_runs(out)
    lines = [
        HEADING,
        "",
        f"`python benchmarks/bench_demo.py --workers {workers}{' --tiny' if tiny else ''}` "
        f"(runs `{cmd}` from scratch), {when}, {machine} at the start (the machine is "
        f"shared), Python {platform.python_version()}, torch {torch.__version__}.",
        "",
        "| part | runs | wall time |",
        "| --- | --- | --- |",
    ]
    for name, secs in experiment_seconds(out).items():
        reused = " (reused from single_vs_all)" if name == "recover" else ""
        lines.append(f"| {name} | {runs[name]}{reused} | {secs:.0f} s |")
    lines += [f"| **whole demo** (process start to report) | | **{wall:.0f} s** |", ""]
    lines += ["The answers the demo computed:", ""]
    lines += [f"- **{name}**: {text}" for name, text in answers(out)]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="demo folder (default: a temp dir)")
    p.add_argument("--tiny", action="store_true")
    p.add_argument("--no-write", action="store_true", help="print instead of editing the file")
    args = p.parse_args()
    machine = machine_line()
    print(machine)
    with tempfile.TemporaryDirectory() as tmp:
        out = args.out or Path(tmp) / "demo"
        wall, _ = run(out, args.workers, args.tiny)
        text = section(wall, out, args.workers, args.tiny, machine)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
