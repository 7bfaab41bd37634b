"""Real files: arrays, binvox, meshes, folders, the shared ModelNet10 data, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from orient3d.data import DataError, load_dataset, train_test
from orient3d.data.arrays import resample
from orient3d.data.binvox import read_binvox, write_binvox
from orient3d.data.files import load_file, voxelize_mesh


def _grids(n: int, d: int, seed: int = 0) -> np.ndarray:
    g = (np.random.default_rng(seed).random((n, d, d, d)) < 0.3).astype(np.uint8)
    g[:, 0, 0, 0] = 1  # never empty
    return g


def _box_mesh(path: Path, extents: tuple[float, float, float]) -> Path:
    import trimesh

    trimesh.creation.box(extents=extents).export(path)
    return path


# ---------------------------------------------------------------------------
# Formats


def test_npz_round_trip(tmp_path: Path) -> None:
    g = _grids(5, 8)
    f = tmp_path / "set.npz"
    np.savez(f, voxels=g, labels=np.array([0, 1, 1, 2, 0]), class_names=np.array(["a", "b", "c"]))
    out = load_file(f, 8)
    assert np.array_equal(out.voxels, g) and out.labels.tolist() == [0, 1, 1, 2, 0]
    assert out.class_names == ("a", "b", "c") and len(set(out.ids)) == 5


def test_npy_one_grid_and_batch(tmp_path: Path) -> None:
    g = _grids(3, 8).astype(np.float32)
    np.save(tmp_path / "one.npy", g[0])
    np.save(tmp_path / "many.npy", g.astype(bool))
    assert load_file(tmp_path / "one.npy", 8).voxels.shape == (1, 8, 8, 8)
    many = load_file(tmp_path / "many.npy", 8)
    assert np.array_equal(many.voxels, g.astype(np.uint8)) and many.voxels.dtype == np.uint8


def test_binvox_round_trip(tmp_path: Path) -> None:
    g = _grids(1, 10, seed=1)[0]
    g[2:9, 1:3, 4] = 1  # runs longer than a few voxels
    f = write_binvox(g, tmp_path / "a.binvox")
    assert np.array_equal(read_binvox(f), g)
    big = np.ones((20, 20, 20), np.uint8)  # runs longer than 255
    assert np.array_equal(read_binvox(write_binvox(big, tmp_path / "b.binvox")), big)


def test_binvox_axis_order(tmp_path: Path) -> None:
    """Raw binvox order is x, then z, then y fastest."""
    g = np.zeros((4, 4, 4), np.uint8)
    g[1, 2, 3] = 1
    f = write_binvox(g, tmp_path / "one.binvox")
    raw = np.frombuffer(f.read_bytes().split(b"data\n", 1)[1], np.uint8)
    flat = np.repeat(raw[0::2], raw[1::2])
    assert np.flatnonzero(flat).tolist() == [1 * 16 + 3 * 4 + 2]


def test_resample_down_is_any_occupancy_and_up_is_nearest() -> None:
    g = _grids(2, 16, seed=2)
    down = resample(g, 8)
    assert np.array_equal(down, g.reshape(2, 8, 2, 8, 2, 8, 2).max(axis=(2, 4, 6)))
    assert np.array_equal(resample(down, 16), down.repeat(2, 1).repeat(2, 2).repeat(2, 3))
    odd = resample(g, 5)  # not a divisor: every source voxel lands in an occupied target
    idx = np.argwhere(g)
    t = idx[:, 1:] * 5 // 16
    assert odd[idx[:, 0], t[:, 0], t[:, 1], t[:, 2]].all()


def test_file_resampled_to_requested_res(tmp_path: Path) -> None:
    g = _grids(2, 16)
    np.save(tmp_path / "g.npy", g)
    assert load_file(tmp_path / "g.npy", 8).voxels.shape == (2, 8, 8, 8)


def test_mesh_is_solid_centred_and_keeps_aspect(tmp_path: Path) -> None:
    for ext in (".obj", ".stl", ".off"):
        f = _box_mesh(tmp_path / f"box{ext}", (2.0, 1.0, 0.5))
        g = voxelize_mesh(f, 16)
        idx = np.argwhere(g)
        size = idx.max(0) - idx.min(0) + 1
        assert size[0] == 14 and 6 <= size[1] <= 8 and 3 <= size[2] <= 5, (ext, size)
        assert g.sum() == np.prod(size)  # filled, not a shell
        assert np.abs((idx.min(0) + idx.max(0)) / 2 - 7.5).max() <= 0.5


# ---------------------------------------------------------------------------
# Folders and splits


def test_folder_like_modelnet(tmp_path: Path) -> None:
    for cls in ("b_cls", "a_cls"):
        for split in ("train", "test"):
            d = tmp_path / cls / split
            d.mkdir(parents=True)
            np.save(d / "x.npy", _grids(1, 16)[0])
            write_binvox(_grids(1, 32, seed=3)[0], d / "y.binvox")
    _box_mesh(tmp_path / "a_cls" / "train" / "z.obj", (1.0, 1.0, 2.0))
    tr, te = train_test(tmp_path, 16, cache_dir=tmp_path / "cache")
    assert tr.class_names == ("a_cls", "b_cls") and len(tr) == 5 and len(te) == 4
    assert tr.labels.tolist() == [0, 0, 0, 1, 1] and tr.ids[2] == "a_cls/train/z"
    assert tr.voxels.shape[1:] == (16, 16, 16)


def test_single_file_gets_a_seeded_split(tmp_path: Path) -> None:
    f = tmp_path / "all.npz"
    np.savez(f, voxels=_grids(20, 8))
    tr, te = train_test(f, 8, seed=4, cache_dir=tmp_path / "c")
    tr2, te2 = train_test(f, 8, seed=4, use_cache=False)
    _, te3 = train_test(f, 8, seed=5, use_cache=False)
    assert len(tr) == 16 and len(te) == 4 and not set(tr.ids) & set(te.ids)
    assert tr.ids == tr2.ids and te.ids == te2.ids and te.ids != te3.ids
    sub = load_dataset(f, 8, "train", n=5, seed=4, use_cache=False)
    assert len(sub) == 5 and set(sub.ids) <= set(tr.ids)


# ---------------------------------------------------------------------------
# The shared ModelNet10 data


def test_voxnet_test_file(shared_data: Path) -> None:
    f = shared_data / "modelnet10_vox32" / "voxnet32_test.npz"
    out = load_file(f, 32)
    raw = np.load(f)["voxels"]
    assert out.voxels.shape == (758, 32, 32, 32) and set(np.unique(out.voxels)) == {0, 1}
    assert np.array_equal(out.voxels, raw.swapaxes(1, 2))  # auto swap to the .off frame
    assert np.array_equal(load_file(f, 32, swap_xy=False).voxels, raw)
    names = out.class_names
    counts = dict(zip(names, np.bincount(out.labels, minlength=len(names)).tolist()))
    assert counts["chair"] == 100 and counts["desk"] == 86 and counts["bathtub"] == 0
    assert out.voxels[:, :, :, :3].sum() < out.voxels[:, :, :, 3:16].sum()  # z up


def test_voxnet_resampled_and_binvox_file(shared_data: Path) -> None:
    d = shared_data / "modelnet10_vox32"
    small = load_file(d / "voxnet32_train_chair.npz", 16)
    assert small.voxels.shape == (888, 16, 16, 16) and (small.labels == 2).all()
    bv = load_file(d / "binvox32_train_chair_monitor.npz", 32, swap_xy=None)
    raw = np.load(d / "binvox32_train_chair_monitor.npz")["voxels"]
    assert np.array_equal(bv.voxels, raw)  # not a voxnet file: no swap
    assert np.bincount(bv.labels, minlength=6)[[2, 5]].tolist() == [889, 465]


def test_meshes_voxelize_and_match_voxnet_after_swap(shared_data: Path) -> None:
    f = shared_data / "modelnet10_vox32" / "voxnet32_test.npz"
    swapped, raw = load_file(f, 32), load_file(f, 32, swap_xy=False)
    names = swapped.class_names
    meshes = shared_data / "modelnet_mesh_samples" / "ModelNet40"
    for cls, name in (("monitor", "monitor_0466"), ("desk", "desk_0201")):
        m = voxelize_mesh(meshes / cls / "test" / f"{name}.off", 32, margin=4).astype(bool)
        assert 0.005 < m.mean() < 0.4
        sel = swapped.labels == names.index(cls)

        def best_iou(v: np.ndarray, m: np.ndarray = m, sel: np.ndarray = sel) -> float:
            v = v[sel].astype(bool)
            return float(((v & m).sum((1, 2, 3)) / (v | m).sum((1, 2, 3))).max())

        assert best_iou(swapped.voxels) > best_iou(raw.voxels) + 0.1, cls


# ---------------------------------------------------------------------------
# Bad input: one DataError naming the file and the problem


def _write(path: Path, kind: str) -> None:
    good = _grids(2, 8)
    if kind == "truncated_npy":
        np.save(path, good)
        path.write_bytes(path.read_bytes()[:150])
    elif kind == "corrupt_npz":
        path.write_bytes(b"PK\x03\x04 this is not a zip archive" * 3)
    elif kind == "missing_key":
        np.savez(path, grids=good)
    elif kind == "bad_labels":
        np.savez(path, voxels=good, labels=np.array([0, 1, 2]))
    elif kind in ("non_cubic", "wrong_rank", "nan", "non_binary", "empty_grid"):
        arr = {
            "non_cubic": np.ones((2, 8, 8, 4)),
            "wrong_rank": np.ones((2, 2, 8, 8, 8)),
            "nan": np.where(good > 0, np.nan, 0.0),
            "non_binary": good * 2,
            "empty_grid": np.concatenate([good, np.zeros_like(good[:1])]),
        }[kind]
        np.save(path, arr)
    elif kind == "truncated_binvox":
        write_binvox(good[0], path)
        path.write_bytes(path.read_bytes()[:-4])
    elif kind == "bad_binvox_header":
        path.write_bytes(b"#notbinvox\ndim 8 8 8\ndata\n\x00\xff")
    elif kind == "bad_mesh":
        path.write_text("OFF\n3 1 0\n0 0 0\n1 0\n")
    elif kind == "unknown_ext":
        path.write_text("hello")


BAD = {
    "truncated_npy": (".npy", "corrupt"),
    "corrupt_npz": (".npz", "corrupt"),
    "missing_key": (".npz", "no 'voxels'"),
    "bad_labels": (".npz", "labels"),
    "non_cubic": (".npy", "cubic"),
    "wrong_rank": (".npy", r"\(N, D, D, D\)"),
    "nan": (".npy", "NaN"),
    "non_binary": (".npy", "0 or 1"),
    "empty_grid": (".npy", "empty grid"),
    "truncated_binvox": (".binvox", "truncated"),
    "bad_binvox_header": (".binvox", "not a binvox"),
    "bad_mesh": (".off", "mesh"),
    "unknown_ext": (".xyz", "unknown extension"),
}


@pytest.mark.parametrize("kind", sorted(BAD))
def test_bad_file_raises_data_error(tmp_path: Path, kind: str) -> None:
    ext, what = BAD[kind]
    f = tmp_path / f"bad_{kind}{ext}"
    _write(f, kind)
    with pytest.raises(DataError, match=what) as info:
        load_file(f, 8)
    assert str(f) in str(info.value)


def test_missing_source(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_dataset(tmp_path / "nope.npz", 8, use_cache=False)


def test_folder_reports_every_bad_file_and_caches_nothing(tmp_path: Path) -> None:
    root, cache = tmp_path / "data", tmp_path / "cache"
    for split in ("train", "test"):
        (root / "chair" / split).mkdir(parents=True)
    np.save(root / "chair" / "train" / "good.npy", _grids(1, 8)[0])
    bad = ["nan", "non_cubic", "truncated_binvox"]
    for kind in bad:
        _write(root / "chair" / "train" / f"bad_{kind}{BAD[kind][0]}", kind)
    with pytest.raises(DataError, match="3 bad file") as info:
        load_dataset(root, 8, "train", cache_dir=cache)
    for kind in bad:
        assert f"bad_{kind}" in str(info.value)
    assert not cache.exists() or not any(cache.iterdir())


def test_voxelset_from_files_is_tensor(tmp_path: Path) -> None:
    np.save(tmp_path / "g.npy", _grids(3, 8))
    vs = load_dataset(tmp_path / "g.npy", 8, "test", use_cache=False)
    assert isinstance(vs.voxels, torch.Tensor) and vs.voxels.dtype == torch.uint8
    assert vs.stabilizers.shape == (len(vs), 24)


def test_folder_without_data_files(tmp_path: Path) -> None:
    (tmp_path / "chair").mkdir()
    (tmp_path / "chair" / "notes.txt").write_text("nothing here")
    with pytest.raises(DataError, match="no data files"):
        load_dataset(tmp_path, 8, use_cache=False)


def test_class_filter_on_files(shared_data: Path) -> None:
    f = shared_data / "modelnet10_vox32" / "voxnet32_test.npz"
    vs = load_dataset(f, 16, "test", classes=["chair", "sofa"], use_cache=False)
    names = {vs.class_names[k] for k in vs.labels.tolist()}
    assert names == {"chair", "sofa"} and 20 < len(vs) < 60
    with pytest.raises(DataError, match="unknown class"):
        load_dataset(f, 16, "test", classes=["toaster"], use_cache=False)
