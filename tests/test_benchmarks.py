"""The benchmark scripts: their shared section writer, and slow smoke runs of each that
check what the script prints: its BENCHMARKS.md section (the columns documented there)
and the values a tiny run makes known (counts from the arguments, the model's FLOPs,
figures that must agree with each other)."""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from orient3d.geometry import so3

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
BENCHMARKS_MD = BENCH.parent / "BENCHMARKS.md"
sys.path.insert(0, str(BENCH))

from _sections import write_machine_part, write_section  # noqa: E402


def test_write_section_replaces_only_its_own_section(tmp_path: Path) -> None:
    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\n## Data\n\nold data\n\n## Search\n\nold search\n")
    write_section("## Data\n\nnew data\n", path)
    assert path.read_text() == "# Benchmarks\n\n## Data\n\nnew data\n\n## Search\n\nold search\n"
    write_section("## Search\n\nnew search", path)
    assert path.read_text().endswith("## Search\n\nnew search\n")
    assert "new data" in path.read_text()
    write_section("## Demo\n\ndemo", path)
    assert path.read_text().endswith("## Search\n\nnew search\n\n## Demo\n\ndemo\n")
    # A heading that merely starts like another one is a different section.
    write_section("## Data layer\n\nx", path)
    assert "new data" in path.read_text() and path.read_text().endswith("## Data layer\n\nx\n")
    with pytest.raises(ValueError, match="heading"):
        write_section("no heading", path)


def test_write_machine_part_replaces_only_this_machines_part(tmp_path: Path) -> None:
    path = tmp_path / "B.md"
    path.write_text("# Benchmarks\n\n## Training\n\nold intro\n\n### Intel\n\nintel rows\n")
    write_machine_part("## Training", "intro", "AMD", "amd rows", path)
    text = path.read_text()
    assert text == (
        "# Benchmarks\n\n## Training\n\nintro\n\n### Intel\n\nintel rows\n\n### AMD\n\namd rows\n"
    )
    write_machine_part("## Training", "intro 2", "Intel", "new intel", path)
    text = path.read_text()
    assert "intel rows" not in text and "new intel" in text and "amd rows" in text
    assert text.index("### Intel") < text.index("### AMD")  # replaced in place
    write_machine_part("## Precision", "p", "AMD", "amd p", path)  # a new section
    assert path.read_text().endswith("## Precision\n\np\n\n### AMD\n\namd p\n")
    assert "amd rows" in path.read_text()


