"""Kill-and-resume matrix and the reliability cases of the test suite: "## Reliability".

    python benchmarks/bench_reliability.py [--modes single augmented search]
        [--kill-points 5] [--epochs 4] [--no-write]

1. For each mode and kill point, starts ``orient3d train`` as a subprocess (the
   tiny config below, one seed, one thread), sends it SIGKILL at the kill point,
   runs ``orient3d train --resume RUN`` to the end, and compares the resumed
   ``metrics.jsonl`` and ``results.json`` with those of an uninterrupted run of the
   same config, leaving out wall-clock fields (:data:`TIMING`). A cell reads
   "identical", or names the first differing key with both values. It also checks
   that the resumed ``metrics.jsonl`` holds each epoch exactly once. The kill
   points are found by watching the run folder (polled every millisecond): the
   lines of ``metrics.jsonl``, the replacement (new inode) of ``checkpoints/best.pt``
   and ``checkpoints/last.pt`` (the loop appends an epoch's line first, then writes
   best.pt if the epoch is the best, then last.pt), and ``results.json``.
2. Collects the whole test suite (``pytest --collect-only``, slow tests included,
   each parametrized case counted) and maps every test to a reliability category
   by the keyword table :data:`CATEGORIES`; tests that match no keyword are not
   counted.

Replaces only the "## Reliability" section of BENCHMARKS.md (up to the next "## "
heading), creating it if needed.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from _machine import cpu_flags
from _sections import write_section

ROOT = Path(__file__).resolve().parents[1]
HEADING = "## Reliability"
MODES = ("single", "augmented", "search")
TINY = [
    "--seed=0",
    "--data.res=16",
    "--data.n_train=40",
    "--data.n_test=8",
    "--model.width=4",
    "--model.latent=4",
    "--train.batch_size=8",
    "--train.threads=1",
    "--train.progress=false",
]
MODE_ARGS = {
    "single": ["configs/single.toml"],
    "augmented": ["configs/augmented.toml"],
    "search": ["configs/search.toml", "--search.warmup_epochs=1"],
}
# Wall-clock fields, left out of every comparison (at any depth of the JSON).
TIMING = re.compile(r"(^|_)(seconds|time|wall|elapsed)(_|$)|_per_s$")
POLL_S = 0.001

# Ordered: a test counts in the first category with a keyword that its function
# name (lower case, parametrization left out) contains. Chosen by reading the tests:
# "nan" and "mesh" are not keywords because the NaN/mesh file cases are already
# matched by "bad_file"/"bad_vertices", while test_nan_loss_* (a diverging loss) and
# test_mesh_is_solid_* (a correct mesh) are no bad-file cases; plain "config" would
# match tests of the shipped configs, so bad config lists the refusing tests' words.
CATEGORIES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("concurrency", ("lock", "second_writer", "running_folder", "concurren")),
    ("disk full", ("full_disk", "disk", "no_space")),
    ("permissions", ("permission", "umask", "unwritable")),
    (
        "bad config",
        (
            "bad_overrides",
            "bad_files_name_the_file",  # test_config: broken TOML config files
            "config_error",
            "changed_config",
            "command_line_mistakes",
            "unknown_args",
            "infinite_lr",
            "bad_specs",
            "unknown_kind",
            "rejects_bad_values",
            "refused_before_training",
            "refuses_two_variants",
            "unknown_class",
            "bad_sizes",
            "must_be_an_experiment_folder",
            "refused_unless_forced",
            "refuses_non_empty",
        ),
    ),
    (
        "bad files",
        (
            "bad_file",
            "bad_vertices",
            "corrupt",
            "broken_runs",
            "missing_source",
            "missing_run",
            "without_data_files",
            "tiny_grid",
            "non_run",
            "load_run_errors",
            "roundtrip_and_errors",  # test_rundir_runs: a garbage checkpoint file
        ),
    ),
    (
        "kills",
        (
            "kill",
            "interrupt",
            "orphan",
            "resume",
            "torn",
            "gap",
            "failed_write",
            "unfinished",
        ),
    ),
)


@dataclass(frozen=True)
class KillPoint:
    name: str
    what: str
    # (events so far, seconds since start, mid-epoch delay) -> kill now?
    due: Callable[[list[tuple[float, str, int]], float, float], bool]


def _after(events: list[tuple[float, str, int]], kind: str, epoch: int) -> float | None:
    """When ``kind`` ("line", "best", "last", "results") first happened at ``epoch``."""
    for t, k, e in events:
        if k == kind and e == epoch:
            return t
    return None


def kill_points(epochs: int) -> list[KillPoint]:
    return [
        KillPoint(
            "epoch 1 line",
            "as soon as `metrics.jsonl` holds epoch 1's line (before its checkpoints)",
            lambda ev, now, d: _after(ev, "line", 1) is not None,
        ),
        KillPoint(
            "mid epoch 2",
            "a fixed delay after epoch 1's last.pt: half the time from there to epoch 2's "
            "line (epoch 2's training and evaluation) in the uninterrupted run",
            lambda ev, now, d: (t := _after(ev, "last", 1)) is not None and now >= t + d,
        ),
        KillPoint(
            "best.pt of epoch 2",
            "right after best.pt is replaced in epoch 2, before last.pt",
            lambda ev, now, d: _after(ev, "best", 2) is not None,
        ),
        KillPoint(
            "last.pt of epoch 2",
            "right after last.pt is replaced in epoch 2",
            lambda ev, now, d: _after(ev, "last", 2) is not None,
        ),
        KillPoint(
            "final evaluation",
            f"right after the last epoch's ({epochs}) last.pt, while results.json is computed",
            lambda ev, now, d: _after(ev, "last", epochs) is not None,
        ),
    ]


# ----------------------------------------------------------------------------
# Running and watching one training process


def _signature(p: Path) -> tuple[int, int] | None:
    try:
        st = p.stat()
    except FileNotFoundError:
        return None
    return st.st_ino, st.st_mtime_ns


def _lines(p: Path) -> int:
    try:
        return p.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


@dataclass
class Watched:
    events: list[tuple[float, str, int]] = field(default_factory=list)  # (t, kind, epoch)
    killed: bool = False
    rc: int | None = None
    lines_at_kill: int = 0
    results_at_kill: bool = False
    stderr: str = ""


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def train_cmd(mode: str, run: Path, epochs: int, cache: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "orient3d",
        "train",
        *MODE_ARGS[mode],
        "--out",
        str(run),
        *TINY,
        f"--train.epochs={epochs}",
        f"--data.cache_dir={cache}",
    ]


def watch(cmd: list[str], run: Path, kill: KillPoint | None, delay: float) -> Watched:
    """Run ``cmd``, recording the run folder's events; SIGKILL it when ``kill`` is due."""
    metrics, results = run / "metrics.jsonl", run / "results.json"
    ckpt = {k: run / "checkpoints" / f"{k}.pt" for k in ("best", "last")}
    w = Watched()
    log = run.with_name(run.name + ".stderr")
    with open(log, "w") as err:
        proc = subprocess.Popen(
            cmd,
            cwd=ROOT,
            env=_env(),
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,  # its own process group, killed as one
        )
        t0 = time.perf_counter()
        sig = {k: _signature(p) for k, p in ckpt.items()}
        lines, done = 0, False
        while True:
            running = proc.poll() is None
            now = time.perf_counter() - t0
            n = _lines(metrics)
            for e in range(lines + 1, n + 1):
                w.events.append((now, "line", e))
            lines = n
            for k, p in ckpt.items():
                s = _signature(p)
                if s is not None and s != sig[k]:
                    w.events.append((now, k, lines))
                    sig[k] = s
            if not done and results.exists():
                w.events.append((now, "results", lines))
                done = True
            if kill is not None and running and kill.due(w.events, now, delay):
                os.killpg(proc.pid, signal.SIGKILL)
                w.killed, w.lines_at_kill, w.results_at_kill = True, lines, results.exists()
                break
            if not running:
                break
            time.sleep(POLL_S)
        w.rc = proc.wait()
    w.stderr = log.read_text()
    return w


