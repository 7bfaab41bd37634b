"""Mistakes on the command line and in data files end in one clear line, no traceback."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from orient3d.cli import main
from orient3d.data.files import load_file, voxelize_mesh
from orient3d.errors import DataError

TETRA = "4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"


def _error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def test_train_command_line_mistakes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = _error(capsys, ["train", "--out", str(tmp_path / "r"), "--train.epochs", "3"])
    assert "did you mean --train.epochs=3?" in err
    err = _error(capsys, ["train", str(tmp_path), "--out", str(tmp_path / "r")])
    assert "is a folder, not a TOML config file" in err
    assert not (tmp_path / "r").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_an_unwritable_out_is_refused_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ro = tmp_path / "ro"
    ro.mkdir(mode=0o555)
    err = _error(capsys, ["train", "--out", str(ro / "run")])
    assert "permission denied" in err


def test_experiment_out_must_be_an_experiment_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = Path(__file__).resolve().parents[1] / "configs" / "single_vs_all.toml"
    afile = tmp_path / "f"
    afile.write_text("x")
    err = _error(capsys, ["experiment", str(cfg), "--out", str(afile)])
    assert "exists and is not a folder" in err
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.toml").write_text("seed = 0\n")
    err = _error(capsys, ["experiment", str(cfg), "--out", str(run)])
    assert "holds a training run, not an experiment" in err


def test_preview_refuses_bad_sizes_before_loading(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    png = str(tmp_path / "s.png")
    err = _error(capsys, ["data", "preview", "--res", "1024", "--out", png])
    assert "must be <= data.max_res = 256" in err  # the config's limit comes first
    err = _error(capsys, ["data", "preview", "--res", "256", "--max-gib", "0.01", "--out", png])
    assert "GiB" in err and "--max-gib 0.01" in err
    assert "a power of 2" in _error(capsys, ["data", "preview", "--res", "15", "--out", png])
    assert "--size: must be >= 1" in _error(
        capsys, ["data", "preview", "--size", "0", "--out", png]
    )
    assert "is a folder" in _error(capsys, ["data", "preview", "--out", str(tmp_path)])


def test_meshes_with_odd_comment_bytes_load_and_bad_vertices_are_named(tmp_path: Path) -> None:
    latin = tmp_path / "latin.off"
    latin.write_bytes(b"OFF\n# caf\xe9\n" + TETRA.encode())
    plain = tmp_path / "plain.off"
    plain.write_text("OFF\n" + TETRA)
    solid = voxelize_mesh(plain, 16)
    assert solid.sum() > 0 and np.array_equal(voxelize_mesh(latin, 16), solid)
    nan = tmp_path / "nan.off"
    nan.write_text("OFF\n5 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\nnan 0 0\n" + TETRA.split("\n", 5)[5])
    with pytest.raises(DataError, match="1 vertex/vertices with NaN or infinite"):
        voxelize_mesh(nan, 16)


def test_a_tiny_grid_is_not_stretched_into_a_solid_cube(tmp_path: Path) -> None:
    path = tmp_path / "one.npy"
    np.save(path, np.ones((1, 1, 1), np.uint8))
    with pytest.raises(DataError, match="1³, too coarse to scale up to 16³"):
        load_file(path, 16)


def test_infinite_lr_and_a_one_object_file_are_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    err = _error(capsys, ["train", "--out", str(tmp_path / "r"), "--train.lr=inf"])
    assert "train.lr: inf is invalid, must be a finite number > 0" in err
    one = tmp_path / "one.npz"
    np.savez(one, voxels=np.ones((1, 8, 8, 8), dtype=np.uint8))
    err = _error(
        capsys,
        ["train", "--out", str(tmp_path / "s"), f"--data.source={str(one)!r}", "--data.res=8"],
    )
    assert str(one) in err and "holds 1 object(s)" in err


def test_divergence_in_the_first_epoch_says_no_checkpoint_was_written(tmp_path: Path) -> None:
    from orient3d.train import TrainingDiverged, fit
    from train_helpers import tiny_config, tiny_data

    cfg = tiny_config("train.lr=1e30", "train.grad_clip=0")
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        fit(cfg, *tiny_data(cfg), tmp_path / "run")


def test_grids_above_data_max_res_are_refused_before_they_are_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orient3d.config import Config, apply_overrides
    from orient3d.data.binvox import write_binvox
    from orient3d.data.files import load_file
    from orient3d.errors import ConfigError

    with pytest.raises(ConfigError, match="data.res: 512 is invalid, must be <= data.max_res"):
        apply_overrides(Config(), ["data.res=512"])
    assert apply_overrides(Config(), ["data.res=512", "data.max_res=512"]).data.res == 512
    big = np.zeros((1, 40, 40, 40), np.uint8)
    big[0, 10:30, 10:30, 10:30] = 1
    np.save(tmp_path / "big.npy", big)
    np.savez(tmp_path / "big.npz", voxels=big)
    write_binvox(big[0], tmp_path / "big.binvox")
    for name in ("big.npy", "big.npz", "big.binvox"):
        with pytest.raises(DataError, match="larger than data.max_res=32"):
            load_file(tmp_path / name, 16, max_side=32)
        assert load_file(tmp_path / name, 16, max_side=64).voxels.shape == (1, 16, 16, 16)
    err = _error(
        capsys,
        [
            "train",
            "--out",
            str(tmp_path / "r"),
            f"--data.source={str(tmp_path / 'big.npz')!r}",
            "--data.max_res=32",
        ],
    )
    assert "larger than data.max_res=32" in err


def test_a_renamed_file_and_bad_files_in_both_splits_are_named(tmp_path: Path) -> None:
    from orient3d.data import train_test

    png = b"\x89PNG\r\n\x1a\n" + bytes(64)
    for ext, kind in ((".npz", "not a NumPy zip archive"), (".npy", "not a NumPy array")):
        fake = tmp_path / f"picture{ext}"
        fake.write_bytes(png)
        with pytest.raises(DataError, match=kind) as info:
            load_file(fake, 16)
        assert "allow_pickle" not in str(info.value)
    grid = np.zeros((16, 16, 16), np.uint8)
    grid[4:10, 4:10, 4:10] = 1
    for split in ("train", "test"):
        folder = tmp_path / "mix" / "a" / split
        folder.mkdir(parents=True)
        for i in range(2):
            np.save(folder / f"ok{i}.npy", grid)
        (folder / f"bad_{split}.npy").write_bytes(b"garbage")
    with pytest.raises(DataError) as info:
        train_test(tmp_path / "mix", 16, cache_dir=tmp_path / "cache")
    assert "bad_train.npy" in str(info.value) and "bad_test.npy" in str(info.value)
