"""``orient3d orient`` end to end, with a tiny run trained on the L-shaped mesh's pose.

What is checked is the mechanics: a shape turned by a known rotation comes back exactly
(vertices, voxels), in its own format and place, with a true record. How well the
default model orients real shapes is measured by benchmarks/bench_orient.py.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from orient3d.cli import main
from orient3d.data.binvox import binvox_bytes, read_binvox, read_binvox_header
from orient3d.data.files import voxelize_trimesh
from orient3d.geometry import so3
from orient3d.geometry.groups import rotate_array
from orient3d.orient import DEFAULT_MODEL, load_model
from orient3d.orient import shapes as shapes_mod
from orient_helpers import RES, O, canonical_grids, l_mesh, matrix, tiny_run, turned

TURNS = (0, 1, 5, 9, 14, 23)  # elements of O, angles 0, 90, 180, 90, 120, 180


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("orient") / "run", canonical_grids())


def _orient(run: Path, *args: str | Path) -> tuple[int, list[dict[str, str]]]:
    out = Path(args[args.index("--out") + 1])
    rc = main(["orient", *map(str, args), "--model", str(run)])
    with (out / "orientations.csv").open() as f:
        return rc, list(csv.DictReader(f))


def _matrix(row: dict[str, str]) -> np.ndarray:
    return np.array([float(row[f"r{i}{j}"]) for i in range(3) for j in range(3)]).reshape(3, 3)


def test_meshes_come_back_exactly(run: Path, tmp_path: Path) -> None:
    """The L mesh turned by known cube rotations, as .off/.obj/.stl in nested folders:
    every output has the original's triangles, and the record gives each inverse."""
    mesh = l_mesh()
    src = tmp_path / "in"
    for g in TURNS:
        for ext in (".off", ".obj", ".stl"):
            path = src / ext[1:] / "deep" / f"L{g}{ext}"
            path.parent.mkdir(parents=True, exist_ok=True)
            turned(mesh, matrix(g)).export(path)
    rc, rows = _orient(run, src, "--out", tmp_path / "out")
    assert rc == 0 and len(rows) == 3 * len(TURNS)
    for row in rows:
        g = int(Path(row["file"]).stem[1:])
        assert row["status"] == "rotated" and row["symmetric"] == "false", row
        assert np.array_equal(_matrix(row), matrix(g).T)  # the inverse of g
        assert float(row["confidence"]) > 0.5 and float(row["margin"]) > 0
        out = tmp_path / "out" / row["output"]
        assert out.relative_to(tmp_path / "out") == Path(row["file"]).relative_to(src)
        back = trimesh.load(out, process=False, force="mesh")
        orig = trimesh.load(
            Path(row["file"]).with_name(f"L0{out.suffix}"), process=False, force="mesh"
        )
        assert back.triangles.shape == orig.triangles.shape
        assert np.allclose(back.triangles, orig.triangles, atol=1e-4), row["file"]
    assert (tmp_path / "out" / "before_after.png").stat().st_size > 1000


def test_grids_come_back_exactly(run: Path, tmp_path: Path) -> None:
    """.npy (one grid, and several), .npz (other arrays kept) and .binvox (header kept),
    at the model's side and at twice it: each grid turned back to the exact original."""
    canon = voxelize_trimesh(l_mesh(), RES)
    fine = voxelize_trimesh(l_mesh(), 2 * RES).astype(bool)
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "one.npy", rotate_array(canon, O, 9))
    np.save(src / "fine.npy", rotate_array(fine, O, 14))
    many = np.stack([rotate_array(canon, O, g) for g in TURNS])
    np.save(src / "many.npy", many)
    np.savez_compressed(src / "many.npz", voxels=many, labels=np.arange(len(TURNS)), note="x")
    header = b"#binvox 1\ndim 16 16 16\ntranslate 1 2 3\nscale 0.5\ndata\n"
    (src / "one.binvox").write_bytes(binvox_bytes(rotate_array(canon, O, 5), header))
    rc, rows = _orient(run, src, "--out", tmp_path / "out")
    assert rc == 0 and [r["status"] for r in rows] == ["rotated"] * len(rows)
    out = tmp_path / "out"
    assert np.array_equal(np.load(out / "one.npy"), canon)
    got = np.load(out / "fine.npy")
    assert got.dtype == np.bool_ and np.array_equal(got, fine)
    assert np.array_equal(np.load(out / "many.npy"), np.stack([canon] * len(TURNS)))
    with np.load(out / "many.npz") as z:
        assert np.array_equal(z["voxels"], np.stack([canon] * len(TURNS)))
        assert np.array_equal(z["labels"], np.arange(len(TURNS))) and str(z["note"]) == "x"
    assert read_binvox_header(out / "one.binvox") == header
    assert np.array_equal(read_binvox(out / "one.binvox"), canon)
    many_rows = [r for r in rows if r["file"].endswith("many.npz")]
    assert [r["index"] for r in many_rows] == [str(k) for k in range(len(TURNS))]
    assert all(np.array_equal(_matrix(r), matrix(g).T) for r, g in zip(many_rows, TURNS))
    assert next(r for r in rows if r["file"].endswith("one.npy"))["index"] == ""


