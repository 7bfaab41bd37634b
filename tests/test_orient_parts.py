"""The parts of ``orient``: frames, exact grid turns, the confidence, the record."""

from __future__ import annotations

import csv
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from orient3d.config import ModelConfig
from orient3d.data.arrays import reframe
from orient3d.data.binvox import binvox_bytes, read_binvox, read_binvox_header
from orient3d.data.files import voxelize_trimesh
from orient3d.errors import RunError
from orient3d.geometry.groups import rotate, rotate_array
from orient3d.model import VAE
from orient3d.orient.load import load_model
from orient3d.orient.pose import find_orientations, summarize
from orient3d.orient.record import COLUMNS, failed_row, shape_row, write_csv
from orient3d.orient.shapes import SWAP_XY, find_inputs, read_shape, write_shape
from orient_helpers import RES, O, canonical_grids, l_mesh, matrix, tiny_run, turned


@pytest.mark.parametrize("dtype", [np.uint8, np.bool_, np.float32, np.uint16])
def test_rotate_array_is_rotate_for_every_element(dtype: type) -> None:
    a = (np.random.default_rng(0).random((2, 5, 5, 5)) > 0.5).astype(dtype)
    for g in range(len(O)):
        want = rotate(torch.from_numpy(a.astype(np.uint8)), O, g).numpy()
        got = rotate_array(a, O, g)
        assert got.dtype == a.dtype and np.array_equal(got.astype(np.uint8), want), g


def test_mesh_and_grid_frames_agree() -> None:
    """Turning the mesh's vertices by R and voxelizing gives the voxelized mesh turned by
    the same R: grid axes 0, 1, 2 are the mesh's x, y, z, for all 24 rotations."""
    mesh = l_mesh()
    grid = voxelize_trimesh(mesh, RES)
    assert len(np.unique([rotate_array(grid, O, g).tobytes() for g in range(24)])) == 24
    for g in range(len(O)):
        assert np.array_equal(
            voxelize_trimesh(turned(mesh, matrix(g)), RES), rotate_array(grid, O, g)
        )


def _slow_summary(views: torch.Tensor, scores: torch.Tensor, r: int, t: float) -> tuple:
    k = scores.shape[0]
    same = [bool(torch.equal(views[h], views[r])) for h in range(k)]
    z = sum(math.exp(-(float(scores[h]) - float(scores.min())) / t) for h in range(k))
    conf = sum(math.exp(-(float(scores[h]) - float(scores.min())) / t) for h in range(k) if same[h])
    others = [float(scores[h]) for h in range(k) if not same[h]]
    margin = min(others) - float(scores[r]) if others else math.inf
    return conf / z, margin, sum(same) > 1


def test_summary_matches_its_definition() -> None:
    gen = torch.Generator().manual_seed(0)
    views = (torch.rand(3, 6, 4, 4, 4, generator=gen) > 0.5).to(torch.uint8)
    views[1, 4] = views[1, 2]  # two candidates with the same voxels as the choice
    views[2] = views[2, 0]  # every candidate the same: margin inf
    scores = torch.rand(3, 6, generator=gen) * 20
    r = torch.tensor([scores[0].argmin(), 2, 5])
    for t in (0.5, 1.0, 7.0):
        conf, margin, sym = summarize(views, scores, r, t)
        for b in range(3):
            want = _slow_summary(views[b], scores[b], int(r[b]), t)
            assert float(conf[b]) == pytest.approx(want[0], rel=1e-9)
            assert float(margin[b]) == pytest.approx(want[1], rel=1e-6)
            assert bool(sym[b]) == want[2]
    assert math.isinf(float(summarize(views, scores, r, 1.0)[1][2]))


def test_record_rows(tmp_path: Path) -> None:
    values = {"rotations": "cube", "temperature": 2.0, "score": 1.5, "confidence": 0.25}
    values.update(margin=math.inf, symmetric=True)
    for g in range(len(O)):
        A = matrix(g)
        row = shape_row("a.off", None, "a.off", "rotated", A, values)
        q = np.array([float(row[k]) for k in ("qx", "qy", "qz", "qw")])
        assert np.allclose(Rotation.from_quat(q).as_matrix(), A, atol=1e-8)
        assert q[3] >= 0
        assert float(row["angle_deg"]) == pytest.approx(math.degrees(float(O.angles[g])))
        got = np.array([float(row[f"r{i}{j}"]) for i, j in itertools.product(range(3), range(3))])
        assert np.array_equal(got.reshape(3, 3), A)
    rows = [row, failed_row("b.npy", "b.npy: bad\nvalues")]
    write_csv(tmp_path / "o.csv", rows)
    with (tmp_path / "o.csv").open() as f:
        back = list(csv.DictReader(f))
    assert tuple(back[0]) == COLUMNS
    assert back[0]["margin"] == "inf" and back[0]["symmetric"] == "true"
    assert back[1]["status"] == "failed: b.npy: bad values" and back[1]["qw"] == ""