def resume(run: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "orient3d", "train", "--resume", str(run)]
    return subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)


# ----------------------------------------------------------------------------
# Comparing two runs


def _read_jsonl(p: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in p.read_text().splitlines() if x.strip()]


def _fmt(v: Any) -> str:
    s = json.dumps(v) if not isinstance(v, float) else repr(v)
    return s if len(s) <= 40 else s[:37] + "..."


def first_difference(a: Any, b: Any, path: str) -> str | None:
    """The first place where ``a`` (uninterrupted) and ``b`` (resumed) differ, else None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(a.keys() | b.keys()):
            if TIMING.search(k):
                continue
            if k not in b:
                return f"{path}`{k}` missing after resume"
            if k not in a:
                return f"{path}`{k}` only after resume"
            d = first_difference(a[k], b[k], f"{path}{k}.")
            if d:
                return d
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{path.rstrip('.')}: length {len(a)} vs {len(b)}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            d = first_difference(x, y, f"{path}{i}.")
            if d:
                return d
        return None
    both_nan = isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b)
    if a == b or both_nan:
        return None
    return f"`{path.rstrip('.')}`: {_fmt(a)} vs {_fmt(b)}"


def compare_runs(ref: Path, run: Path, epochs: int) -> str:
    """ "identical", or what differs first (the epochs of the log, then the log, then results)."""
    got = _read_jsonl(run / "metrics.jsonl")
    want = _read_jsonl(ref / "metrics.jsonl")
    seen = [int(r["epoch"]) for r in got]
    if seen != list(range(1, epochs + 1)):
        return f"metrics.jsonl epochs {seen}, not 1..{epochs} once each"
    for r, s in zip(want, got, strict=True):
        d = first_difference(r, s, "")
        if d:
            return f"metrics.jsonl epoch {r['epoch']}: {d}"
    if not (run / "results.json").exists():
        return "no results.json after resume"
    res_a = json.loads((ref / "results.json").read_text())
    res_b = json.loads((run / "results.json").read_text())
    d = first_difference(res_a, res_b, "")
    return f"results.json: {d}" if d else "identical"


# ----------------------------------------------------------------------------
# The matrix


@dataclass
class Cell:
    verdict: str
    landed: str  # where the kill landed


def _resumed_from(run: Path) -> str:
    try:
        meta = json.loads((run / "meta.json").read_text())
        return str(meta["resumed"][-1]["epoch"])
    except (FileNotFoundError, KeyError, IndexError, json.JSONDecodeError):
        return "?"


def mid_epoch_delay(w: Watched, epochs: int) -> float:
    """Half the time from epoch 1's last.pt to epoch 2's line in the uninterrupted run
    ``w`` (epoch 2's training, then its evaluation), at least one poll."""
    last1, line2 = _after(w.events, "last", 1), _after(w.events, "line", 2)
    if last1 is None or line2 is None or epochs < 2:
        return 0.05
    return max(POLL_S, 0.5 * (line2 - last1))


def run_cell(
    mode: str, kp: KillPoint, ref: Path, tmp: Path, epochs: int, delay: float, cache: Path
) -> Cell:
    run = tmp / f"{mode}-{re.sub(r'[^a-z0-9]+', '-', kp.name)}"
    w = watch(train_cmd(mode, run, epochs, cache), run, kp, delay)
    if not w.killed:
        if w.rc != 0:
            return Cell(f"run failed ({w.rc}): {w.stderr.strip().splitlines()[-1:]}", "-")
        landed = "not hit (the run ended first)"
    else:
        landed = f"log at epoch {w.lines_at_kill}"
        landed += ", results.json written" if w.results_at_kill else ""
    proc = resume(run)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["?"])[-1]
        return Cell(f"resume failed ({proc.returncode}): {tail}", landed)
    if w.killed:
        landed += f", resumed from checkpoint epoch {_resumed_from(run)}"
    return Cell(compare_runs(ref, run, epochs), landed)