def test_bench_precision_interleaves_calls_and_reports_medians() -> None:
    from bench_precision import _interleaved

    calls: list[str] = []
    out = _interleaved({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, 0.0)
    assert calls[:2] == ["a", "b"]  # one warm-up call each
    timed = calls[2:]
    assert timed.count("a") == timed.count("b") >= 3
    assert timed[:4] == ["a", "b", "b", "a"]  # the order alternates round by round
    assert set(out) == {"a", "b"} and all(v >= 0 for v in out.values())


def _run(script: str, args: list[str], cwd: Path) -> str:
    """The script's stdout; it must succeed and, under --no-write, leave BENCHMARKS.md alone."""
    before = BENCHMARKS_MD.read_bytes()
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert BENCHMARKS_MD.read_bytes() == before, f"{script} --no-write changed BENCHMARKS.md"
    return proc.stdout


def _section(text: str, heading: str) -> str:
    """From the ``heading`` line to the next ``## `` heading (or the end)."""
    assert heading in text.splitlines(), f"no {heading!r} section"
    rest = text[text.index(heading + "\n") :]
    nxt = re.search(r"^## ", rest[len(heading) :], re.M)
    return rest if nxt is None else rest[: len(heading) + nxt.start()]


Table = tuple[list[str], list[list[str]]]


def _tables(text: str) -> list[Table]:
    """The markdown tables of ``text``: header cells and body rows, every row as wide."""
    out: list[Table] = []
    lines = text.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.startswith("| ") and lines[i + 1].startswith("| ---"):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("| "):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            assert rows and all(len(r) == len(header) for r in rows), header
            out.append((header, rows))
    return out


def _printed_tables(out: str, heading: str) -> list[Table]:
    """The tables of the printed section; the first has the columns BENCHMARKS.md shows."""
    printed = _tables(_section(out, heading))
    assert printed, f"{heading}: no table"
    committed = _tables(_section(BENCHMARKS_MD.read_text(), heading))
    assert printed[0][0] == committed[0][0], "columns differ from BENCHMARKS.md's"
    return printed


def _by_first_column(table: Table) -> dict[str, dict[str, str]]:
    header, rows = table
    return {r[0]: dict(zip(header, r, strict=True)) for r in rows}


@pytest.mark.slow
def test_bench_precision_rates_ratios_and_choices_agree(tmp_path: Path) -> None:
    import torch

    from orient3d.devices import native_bf16

    if not (BENCH.parents[1] / "shared" / "data" / "modelnet10_vox32").is_dir():
        pytest.skip("../shared/data (ModelNet10) is absent")
    if not native_bf16(torch.device("cpu")):
        pytest.skip("no native bf16: emulated bf16 takes minutes a step at 32³")
    out = _run("bench_precision.py", ["--budget", "0", "--objects", "8", "--no-write"], tmp_path)
    ((_, rows),) = _printed_tables(out, "## Precision by machine kind")
    threads = {r[2] for r in rows}
    assert {(r[0], r[1], r[2]) for r in rows} == {
        (d, p, t) for d in ("16", "32") for p in ("training step", "scoring pass") for t in threads
    }
    per_call = {"training step": {"16": "64 samples", "32": "64 samples"},
                "scoring pass": {"16": "384 rows", "32": "192 rows"}}  # fmt: skip
    for r in rows:
        assert r[3] == per_call[r[1]][r[0]]
        fp32, bf16 = float(r[4]), float(r[5])
        assert float(r[6].rstrip("×")) == pytest.approx(bf16 / fp32, rel=0.03)
    agree, n = map(int, re.search(r"bf16 picks fp32's rotation for (\d+) of (\d+)", out).groups())
    assert n == 8 and 0 <= agree <= n


@pytest.mark.slow
def test_bench_train_worker_reports_the_models_flops(tmp_path: Path) -> None:
    out = _run("bench_train.py", ["--worker", "16", "fp32", "1", "--budget", "0.2"], tmp_path)
    row = json.loads(out.strip().splitlines()[-1])
    keys = "res precision threads peak_gflops flops_step samples_per_s gflops maxrss_mib"
    assert set(row) == set(keys.split())
    assert (row["res"], row["precision"], row["threads"]) == (16, "fp32", 1)
    # FLOPs per step belong to the model, not the machine: the documented D=16 figure.
    header, rows = _tables(_section(BENCHMARKS_MD.read_text(), "## Training"))[0]
    documented = {(r[0], r[1]): float(r[header.index("GFLOP/step (fwd+bwd)")]) for r in rows}
    assert row["flops_step"] / 1e9 == pytest.approx(documented["16", "fp32"], abs=0.006)
    assert row["gflops"] == pytest.approx(row["flops_step"] * row["samples_per_s"] / 64 / 1e9)
    assert row["maxrss_mib"] > 100  # torch and a model at 16³ take more than that


@pytest.mark.slow
def test_gpu_check_smoke_run_on_the_cpu(tmp_path: Path) -> None:
    out = _run("gpu_check.py", ["--device", "cpu", "--no-write"], tmp_path)
    ((header, rows),) = _tables(_section(out, "## GPU check"))
    (row,) = rows
    cells = dict(zip(header, row, strict=True))
    assert cells["D"] == "16³" and cells["steps"] == "4"  # the CPU defaults: 16³, 4 steps
    progress = next(line for line in out.splitlines() if line.startswith("16³: "))
    assert progress.startswith(f"16³: {cells['training samples/s']} samples/s training")
    choice, voxels = (float(cells[k].rstrip("%")) for k in ("fp32 = bf16 choice", "same voxels"))
    assert 0 <= choice <= voxels <= 100  # the same choice gives the same voxels
    assert "smoke run on the CPU: BENCHMARKS.md not written" in out


@pytest.mark.slow
def test_bench_pose_counts_passes_from_its_options(tmp_path: Path) -> None:
    steps, n, top_k, cosets = 2, 2, 3, 1
    args = ["--epochs", "1", "--n-train", "16", "--n", str(n), "--steps", str(steps)]
    args += ["--top-k", str(top_k), "--cosets", str(cosets), "--curve", "2:0,2:1"]
    args += ["--head-epochs", "1", "--head-views", "4", "--head-curve", "1:0"]
    out = _run("bench_pose.py", [*args, "--no-write"], tmp_path)
    printed = json.loads(out[: out.index("## Continuous pose")])
    result = printed["so3"]
    grid1, refine = len(so3.so3_grid(1)), 2 * 27  # level 1, then 2 rounds of 27 neighbours

    def grid_refine(k: int, c: int) -> int:  # grid, rounds, gradient; then the turns again
        return grid1 + k * refine + steps + 1 + (24 + c * refine + steps + 1 if c else 0)

    def head_refine(k: int, c: int) -> int:  # 4 head views, its k cells in place of the grid
        return 4 + k + k * refine + steps + 1 + (24 + c * refine + steps + 1 if c else 0)

    forward = {  # scored grids: the starts, the refinement rounds, one per gradient step + 1
        "gradient": steps + 1,
        "cube-start": 24 + steps + 1,
        "grid-refine": grid_refine(top_k, cosets),
        "head-refine": head_refine(top_k, cosets),
    }
    assert set(result) == set(forward)
    for method, r in result.items():
        backward = 2 * steps if method in ("grid-refine", "head-refine") else steps
        assert (r["n"], r["backward_passes"], r["forward_passes"]) == (n, backward, forward[method])
        assert 0 <= r["success_rate"] <= 1 and 0 <= r["median_error_deg"] <= 180
        assert 0 <= r["scored_at_most_truth"] <= 1
    methods, control_table, curve, by_class, grids = _printed_tables(out, "## Continuous pose")
    rows = _by_first_column(methods)
    for method, r in result.items():
        assert rows[method]["forward / object"] == str(forward[method])
        assert rows[method]["success"] == f"{r['success_rate']:.2f}"
        assert rows[method]["found ≤ truth"] == f"{r['scored_at_most_truth']:.2f}"
    # The curve: one row per setting, in order of cost, each counted from its own options.
    assert [(r["method"], r["top_k"], r["cosets"]) for r in printed["curve"]] == [
        ("grid-refine", 2, 0),
        ("grid-refine", 2, 1),
        ("head-refine", 1, 0),
    ]
    assert [[*r[:3], r[-2]] for r in curve[1]] == [
        ["grid-refine", "2", "0", str(grid_refine(2, 0))],
        ["grid-refine", "2", "1", str(grid_refine(2, 1))],
        ["head-refine", "1", "0", str(head_refine(1, 0))],
    ]
    assert "fitted in" in out and "on the 16 objects of the run's training split" in out
    assert "train.resample_frac=0.5" in out  # the model's own training, named
    # The control: the same model without turned-back views, the two grid methods at the
    # main settings, counted as the main table's.
    control = printed["control"]
    assert list(control) == ["grid-refine", "head-refine"]
    for method, r in control.items():
        assert (r["n"], r["forward_passes"]) == (n, forward[method])
        row = _by_first_column(control_table)[f"{method}, control"]
        assert row["success"] == f"{r['success_rate']:.2f}"
        assert row["forward / object"] == str(forward[method])
    assert "`train.resample_frac=0`, otherwise the same command" in out
    # By class: the two grid methods of the model and of the control, the same n objects.
    assert by_class[0] == [
        "class",
        "objects",
        "grid-refine",
        "head-refine",
        "grid-refine, control",
        "head-refine, control",
    ]
    assert sum(int(r[1]) for r in by_class[1]) == n
    cells = {**result, **{f"{m}, control": v for m, v in control.items()}}
    for column, method in enumerate(by_class[0][2:], start=2):
        for r in by_class[1]:
            cell = cells[method]["by_class"][r[0]]
            assert r[column] == f"{cell['success_rate']:.2f} / {cell['scored_at_most_truth']:.2f}"
    assert [r[:2] for r in grids[1]] == [["0", "24"], ["1", str(grid1)]]


@pytest.mark.slow
def test_bench_search_reference_rows_and_counts(tmp_path: Path) -> None:
    n_train, n_test = 16, 8
    args = ["--epochs", "2", "--n-train", str(n_train), "--n-test", str(n_test)]
    out = _run(
        "bench_search.py",
        [*args, "--naive-samples", "1", "--recover-n", "2", "--no-write"],
        tmp_path,
    )
    table = _printed_tables(out, "## Search")[0]
    rows = _by_first_column(table)
    documented = _by_first_column(_tables(_section(BENCHMARKS_MD.read_text(), "## Search"))[0])
    assert set(rows) == set(documented)  # the same variants as documented
    ref, full = rows["augmented (reference)"], rows["full search fp32"]
    assert ref["ratio (median)"] == "1.00×" and ref["rows scored / sample"] == "0.0"
    assert full["rows scored / sample"] == "24.0"  # its one search epoch scores all of O
    assert full["ΔMSE vs full fp32, worst / best"] == "+0.0% / +0.0%"
    for r in rows.values():
        if r["consistency"] != "—":  # a fraction of the 8 test objects
            assert float(r["consistency"]) * n_test == pytest.approx(
                round(float(r["consistency"]) * n_test), abs=0.01
            )
    assert f"% of {n_train + n_test} rotated objects (train + test" in out


@pytest.mark.slow
def test_bench_continuous_table_agrees_with_its_runs(tmp_path: Path) -> None:
    args = ["--epochs", "3", "--n-train", "16", "--n-test", "4", "--warmup", "1", "--no-write"]
    out = _run("bench_continuous.py", args, tmp_path)
    rows = _by_first_column(_printed_tables(out, "## Continuous search training")[0])
    documented = _tables(_section(BENCHMARKS_MD.read_text(), "## Continuous search training"))
    assert set(rows) == set(_by_first_column(documented[0]))
    passes = len(so3.so3_grid(1)) + 4 * 27  # defaults: grid level 1, top 4, 27 neighbours
    assert f"({passes} forward passes per sample)" in out
    assert "--precision auto`" in out and re.search(r"training in (fp32|bf16), scoring in", out)
    for name in ("augmented (O, reference)", "SO(3)-augmented (views, no search)"):
        assert rows[name]["forward passes / sample"] == "0"
    assert rows["augmented (O, reference)"]["ratio to augmented (median)"] == "1.00×"
    # Each run's final numbers, printed as it ends, are the table's.
    for line in out.splitlines():
        name, brace, rest = line.partition(" {")
        if name in rows and brace:
            final = ast.literal_eval("{" + rest)
            assert rows[name]["test MSE so3+search"] == f"{final['mse_search']:.5f}"
            assert rows[name]["test MSE so3"] == f"{final['mse_plain']:.5f}"
            assert final["consistency"] * 4 == round(final["consistency"] * 4)  # of 4 objects
            rows.pop(name)
    assert not rows, f"no final line printed for {sorted(rows)}"


@pytest.mark.slow
def test_bench_demo_parts_and_answers(tmp_path: Path) -> None:
    out = _run("bench_demo.py", ["--tiny", "--workers", "1", "--no-write"], tmp_path)
    rows = _printed_tables(out, "## Demo")[0][1]
    parts = [r[0] for r in rows]
    assert parts == [
        "single_vs_all",
        "recover",
        "search_modes",
        "**whole demo** (process start to report)",
    ]
    runs = {r[0]: r[1] for r in rows}
    seconds = [int(re.sub(r"[^0-9]", "", r[2])) for r in rows]
    assert seconds[3] >= sum(seconds[:3])  # the whole demo holds its parts
    # recover reuses the single-orientation half of the single_vs_all runs
    assert runs["recover"] == f"{int(runs['single_vs_all']) // 2} (reused from single_vs_all)"
    for part in parts[:3]:
        assert re.search(rf"^- \*\*{part}\*\*: \S", out, re.M), part


@pytest.mark.slow
def test_bench_reliability_runs_one_cell(tmp_path: Path) -> None:
    args = ["--modes", "single", "--kill-points", "1", "--epochs", "2", "--no-write"]
    out = _run("bench_reliability.py", args, tmp_path)
    assert "## Reliability" in out
    assert "| epoch 1 line | identical |" in out
    # The CPU flags it prints are the machine's own (/proc/cpuinfo), also in the section.
    line = next(x for x in out.splitlines() if x.startswith("CPU: "))
    flags = line.split("; flags: ", 1)[1].split()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        lines = cpuinfo.read_text().splitlines()
        own = {f for x in lines if x.startswith("flags") for f in x.split(":", 1)[1].split()}
        assert flags and set(flags) <= own
        assert ("avx2" in flags) == ("avx2" in own)
    assert f"flags {' '.join(flags)};" in _section(out, "## Reliability")
    # It collected the whole suite, as pytest itself does.
    collect = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-o", "addopts=", "tests"],
        cwd=BENCH.parent,
        capture_output=True,
        text=True,
        timeout=300,
    )
    n = sum("::" in x for x in collect.stdout.splitlines())
    assert f"`python -m pytest --collect-only -q -o addopts= tests`: {n} cases collected" in out