def test_binvox_header_is_kept(tmp_path: Path) -> None:
    grid = (np.random.default_rng(1).random((6, 6, 6)) > 0.6).astype(np.uint8)
    header = b"#binvox 1\ndim 6 6 6\ntranslate -0.5 1.25 3\nscale 2.5\ndata\n"
    (tmp_path / "a.binvox").write_bytes(binvox_bytes(grid, header))
    assert read_binvox_header(tmp_path / "a.binvox") == header
    assert np.array_equal(read_binvox(tmp_path / "a.binvox"), grid)


def test_voxnet_files_turn_in_their_own_frame(tmp_path: Path) -> None:
    """A voxnet32_* file stores (y, x, z): a rotation A found in the model's frame turns the
    stored grid by SWAP A SWAP, so that reading the output gives A·(the grid read)."""
    grid = rotate_array(voxelize_trimesh(l_mesh(), RES), O, 0)
    path = tmp_path / "voxnet32_x.npz"
    np.savez(path, voxels=grid[None], labels=np.array([3]))
    shape = read_shape(path, RES)
    assert np.array_equal(shape.grids[0], grid.swapaxes(0, 1)) and shape.multi
    assert np.array_equal(shape.frame, SWAP_XY)
    for g in (1, 5, 17):
        write_shape(shape, tmp_path / "out" / path.name, matrix(g)[None])
        back = read_shape(tmp_path / "out" / path.name, RES)
        assert np.array_equal(back.grids[0], rotate_array(shape.grids[0], O, g))
        assert np.array_equal(back.data["labels"], [3])


def test_inputs_keep_their_layout_and_collisions_fail(tmp_path: Path) -> None:
    for rel in ("a/x.off", "a/sub/y.npy", "a/notes.txt", "b/x.off", "c.stl", "d.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("")
    out = tmp_path / "a" / "out"
    (out / "old.off").parent.mkdir(parents=True)
    (out / "old.off").write_text("")
    items, bad = find_inputs(
        [tmp_path / "a", tmp_path / "b", tmp_path / "c.stl", tmp_path / "d.txt", tmp_path / "e"],
        out,
    )
    assert [(i.path.relative_to(tmp_path).as_posix(), i.rel.as_posix()) for i in items] == [
        ("a/sub/y.npy", "sub/y.npy"),
        ("a/x.off", "x.off"),
        ("c.stl", "c.stl"),
    ]  # (the output folder inside an input folder is not walked)
    reasons = {Path(p).name: why for p, why in bad}
    assert "already that of" in reasons["x.off"]
    assert "unknown extension '.txt'" in reasons["d.txt"]
    assert reasons["e"] == "no such file or folder"
    _, bad = find_inputs([tmp_path / "a"], tmp_path / "a")
    assert "is the output folder" in bad[0][1]


def test_orientations_do_not_depend_on_the_block_size() -> None:
    torch.manual_seed(0)
    model = VAE(ModelConfig(width=4, latent=4), RES)
    x = torch.rand(7, RES, RES, RES, generator=torch.Generator().manual_seed(1)) > 0.7
    whole, parts = find_orientations(model, x, block=64), find_orientations(model, x, block=3)
    for k in ("A", "score", "confidence", "margin", "symmetric"):
        assert np.allclose(getattr(whole, k), getattr(parts, k), rtol=1e-5), k
    assert torch.equal(whole.turned, parts.turned)


def test_reframe_frames_like_the_mesh_voxelizer() -> None:
    framed = voxelize_trimesh(l_mesh(), RES)[None]
    assert np.array_equal(reframe(framed, RES), framed)  # already framed: unchanged
    for length in (6, 16):  # a one-voxel rod, scaled up and down
        rod = np.zeros((1, RES, RES, RES), np.uint8)
        rod[0, 5, 3, RES - length :] = 1
        got = reframe(rod, RES)[0]
        span = np.flatnonzero(got.any(axis=(0, 1)))
        assert span.tolist() == list(range(1, RES - 1))  # 14 voxels long, centred, no gap
        assert 1 <= got.sum(axis=2).astype(bool).sum() <= 4  # still thin


def test_the_model_says_how_to_frame(tmp_path: Path) -> None:
    run = tiny_run(tmp_path / "run", canonical_grids(), steps=1)
    assert load_model(run).framing == "as_given" and load_model(run).temperature == 1
    (run / "model.json").write_text('{"temperature": 3.5, "framing": "fit"}')
    m = load_model(run)
    assert (m.framing, m.temperature) == ("fit", 3.5)
    small = np.zeros((RES,) * 3, np.uint8)
    small[6:10, 7:9, 5:11] = 1
    np.save(tmp_path / "s.npy", small)
    assert np.array_equal(read_shape(tmp_path / "s.npy", RES).grids[0], small)
    fitted = read_shape(tmp_path / "s.npy", RES, fit=True).grids[0]
    assert np.array_equal(fitted, reframe(small[None], RES)[0])
    (run / "model.json").write_text('{"temperature": 3.5, "framing": "stretch"}')
    with pytest.raises(RunError, match="framing"):
        load_model(run)