Matrix = tuple[dict[tuple[str, str], Cell], dict[str, float], dict[str, str], dict[str, str]]


def matrix(modes: list[str], points: list[KillPoint], epochs: int, tmp: Path) -> Matrix:
    cache = tmp / "cache"
    cells: dict[tuple[str, str], Cell] = {}
    delays: dict[str, float] = {}
    rerun: dict[str, str] = {}
    precision: dict[str, str] = {}  # train.precision as resolved (meta.json)
    for mode in modes:
        ref = tmp / f"{mode}-uninterrupted"
        w = watch(train_cmd(mode, ref, epochs, cache), ref, None, 0.0)
        if w.rc != 0:
            sys.exit(f"{mode}: the uninterrupted run failed ({w.rc}):\n{w.stderr[-3000:]}")
        delays[mode] = mid_epoch_delay(w, epochs)
        precision[mode] = str(json.loads((ref / "meta.json").read_text()).get("precision"))
        for kp in points:
            cell = run_cell(mode, kp, ref, tmp, epochs, delays[mode], cache)
            cells[mode, kp.name] = cell
            print(f"{mode:10s} {kp.name:20s} {cell.verdict}  [{cell.landed}]", flush=True)
        if any(cells[mode, kp.name].verdict != "identical" for kp in points):
            # Is an uninterrupted run even repeatable? Run it once more to tell.
            again = tmp / f"{mode}-uninterrupted-again"
            watch(train_cmd(mode, again, epochs, cache), again, None, 0.0)
            rerun[mode] = compare_runs(ref, again, epochs)
    return cells, delays, rerun, precision