@pytest.mark.slow
def test_bench_startup_rows_are_its_cases_against_import_torch(tmp_path: Path) -> None:
    import bench_startup

    out = _run("bench_startup.py", ["--repeats", "1", "--no-write"], tmp_path)
    ((header, rows),) = _tables(_section(out, "## Start-up"))
    assert header == ["case", "wall s", "wall min–max", "CPU s", "CPU − import torch"]
    assert [r[0] for r in rows] == list(bench_startup.cases(tmp_path))
    torch_cpu = float(rows[0][3])
    for name, wall, spread, cpu, diff in rows[1:]:
        lo, hi = (float(v) for v in spread.split("–"))
        assert lo == hi == float(wall), name  # one repeat: min = max = median
        assert float(diff.removesuffix(" s")) == pytest.approx(float(cpu) - torch_cpu, abs=0.011)


@pytest.mark.slow
def test_bench_orient_counts_its_files(tmp_path: Path) -> None:
    out = _run(
        "bench_orient.py",
        ["--n-grids", "8", "--cube-turns", "1", "--so3-turns", "0", "--no-write"],
        tmp_path,
    )
    _printed_tables(out, "## Orient")
    # 8 held-out grids, each turned once: 8 files oriented
    assert re.search(r"\*\*Test grids \(voxnet32_test\), cube\*\*: 8 files in ", out), out[-2000:]


