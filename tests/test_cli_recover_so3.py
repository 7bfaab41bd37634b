"""`orient3d recover --rotations so3`: continuous pose recovery merged into recover.json."""

from __future__ import annotations

from pathlib import Path

import pytest

from orient3d import runs
from orient3d.cli import main
from train_helpers import TINY


def test_recover_so3_merges_into_recover_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = [f"--{o}" for o in TINY] + [f"--data.cache_dir={tmp_path / 'cache'}", "--train.epochs=1"]
    assert main(["train", "--out", str(run), *args]) == 0
    assert main(["recover", str(run), "--n", "4"]) == 0  # the cube recovery first
    cube = runs.read_json(run / "recover.json")
    so3 = ["recover", str(run), "--rotations", "so3", "--n", "3", "--steps", "2"]
    small = ["--top-k", "2", "--levels", "1", "--cosets", "1"]
    assert main([*so3, "--method", "gradient", "--method", "grid-refine", *small]) == 0
    out = runs.read_json(run / "recover.json")
    assert {k: v for k, v in out.items() if k != "so3"} == cube  # existing keys kept
    assert set(out["so3"]) == {"gradient", "grid-refine"}
    r = out["so3"]["grid-refine"]
    assert 0 <= r["success_rate"] <= 1 and r["n"] == 3
    # grid, one subdivision, steps + 1; then the 24 turns, one subdivision of the best one
    assert r["forward_passes"] == 96 + 2 * 27 + 3 + 24 + 27 + 3
    printed = capsys.readouterr().out
    row = next(line.split() for line in printed.splitlines() if line.startswith("grid-refine"))
    assert "found<=truth" in printed
    assert row[1:3] == [f"{r['success_rate']:.2f}", f"{r['scored_at_most_truth']:.2f}"]
    assert main([*so3, "--method", "cube-start"]) == 0  # later methods are merged in
    assert set(runs.read_json(run / "recover.json")["so3"]) == {
        "gradient",
        "grid-refine",
        "cube-start",
    }
    assert main(["recover", str(run), "--n", "4"]) == 0  # the cube path keeps "so3"
    assert "so3" in runs.read_json(run / "recover.json")


def test_recover_so3_head_refine_fits_its_head_on_the_training_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = tmp_path / "run"
    args = [f"--{o}" for o in TINY] + [f"--data.cache_dir={tmp_path / 'cache'}", "--train.epochs=1"]
    args += ["--train.mode=search"]  # a learned frame: the head's grids are searched into it
    assert main(["train", "--out", str(run), *args]) == 0
    so3 = ["recover", str(run), "--rotations", "so3", "--n", "3", "--steps", "2"]
    small = ["--top-k", "2", "--levels", "1", "--cosets", "0", "--head-views", "4"]
    assert main([*so3, "--method", "head-refine", "--so3-head-epochs", "2", *small]) == 0
    r = runs.read_json(run / "recover.json")["so3"]["head-refine"]
    # 4 head views, its 2 cells, one subdivision of 2 × 27, steps + 1
    assert r["forward_passes"] == 4 + 2 + 2 * 27 + 3 and r["n"] == 3
    assert r["head"]["epochs"] == 2 and r["head"]["head_views"] == 4
    assert set(r["head"]["train_top_k"]) == {"1", "4", "8", "16"}
    printed = capsys.readouterr().out
    assert "fitting the SO(3) proposal head on 24 training objects" in printed
    assert any(line.startswith("head-refine") for line in printed.splitlines())
    assert main([*so3, "--method", "all"]) == 0  # "all": the three that need no head
    assert set(runs.read_json(run / "recover.json")["so3"]) == {
        "gradient", "cube-start", "grid-refine", "head-refine",
    }  # fmt: skip
    # By default head-refine averages its head over all 24 views of each object.
    assert main([*so3, "--method", "head-refine", "--so3-head-epochs", "1", *small[:-2]]) == 0
    r = runs.read_json(run / "recover.json")["so3"]["head-refine"]
    assert r["head"]["head_views"] == 24 and r["forward_passes"] == 24 + 2 + 2 * 27 + 3
    assert main([*so3, "--method", "head-refine", "--so3-head-epochs", "0"]) != 0
    assert "--so3-head-epochs: 0 is invalid, must be >= 1" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "message"),
    [
        ("--cosets", "25", "--cosets: 25 is invalid, must be in 0..24"),
        ("--top-k", "0", "--top-k: 0 is invalid, must be >= 1"),
        ("--levels", "-1", "--levels: -1 is invalid, must be >= 0"),
    ],
)
def test_bad_so3_options_are_refused_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, message: str
) -> None:
    missing = tmp_path / "no_such_run"  # refused on the option, before the run is read
    assert main(["recover", str(missing), "--rotations", "so3", flag, value]) != 0
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err and "no_such_run" not in err
