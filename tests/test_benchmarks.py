"""The benchmark scripts: their shared section writer, and slow smoke runs of each."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

from _sections import write_section  # noqa: E402


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


# Each script with the smallest arguments it takes, printing instead of writing.
SMOKE = {
    "bench_train.py": ["--worker", "16", "fp32", "1", "--budget", "0.2"],
    "bench_search.py": [
        "--epochs",
        "2",
        "--n-train",
        "16",
        "--n-test",
        "8",
        "--naive-samples",
        "1",
        "--recover-n",
        "2",
        "--no-write",
    ],
    "bench_continuous.py": [
        "--epochs",
        "3",
        "--n-train",
        "16",
        "--n-test",
        "4",
        "--warmup",
        "1",
        "--no-write",
    ],
    "bench_demo.py": ["--tiny", "--workers", "1", "--no-write"],
    "bench_startup.py": ["--repeats", "1", "--no-write"],
    "bench_search_overhead.py": [
        *("--n-train", "32", "--epochs", "3", "--widths", "4", "--threads", "1"),
        *("--seeds", "2", "--check-n", "32", "--check-epochs", "2", "--no-write"),
    ],
    "gpu_check.py": ["--device", "cpu", "--no-write"],
    "bench_pose.py": ["--epochs", "1", "--n-train", "16", "--n", "2", "--steps", "2", "--no-write"],
}


@pytest.mark.slow
@pytest.mark.parametrize("script", sorted(SMOKE))
def test_benchmark_scripts_run(script: str, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, str(BENCH / script), *SMOKE[script]],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip()


@pytest.mark.slow
def test_bench_reliability_runs_one_cell(tmp_path: Path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            str(BENCH / "bench_reliability.py"),
            *("--modes", "single", "--kill-points", "1", "--epochs", "2", "--no-write"),
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "## Reliability" in proc.stdout
    assert "| epoch 1 line | identical |" in proc.stdout