# ----------------------------------------------------------------------------
# Test-suite cases per category


def collect_tests() -> list[str]:
    """Node ids of the whole suite, slow tests included (``addopts`` cleared)."""
    cmd = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-o", "addopts=", "tests"]
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True, check=False)
    ids = [line.strip() for line in proc.stdout.splitlines() if "::" in line]
    if proc.returncode != 0 or not ids:
        sys.exit(f"pytest --collect-only failed ({proc.returncode}):\n{proc.stdout[-3000:]}")
    return ids


def categorize(node: str) -> str | None:
    name = node.split("::")[-1].split("[")[0].lower()
    for category, words in CATEGORIES:
        if any(w in name for w in words):
            return category
    return None


def count_cases(ids: list[str]) -> dict[str, dict[str, int]]:
    """category -> {file::function: parametrized cases}, in the table's order."""
    out: dict[str, dict[str, int]] = {c: {} for c, _ in CATEGORIES}
    for node in ids:
        category = categorize(node)
        if category is not None:
            fn = node.split("[")[0].removeprefix("tests/")
            out[category][fn] = out[category].get(fn, 0) + 1
    return out


# ----------------------------------------------------------------------------
# The section


def cpu_description() -> tuple[str, str]:
    """The CPU's model name and its SIMD flags that matter to torch (from /proc/cpuinfo)."""
    return cpu_flags(re.compile(r"^(sse4_2|avx|avx2|fma|f16c|avx512.*|amx.*|avx_vnni)$"))