@pytest.mark.slow
def test_bench_search_overhead_rows_and_counts(tmp_path: Path) -> None:
    args = ["--n-train", "64", "--epochs", "2", "--widths", "8", "--threads", "1"]
    args += ["--steps", "3", "--seeds", "2", "--check-n", "32", "--check-epochs", "2"]
    out = _run("bench_search_overhead.py", [*args, "--no-write"], tmp_path)
    steady, whole, answer = _printed_tables(out, "## Search per-step overhead")
    variants = ["search, default", "search, adaptive proposals 8"]
    assert [r[2] for r in steady[1]] == variants and [r[2] for r in whole[1]] == variants
    for row in map(dict, (zip(steady[0], r, strict=True) for r in steady[1])):
        # 5% of a 64-sample step searched in full: 3 samples x 24 rotations, plus
        # each cached sample's one row
        assert int(row["rows scored / step"]) >= 3 * 24
        assert float(row["/ augmented, CPU"].removesuffix("×")) > 1.0
    # a steady epoch of adaptive proposals (first cached pose fresh) re-scores nothing more
    assert len({r[-1] for r in steady[1]}) == 1, steady[1]
    for row in map(dict, (zip(whole[0], r, strict=True) for r in whole[1])):
        # 2 epochs, 1 of warm-up: the one search epoch searches every sample in full
        assert row["rows / sample"] == "24.0" and row["re-search epochs"] == "1"
        assert row["re-scoring epochs"] == "0"
        assert row["steady epochs / augmented, wall (n)"] == "— (0)"
    rows = {r[0]: dict(zip(answer[0], r, strict=True)) for r in answer[1]}
    assert list(rows) == ["full search (no cache)", *variants]
    # 2 epochs, 1 of warm-up: the one search epoch of every run searches everything
    assert {r["rows scored / sample"].split(" [")[0] for r in rows.values()} == {"24"}
    assert "flags: " in out  # the CPU's flags, as every benchmark prints them


