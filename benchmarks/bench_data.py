"""Benchmark the data layer and write the "## Data" section of BENCHMARKS.md.

Run: ``python benchmarks/bench_data.py`` (from the repository root). Prints a
markdown table and replaces only the "## Data" section of BENCHMARKS.md (up to
the next "## " heading), creating the file if needed.

Measures: generating 10,000 procedural objects at 32³ (stabilizers included),
``groups.orbit`` throughput at 32³ with batch 64, loading
``shared/data/modelnet10_vox32/voxnet32_test.npz`` (cold, then from the cache),
rendering an 8×8 sheet of 32³ objects, and the per-class fraction of objects
with a trivial stabilizer in O.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import numpy as np
import torch

from _machine import machine_line
from _sections import VOXNET, write_section
from orient3d.data import generate, load_dataset
from orient3d.data.arrays import trivial_fraction
from orient3d.data.files import load_file
from orient3d.geometry import groups
from orient3d.report import render


def _best(fn, repeats: int = 3) -> float:
    """Best wall time of ``repeats`` calls, seconds."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure() -> tuple[list[tuple[str, str]], dict[str, dict[str, float]]]:
    rows: list[tuple[str, str]] = []
    t, cpu = time.perf_counter(), time.process_time()
    vs = generate(10_000, 32, np.random.default_rng(0))
    rows.append(
        (
            "generate 10,000 procedural objects at 32³ (with stabilizers)",
            f"{time.perf_counter() - t:.2f} s wall, {time.process_time() - cpu:.2f} s CPU",
        )
    )
    O = groups.cube_group()
    for dtype in (torch.uint8, torch.float32):
        x = vs.voxels[:64].to(dtype)
        sec = _best(lambda x=x: groups.orbit(x, O), 5)
        rows.append(
            (
                f"groups.orbit, batch 64 at 32³, {str(dtype).split('.')[-1]}",
                f"{64 / sec:,.0f} grids/s ({64 * 24 / sec:,.0f} rotated grids/s)",
            )
        )
    fractions = {"procedural (10,000)": trivial_fraction(vs)}
    if VOXNET.is_file():
        sec = _best(lambda: load_file(VOXNET, 32), 3)
        rows.append(("read + check voxnet32_test.npz (758 grids, no stabilizers)", f"{sec:.3f} s"))
        with tempfile.TemporaryDirectory() as cache:
            t = time.perf_counter()
            mn = load_dataset(VOXNET, 32, "test", cache_dir=cache)
            cold = time.perf_counter() - t
            t = time.perf_counter()
            load_dataset(VOXNET, 32, "test", cache_dir=cache)
            warm = time.perf_counter() - t
        rows.append(
            ("load_dataset(voxnet32_test.npz) test split, cold (with stabilizers)", f"{cold:.3f} s")
        )
        rows.append(("load_dataset(voxnet32_test.npz) test split, cache hit", f"{warm:.3f} s"))
        full = load_file(VOXNET, 32)
        from orient3d.data.arrays import make_voxelset

        fractions["voxnet32_test (758)"] = trivial_fraction(
            make_voxelset(full.voxels, full.labels, full.class_names, full.ids, str(VOXNET))
        )
        del mn
    grids = vs.voxels[:64]
    t = time.perf_counter()
    render.render_sheet(grids, 8)
    cold = time.perf_counter() - t
    warm = _best(lambda: render.render_sheet(grids, 8), 3)
    rows.append(("render_sheet 8×8 of 32³ (96 px tiles), first call (ray setup)", f"{cold:.3f} s"))
    rows.append(("render_sheet 8×8 of 32³ (96 px tiles), later calls", f"{warm:.3f} s"))
    return rows, fractions


def to_markdown(rows: list[tuple[str, str]], fractions: dict[str, dict[str, float]]) -> str:
    lines = [
        "## Data",
        "",
        f"`python benchmarks/bench_data.py`, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
        f"{machine_line()}, "
        f"torch threads {torch.get_num_threads()}, Python {sys.version.split()[0]}, "
        f"torch {torch.__version__}.",
        "",
        "| measure | result |",
        "| --- | --- |",
        *[f"| {a} | {b} |" for a, b in rows],
        "",
        "Fraction of objects whose stabilizer in O is trivial (a unique orientation):",
        "",
    ]
    for name, frac in fractions.items():
        lines.append(f"| {name} | " + " | ".join(frac) + " |")
        lines.append("| --- |" + " --- |" * len(frac))
        lines.append("| trivial | " + " | ".join(f"{v:.3f}" for v in frac.values()) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args()
    torch.set_num_threads(1)
    rows, fractions = measure()
    section = to_markdown(rows, fractions)
    print(section)
    if not args.no_write:
        write_section(section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