def section(
    cmd: str,
    modes: list[str],
    points: list[KillPoint],
    epochs: int,
    result: Matrix,
    cases: dict[str, dict[str, int]],
    n_collected: int,
    wall: float,
    load: float,
) -> str:
    cells, delays, rerun, precision = result
    model, flags = cpu_description()
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    tiny = " ".join(TINY) + f" --train.epochs={epochs}"
    lines = [
        HEADING,
        "",
        f"`{cmd}`, {when}, {model} ({platform.machine()}; flags {flags}; torch CPU "
        f"capability {torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} CPUs, "
        f"load average {load:.1f} at the start (the machine is shared), Python "
        f"{platform.python_version()}, torch {torch.__version__}; {wall:.0f} s in all.",
        "",
        "### Kill and resume",
        "",
        f"Each cell: `orient3d train CONFIG --out RUN {tiny}` (configs/single.toml, "
        "augmented.toml, search.toml with `--search.warmup_epochs=1`; OMP_NUM_THREADS=1) "
        "is killed with SIGKILL at the kill point, then `orient3d train --resume RUN` "
        "runs to the end; its `metrics.jsonl` and `results.json` are compared with those "
        "of an uninterrupted run of the same config, wall-clock fields left out "
        f"(keys matching `{TIMING.pattern}`: `seconds`, `samples_per_s`, "
        "`seconds_total`). 'identical' also means `metrics.jsonl` holds epochs "
        f"1..{epochs} once each.",
        "",
        "| kill point | " + " | ".join(modes) + " |",
        "| --- |" + " --- |" * len(modes),
    ]
    for kp in points:
        row = [cells[m, kp.name].verdict for m in modes]
        lines.append(f"| {kp.name} | " + " | ".join(row) + " |")
    lines += ["", "Where each kill landed:", ""]
    lines += ["| kill point | " + " | ".join(modes) + " |", "| --- |" + " --- |" * len(modes)]
    for kp in points:
        row = [cells[m, kp.name].landed for m in modes]
        lines.append(f"| {kp.name} | " + " | ".join(row) + " |")
    lines += ["", "Kill points (the run folder is polled every millisecond):", ""]
    lines += [f"- **{kp.name}**: {kp.what}." for kp in points]
    lines.append(
        "- The mid-epoch delay, per mode: "
        + ", ".join(f"{m} {delays[m] * 1000:.0f} ms" for m in modes)
        + "."
    )
    lines.append(
        "- Training precision (`train.precision` as resolved, meta.json): "
        + ", ".join(f"{m} {precision[m]}" for m in modes)
        + "."
    )
    for mode, verdict in rerun.items():
        lines.append(f"- {mode}: a second uninterrupted run compared with the first: {verdict}.")
    total = sum(sum(v.values()) for v in cases.values())
    lines += [
        "",
        "### Reliability cases in the test suite",
        "",
        f"`python -m pytest --collect-only -q -o addopts= tests`: {n_collected} cases "
        f"collected (slow ones included); {total} map to a category. A test counts in the "
        "first category (in this order) with a keyword its function name contains; each "
        "parametrized case counts once. Tests matching no keyword are not counted.",
        "",
        "| category | cases | tests | keywords |",
        "| --- | --- | --- | --- |",
    ]
    for category, words in CATEGORIES:
        found = cases[category]
        kw = ", ".join(f"`{w}`" for w in words)
        lines.append(f"| {category} | {sum(found.values())} | {len(found)} | {kw} |")
    lines += ["", "The tests each category holds (× parametrized cases):", ""]
    for category, _ in CATEGORIES:
        found = cases[category]
        names = ", ".join(f"`{fn}`" + (f" ×{n}" if n > 1 else "") for fn, n in found.items())
        lines.append(f"- **{category}**: {names or 'none'}")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--kill-points", type=int, default=5, help="the first N of the 5 kill points")
    p.add_argument("--epochs", type=int, default=4, help="epochs per run (at least 2)")
    p.add_argument("--keep", type=Path, default=None, help="keep the run folders here")
    p.add_argument("--no-write", action="store_true", help="print instead of editing the file")
    args = p.parse_args()
    if args.epochs < 2:
        p.error("--epochs must be at least 2 (the kill points reach into epoch 2)")
    points = kill_points(args.epochs)[: max(1, args.kill_points)]
    argv = [a for a in sys.argv[1:] if a != "--no-write"]
    cmd = shlex.join(["python", "benchmarks/bench_reliability.py", *argv])
    model, flags = cpu_description()
    print(f"CPU: {model}; flags: {flags}", flush=True)
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = matrix(args.modes, points, args.epochs, Path(tmp))
        if args.keep is not None:
            shutil.copytree(tmp, args.keep, dirs_exist_ok=True)
    ids = collect_tests()
    cases = count_cases(ids)
    wall = time.perf_counter() - t0
    text = section(cmd, args.modes, points, args.epochs, result, cases, len(ids), wall, load)
    print(text)
    if not args.no_write:
        write_section(text)


if __name__ == "__main__":
    main()