@pytest.mark.slow
def test_bench_pose_head_rows_and_counts(tmp_path: Path) -> None:
    args = ["--res", "16", "--width", "4", "--epochs", "1", "--n-train", "40", "--n-test", "6"]
    args += ["--views", "2", "--threads", "1", "2", "--proposals", "3", "1", "--head-views", "4"]
    args += ["--precisions", "fp32", "bf16", "--masses", "0.5", "--mass-k", "3"]
    out = _run("bench_pose_head.py", [*args, "--no-write"], tmp_path)
    recovery, masses, cost = _printed_tables(out, "## Pose head")
    rows = _by_first_column(recovery)
    names = ["top 3", "top 1", "top 1, 4 views", "top 3, mass 0.5"]
    bf16 = [f"{n}, bf16" for n in ["exhaustive (24)", *names]]
    assert list(rows) == ["exhaustive (24)", *names, *bf16]
    counts = [r["VAE rows / object"] for r in rows.values()]
    assert counts[:4] == counts[5:9] == ["24", "3", "0", "0"]
    assert all(0 <= float(c) <= 3 for c in (counts[4], counts[9]))  # cut by the mass
    assert [r["head views"] for r in rows.values()] == ["0", "1", "1", "4", "1"] * 2
    # the mass is chosen on the 4 validation objects x 2 views, against exhaustive search
    assert [r[0] for r in masses[1]] == ["exhaustive (24)", "0.5"]
    assert masses[1][0][2] == "+0.0" and float(masses[1][0][3]) == 24
    assert ("Chosen: mass 0.5." in out) == (float(masses[1][1][2]) >= -1.0)
    base = rows["exhaustive (24)"]
    assert base["Δ vs exhaustive, points [95%]"] == "+0.0 [+0.0, +0.0]"
    assert base["lost / gained"] == "0 / 0"
    # 40 objects less 10% for validation; 6 test objects x 2 views: 12 views in every row
    assert "(36 training / 4 validation / 6 test objects)" in out and "= 12 views" in out
    for r in rows.values():
        lost, gained = (int(v) for v in r["lost / gained"].split(" / "))
        right = round(float(r["accuracy"]) * 12)
        assert right == round(float(base["accuracy"]) * 12) - lost + gained
        assert float(r["objects/s, 1 thread"]) > 0 and float(r["objects/s, 2 threads"]) > 0
    assert [r[0] for r in cost[1]] == ["1 training epochs (evaluation included)", "head fit"]
    assert "flags: " in out  # the CPU's flags, as every benchmark prints them


