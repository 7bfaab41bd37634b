"""Start-up time of the command line. Writes "## Start-up" in BENCHMARKS.md.

    python benchmarks/bench_startup.py [--repeats 9] [--baseline SRC] [--no-write]

Each case is a fresh ``python -m orient3d ...`` process; the cases are
interleaved over the repeats and medians reported, next to ``python -c "import
torch"`` measured the same way: wall time, and the process's CPU time (user +
system), which a busy machine disturbs far less. Help and argument errors should answer without
torch; a command reaching its work (each probe below fails right after its
imports, on a missing file) should cost at most ``import torch`` + 0.5 s.
``--baseline SRC`` times every case a second time with another version's
``src`` folder first on ``PYTHONPATH`` (e.g. from ``git archive``), interleaved.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine_line
from _sections import write_section

HEADING = "## Start-up"


def cases(tmp: Path) -> dict[str, tuple[list[str], int]]:
    """name -> (argv after ``python``, the exit status expected)."""
    run = tmp / "run"  # a run folder with a config and no checkpoint
    run.mkdir(exist_ok=True)
    (run / "config.toml").write_text("")
    (tmp / "empty").mkdir(exist_ok=True)
    cli = ["-m", "orient3d"]
    missing = str(tmp / "missing.npz")
    return {
        'python -c "import torch"': (["-c", "import torch"], 0),
        "orient3d --help": ([*cli, "--help"], 0),
        "orient3d train --help": ([*cli, "train", "--help"], 0),
        "argument error (orient3d evaluate)": ([*cli, "evaluate"], 2),
        "config error (--train.epochs=x)": ([*cli, "train", "--out", "x", "--train.epochs=x"], 2),
        "train, to loading the data": (
            [*cli, "train", "--out", str(tmp / "t"), f"--data.source={missing}", "--force"],
            2,
        ),
        "evaluate, to loading the model": ([*cli, "evaluate", str(run)], 2),
        "recover, to loading the model": ([*cli, "recover", str(run)], 2),
        "experiment, to reading its config": (
            [*cli, "experiment", str(tmp / "missing.toml"), "--out", str(tmp / "e")],
            2,
        ),
        "report, to reading the folder": ([*cli, "report", str(tmp / "empty")], 2),
        "compare, to reading the folder": ([*cli, "compare", str(tmp / "empty")], 2),
        "data preview, to loading the data": (
            [*cli, "data", "preview", "--source", missing, "--out", str(tmp / "p.png")],
            2,
        ),
    }


def _cpu_children() -> float:
    use = resource.getrusage(resource.RUSAGE_CHILDREN)
    return use.ru_utime + use.ru_stime


Times = dict[str, dict[str, list[tuple[float, float]]]]  # version -> case -> (wall, cpu)


def measure(repeats: int, baseline: Path | None) -> Times:
    """version ("this", "baseline") -> case -> (wall, CPU) seconds of each repeat."""
    versions = {"this": os.environ.get("PYTHONPATH", "")}
    if baseline is not None:
        versions["baseline"] = os.pathsep.join(filter(None, [str(baseline), versions["this"]]))
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        todo = cases(tmp)
        times: Times = {v: {name: [] for name in todo} for v in versions}
        for rep in range(repeats):
            for name, (argv, expected) in todo.items():
                for version, path in versions.items():
                    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
                    t0, c0 = time.perf_counter(), _cpu_children()
                    proc = subprocess.run(
                        [sys.executable, *argv], capture_output=True, text=True, cwd=tmp, env=env
                    )
                    times[version][name].append((time.perf_counter() - t0, _cpu_children() - c0))
                    if proc.returncode != expected:
                        raise SystemExit(
                            f"{version}: {name}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
                        )
            print(f"repeat {rep + 1}/{repeats}", file=sys.stderr, flush=True)
    return times


def _medians(values: list[tuple[float, float]]) -> tuple[float, float]:
    return statistics.median(v[0] for v in values), statistics.median(v[1] for v in values)


def section(times: Times, cmd: str, machine: str) -> str:
    this, base = times["this"], times.get("baseline")
    med = {k: _medians(v) for k, v in this.items()}
    _, torch_cpu = med['python -c "import torch"']
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        HEADING,
        "",
        f"`{cmd}`, {when}, {machine} at the start (the machine is shared); Python "
        f"{sys.version.split()[0]}. A fresh process per case, cases interleaved, medians of "
        f"{len(next(iter(this.values())))}: wall time (its min–max in brackets) and CPU time "
        "(user + system; steadier on a busy machine). The command probes stop at their "
        "first error, right after the command's imports.",
        "",
        "| case | wall s | wall min–max | CPU s | CPU − import torch |"
        + (" baseline wall s | baseline CPU s | CPU this / baseline |" if base else ""),
        "| --- | --- | --- | --- | --- |" + (" --- | --- | --- |" if base else ""),
    ]
    for name, values in this.items():
        wall, cpu = med[name]
        walls = [v[0] for v in values]
        diff = "—" if name.startswith("python") else f"{cpu - torch_cpu:+.2f} s"
        row = f"| {name} | {wall:.2f} | {min(walls):.2f}–{max(walls):.2f} | {cpu:.2f} | {diff} |"
        if base:
            bwall, bcpu = _medians(base[name])
            row += f" {bwall:.2f} | {bcpu:.2f} | {cpu / bcpu:.2f}× |"
        lines.append(row)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--baseline", type=Path, help="another version's src folder, timed too")
    ap.add_argument("--no-write", action="store_true", help="print instead of writing")
    a = ap.parse_args()
    machine = machine_line()
    print(f"CPU: {machine}", flush=True)
    times = measure(a.repeats, a.baseline)
    cmd = "python benchmarks/bench_startup.py" + "".join(
        f" {w}" for w in sys.argv[1:] if w != "--no-write"
    )
    text = section(times, cmd, machine)
    print(text)
    if not a.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