def test_bad_files_fail_alone(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "in"
    src.mkdir()
    np.save(src / "good.npy", rotate_array(voxelize_trimesh(l_mesh(), RES), O, 1))
    (src / "broken.off").write_text("OFF\n3 1 0\n0 0 0\n1 0\n")
    np.save(src / "empty.npy", np.zeros((RES,) * 3, np.uint8))
    (src / "notes.txt").write_text("not a shape: skipped in a folder")
    (tmp_path / "odd.xyz").write_text("")
    rc, rows = _orient(run, src, tmp_path / "odd.xyz", "--out", tmp_path / "out")
    assert rc == 1
    status = {Path(r["file"]).name: r["status"] for r in rows}
    assert status["good.npy"] == "rotated"
    assert status["empty.npy"].startswith("failed: ") and "empty grid" in status["empty.npy"]
    assert status["broken.off"].startswith("failed: ")
    assert status["odd.xyz"].startswith("failed: unknown extension")
    assert "notes.txt" not in status
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["before_after.png", "good.npy", "orientations.csv"]  # no temp files
    out = capsys.readouterr()
    assert "1 rotated, 0 kept, 3 file(s) failed" in out.out
    assert "failed: " in out.err and "empty.npy" in out.err


def test_low_confidence_shapes_are_kept_unrotated(run: Path, tmp_path: Path) -> None:
    """At a huge temperature every candidate is about as likely (confidence ~1/24), so
    --min-confidence 0.5 keeps every shape: written as it came, byte for byte."""
    src = tmp_path / "in"
    src.mkdir()
    turned(l_mesh(), matrix(5)).export(src / "a.off")
    np.save(src / "b.npy", rotate_array(voxelize_trimesh(l_mesh(), RES), O, 9))
    args = ("--temperature", "1e9", "--min-confidence", "0.5")
    rc, rows = _orient(run, src, "--out", tmp_path / "out", *args)
    assert rc == 0
    for row in rows:
        assert row["status"] == "kept" and float(row["confidence"]) < 0.05
        assert not np.array_equal(_matrix(row), np.eye(3))  # the rotation found, not applied
        name = Path(row["file"]).name
        assert (tmp_path / "out" / name).read_bytes() == (src / name).read_bytes()


def test_symmetric_shapes_say_so(run: Path, tmp_path: Path) -> None:
    block = np.zeros((RES,) * 3, np.uint8)
    block[4:12, 4:12, 4:12] = 1
    np.save(tmp_path / "cube.npy", block)
    rc, rows = _orient(run, tmp_path / "cube.npy", "--out", tmp_path / "out")
    assert rc == 0 and rows[0]["symmetric"] == "true"
    assert rows[0]["margin"] == "inf" and float(rows[0]["confidence"]) == pytest.approx(1.0)


def test_an_interrupted_write_leaves_nothing(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    np.save(tmp_path / "a.npy", rotate_array(voxelize_trimesh(l_mesh(), RES), O, 1))

    def half_write(*args: object, **kw: object) -> None:
        f = args[0]
        f.write(b"\x93NUMPY half")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(shapes_mod.np, "save", half_write)
    rc, rows = _orient(run, tmp_path / "a.npy", "--out", tmp_path / "out")
    assert rc == 1 and "No space left" in rows[0]["status"]
    assert sorted(os.listdir(tmp_path / "out")) == ["orientations.csv"]


def test_so3_refuses_voxel_files(run: Path, tmp_path: Path) -> None:
    np.save(tmp_path / "grid.npy", voxelize_trimesh(l_mesh(), RES))
    rc, rows = _orient(run, tmp_path / "grid.npy", "--out", tmp_path / "out", "--rotations", "so3")
    assert rc == 1 and "voxel files are oriented with --rotations cube" in rows[0]["status"]
    assert sorted(os.listdir(tmp_path / "out")) == ["orientations.csv"]


@pytest.mark.slow
def test_so3_turns_meshes(run: Path, tmp_path: Path) -> None:
    """The continuous search on the L mesh turned by a cube rotation and a 20° tilt: the
    output is the input turned by the recorded rotation about its bounding-box centre,
    within 12° of the original pose."""
    mesh = l_mesh()
    R = so3.axis_angle_to_matrix(torch.tensor([0.2, 0.25, 0.1], dtype=torch.float64)).numpy()
    R = R @ matrix(14)
    src = tmp_path / "in"
    src.mkdir()
    turned(mesh, R).export(src / "tilted.off")
    rc, rows = _orient(run, src, "--out", tmp_path / "out", "--rotations", "so3")
    assert rc == 0
    row = rows[0]
    A = _matrix(row)
    assert np.allclose(A @ A.T, np.eye(3), atol=1e-6)
    residual = A @ R  # the original pose is the identity
    angle = np.degrees(np.arccos(np.clip((np.trace(residual) - 1) / 2, -1, 1)))
    assert angle < 12, angle
    shown = trimesh.load(src / "tilted.off", process=False)
    back = trimesh.load(tmp_path / "out" / "tilted.off", process=False)
    c = shown.bounds.mean(0)
    assert np.allclose(back.vertices - c, (shown.vertices - c) @ A.T, atol=1e-6)


def test_default_model_is_shipped() -> None:
    m = load_model()
    assert m.res == 32 and m.mode == "single" and m.temperature > 0 and m.framing == "fit"
    weights = DEFAULT_MODEL / "checkpoints" / "best.pt"
    assert weights.stat().st_size < 4 * 2**20
    state = torch.load(weights, weights_only=True)["model"]
    assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float16}


def test_orient_is_a_command(run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["orient", "--help"])
    assert "--min-confidence" in capsys.readouterr().out
    assert main(["orient", "x.off", "--out", "o", "--min-confidence", "2"]) == 2
    assert "--min-confidence: 2.0 is not in [0, 1]" in capsys.readouterr().err
    (tmp_path / "f").write_text("")
    assert main(["orient", "x.off", "--out", str(tmp_path / "f"), "--model", str(run)]) == 2
    assert "exists and is not a folder" in capsys.readouterr().err
    assert (
        main(["orient", str(tmp_path / "none"), "--out", str(tmp_path / "o"), "--model", str(run)])
        == 1
    )
    assert "no such file or folder" in capsys.readouterr().err


@pytest.mark.slow
def test_a_wheel_ships_the_default_model(tmp_path: Path) -> None:
    """A non-editable install (a wheel, unpacked) finds the default model."""
    root = Path(__file__).resolve().parents[1]
    pip = [sys.executable, "-m", "pip", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path), str(root)],
        check=True,
    )
    wheel = next(tmp_path.glob("orient3d-*.whl"))
    site = tmp_path / "site"
    subprocess.run([*pip, "install", "--no-deps", "--target", str(site), str(wheel)], check=True)
    code = "import orient3d.orient as o; m = o.load_model(); print(o.__file__, m.res, m.framing)"
    env = {**os.environ, "PYTHONPATH": str(site)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    ).stdout.split()
    assert Path(out[0]).is_relative_to(site) and out[1:] == ["32", "fit"]