@pytest.mark.slow
def test_bench_pose_head_fits_a_head_on_a_finished_run_and_leaves_it_alone(
    tmp_path: Path,
) -> None:
    from orient3d.config import Config, apply_overrides
    from orient3d.rundir import runs
    from orient3d.training.loop import train

    small = ["data.res=16", "data.n_train=40", "data.n_test=6", "model.width=4"]
    cfg = apply_overrides(
        Config(), [*small, "model.latent=4", "train.epochs=2", "train.progress=false"]
    )
    run = tmp_path / "trained"
    train(cfg, run)  # without a head
    before = {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()}
    args = ["--run", str(run), "--views", "2", "--threads", "1", "2", "--proposals", "3", "1"]
    args += ["--head-views", "2", "--precisions", "fp32", "--masses"]  # no head mass
    out = _run("bench_pose_head.py", [*args, "--no-write"], tmp_path)
    recovery, cost = _printed_tables(out, "## Pose head")
    rows = _by_first_column(recovery)
    assert list(rows) == ["exhaustive (24)", "top 3", "top 1", "top 1, 2 views"]
    assert f"the finished run `{run}` (trained by `" in out and "; single mode" in out
    assert "(36 training / 4 validation / 6 test objects)" in out and "= 12 views" in out
    assert [r[0] for r in cost[1]] == ["2 training epochs (evaluation included)", "head fit"]
    # the run itself is untouched: no head in its checkpoints, no report
    assert {p.name: p.read_bytes() for p in (run / "checkpoints").iterdir()} == before
    assert not (run / "pose_head.json").exists() and not runs.read_run_config(run).model.pose_head


def test_profile_train_groups_ops_by_name_and_the_optimizer_by_its_range() -> None:
    from profile_train import NAMES, OPTIMIZER, group_of, shares

    assert group_of("aten::convolution_backward") == "convolution"
    assert group_of("aten::mkldnn_convolution") == "convolution"
    assert group_of("aten::native_batch_norm_backward") == "BatchNorm"
    assert group_of("aten::threshold_backward") == "ReLU"
    assert group_of("aten::copy_") == "copies"
    assert group_of("aten::addcdiv_") == "other"  # outside the optimizer's step
    assert group_of("aten::addcdiv_", in_optimizer=True) == OPTIMIZER
    assert group_of("aten::convolution_backward", in_optimizer=True) == OPTIMIZER
    got = shares({"convolution": 6.0, "ReLU": 1.0, OPTIMIZER: 1.0, "other": 2.0})
    assert list(got) == list(NAMES)  # every column, in the table's order
    assert got == {
        "convolution": 0.6,
        "BatchNorm": 0.0,
        "ReLU": 0.1,
        "copies": 0.0,
        OPTIMIZER: 0.1,
        "other": 0.2,
    }


def test_profile_train_ceiling_is_all_layers_flops_over_all_their_time() -> None:
    from profile_train import conv_ceiling

    # 2 GFLOP in 10 ms and 6 GFLOP in 30 ms: 8 GFLOP in 40 ms = 200 GFLOP/s, 50% of 400
    rows = [{"ms": 10.0, "gflops": 200.0}, {"ms": 30.0, "gflops": 200.0}]
    text = conv_ceiling({32: {"layers": rows}}, peak=400.0)
    assert "32³: 8.0 GFLOP in 40 ms, 200 GFLOP/s, 50% of peak" in text
    # a slow layer weighs by its time, not as one row of an average of rates
    rows = [{"ms": 10.0, "gflops": 400.0}, {"ms": 90.0, "gflops": 100.0}]  # 4 + 9 GFLOP
    assert "13.0 GFLOP in 100 ms, 130 GFLOP/s, 32% of peak" in conv_ceiling(
        {16: {"layers": rows}}, peak=400.0
    )


@pytest.mark.slow
def test_profile_train_rows_are_the_models_layers(tmp_path: Path) -> None:
    out = _run(
        "profile_train.py", ["--steps", "1", "--reps", "1", "--res", "16", "--no-write"], tmp_path
    )
    (_, rows), (lheader, lrows) = _printed_tables(out, "## Training profile")
    (row,) = rows
    assert row[0] == "16" and sum(float(c.rstrip("%")) for c in row[1:]) == pytest.approx(
        100, abs=3
    )
    layers = [dict(zip(lheader, r, strict=True)) for r in lrows]
    # the default model at 16³: three encoder convolutions, two transposed, the sub-pixel last
    assert [(r["part"], r["layer"], r["input (C, d, d, d)"]) for r in layers] == [
        ("encoder", "Conv3d", "(1, 16, 16, 16)"),
        ("encoder", "Conv3d", "(32, 8, 8, 8)"),
        ("encoder", "Conv3d", "(64, 4, 4, 4)"),
        ("decoder", "ConvTranspose3d", "(128, 2, 2, 2)"),
        ("decoder", "ConvTranspose3d", "(64, 4, 4, 4)"),
        ("decoder", "SubPixelConvTranspose3d", "(32, 8, 8, 8)"),
    ]
    assert all(float(r["ms"]) > 0 and float(r["GFLOP/s"]) > 0 for r in layers)


@pytest.mark.slow
def test_bench_pose_head_refuses_a_run_without_validation_objects(tmp_path: Path) -> None:
    from orient3d.config import Config, apply_overrides
    from orient3d.training.loop import train

    small = ["data.res=16", "data.n_train=24", "data.n_test=4", "data.n_val=0", "model.width=4"]
    cfg = apply_overrides(
        Config(), [*small, "model.latent=4", "train.epochs=1", "train.progress=false"]
    )
    run = tmp_path / "trained"
    train(cfg, run)
    before = BENCHMARKS_MD.read_bytes()
    proc = subprocess.run(
        [sys.executable, str(BENCH / "bench_pose_head.py"), "--run", str(run), "--views", "1"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode != 0 and BENCHMARKS_MD.read_bytes() == before
    (line,) = [ln for ln in proc.stderr.splitlines() if ln.strip()]  # one clear error
    assert line.startswith(f"{run}: data.n_val is 0: no validation objects")
