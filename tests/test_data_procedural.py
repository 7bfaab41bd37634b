"""Procedural shapes: determinism, pose, symmetry, cache."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from orient3d import groups
from orient3d.data import CLASSES, DataError, generate, load_dataset, procedural, train_test
from orient3d.data import cache as cache_mod
from orient3d.data.arrays import stabilizer_masks, trivial_fraction

FURNITURE = [c for c in CLASSES if c != "polycube"]


@pytest.fixture(scope="module")
def small() -> object:
    return generate(9 * 12, 16, np.random.default_rng(7))


def test_deterministic_from_seed() -> None:
    a = generate(18, 16, np.random.default_rng(3))
    b = generate(18, 16, np.random.default_rng(3))
    c = generate(18, 16, np.random.default_rng(4))
    assert torch.equal(a.voxels, b.voxels) and a.ids == b.ids
    assert not torch.equal(a.voxels, c.voxels)


@pytest.mark.parametrize("res", [16, 32, 64])
def test_shapes_labels_and_values(res: int) -> None:
    vs = generate(9, res, np.random.default_rng(0))
    assert vs.voxels.shape == (9, res, res, res) and vs.voxels.dtype == torch.uint8
    assert set(vs.voxels.unique().tolist()) == {0, 1}
    assert vs.class_names == CLASSES and len(CLASSES) >= 9
    assert vs.labels.tolist() == list(range(9))
    assert len(set(vs.ids)) == 9 and vs.stabilizers.shape == (9, 24)
    assert (vs.voxels.flatten(1).sum(1) > 0).all()


def _bbox(vox: torch.Tensor) -> np.ndarray:
    """(N, 3, 2) first and last occupied index per axis, as fractions of the side."""
    out = []
    for g in vox.numpy():
        idx = np.argwhere(g)
        out.append(np.stack([idx.min(0), idx.max(0) + 1], axis=1) / g.shape[0])
    return np.array(out)


def test_same_objects_at_every_resolution() -> None:
    lo = generate(9, 16, np.random.default_rng(5))
    hi = generate(9, 32, np.random.default_rng(5))
    assert np.abs(_bbox(lo.voxels) - _bbox(hi.voxels)).max() <= 2.0 / 16


def test_furniture_is_upright_and_faces_front(small) -> None:
    vs = small
    d = vs.res
    for k, name in enumerate(vs.class_names):
        sel = vs.voxels[vs.labels == k]
        if name in FURNITURE:
            assert (sel[:, :, :, 0].flatten(1).sum(1) > 0).all(), f"{name} floats"
        assert (sel[:, :, :, -1].flatten(1).sum(1) == 0).all(), f"{name} touches the top"
    y = torch.arange(d, dtype=torch.float32) - (d - 1) / 2
    # the back (upper part) is at +y, away from the front
    for name, z0 in (("chair", d // 2), ("sofa", d // 2), ("bed", d // 3)):
        upper = vs.voxels[vs.labels == vs.class_names.index(name)][..., z0:].float()
        mass_y = (upper.sum((1, 3)) * y).sum(1) / upper.sum((1, 2, 3))
        assert (mass_y > 0).all(), name


def test_stabilizers_are_exact_and_mostly_trivial(small) -> None:
    O = groups.cube_group()
    assert torch.equal(small.stabilizers, groups.stabilizer_mask(small.voxels, O))
    for name, frac in trivial_fraction(small).items():
        assert frac >= 0.9, (name, frac)


def test_stabilizer_prefilter_keeps_symmetric_objects() -> None:
    d = 12
    grids = np.zeros((4, d, d, d), np.uint8)
    grids[0, 3:9, 3:9, 3:9] = 1  # centred cube: all 24
    grids[1, 2:10, 2:10, 0:2] = 1  # square slab on the floor: the 4 turns about z
    grids[1, 5:7, 5:7, 2:8] = 1
    grids[2, 1:11, 4:8, 4:8] = 1  # a bar along x
    grids[3, 0:3, 0:2, 0:1] = 1  # asymmetric
    expected = groups.stabilizer_mask(torch.from_numpy(grids), groups.cube_group())
    got = stabilizer_masks(grids)
    assert torch.equal(got, expected)
    assert got.sum(1).tolist() == [24, 4, 8, 1]


def test_unknown_class_and_subset_of_classes() -> None:
    with pytest.raises(DataError, match="unknown class"):
        generate(3, 16, np.random.default_rng(0), classes=["chair", "spaceship"])
    vs = generate(4, 16, np.random.default_rng(0), classes=["lamp", "desk"])
    assert vs.class_names == ("lamp", "desk") and vs.labels.tolist() == [0, 1, 0, 1]


def _same_up_to_translation(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two ``(K, 3)`` integer point sets differ by a translation only."""
    return {tuple(v) for v in (a - a.min(0)).tolist()} == {
        tuple(v) for v in (b - b.min(0)).tolist()
    }


def test_polycubes_are_asymmetric_under_every_rotation() -> None:
    """No rotation of O but the identity maps a polycube's voxels onto themselves, even
    up to translation (scipy's group as the reference, not the package's)."""
    rots = np.rint(Rotation.create_group("O").as_matrix()).astype(int)  # (24, 3, 3)
    rots = rots[[not np.array_equal(m, np.eye(3)) for m in rots]]
    assert len(rots) == 23
    vs = generate(300, 16, np.random.default_rng(11), classes=["polycube"])
    for grid, name in zip(vs.voxels.numpy(), vs.ids, strict=True):
        pts = np.argwhere(grid)  # (K, 3) occupied voxels
        for m in rots:
            assert not _same_up_to_translation(pts, pts @ m.T), (name, m.tolist())
    assert int(vs.stabilizers.sum()) == len(vs)  # the identity alone, for every one


def test_polycube_draws_again_until_asymmetric_and_gives_up_loudly(monkeypatch) -> None:
    from orient3d.data import shapes

    calls = {"n": 0}

    def symmetric_first_30(cells: np.ndarray) -> bool:
        calls["n"] += 1
        return calls["n"] <= 30

    monkeypatch.setattr(shapes, "_symmetric", symmetric_first_30)
    got = shapes.polycube(np.random.default_rng(5))
    replay = np.random.default_rng(5)
    for _ in range(31):  # the 31st draw is the first one accepted
        cells = shapes.polycube_cells(replay)
    assert got == [shapes._box(*(v for c in cell for v in (c / 4, (c + 1) / 4))) for cell in cells]
    monkeypatch.setattr(shapes, "_symmetric", lambda cells: True)
    with pytest.raises(DataError, match=f"polycube: {shapes.POLYCUBE_TRIES} draws in a row"):
        shapes.polycube(np.random.default_rng(5))


def test_train_and_test_differ() -> None:
    tr, te = train_test("procedural", 16, 18, 9, seed=1, use_cache=False)
    assert len(tr) == 18 and len(te) == 9
    assert not torch.equal(tr.voxels[:9], te.voxels)


def test_cache_hit_is_identical_and_skips_generation(tmp_path: Path, monkeypatch) -> None:
    a = load_dataset("procedural", 16, "train", 27, seed=2, cache_dir=tmp_path)
    entries = list(tmp_path.glob("*.npz"))
    assert len(entries) == 1 and not list(tmp_path.glob("*.tmp"))

    def boom(*args, **kwargs):
        raise AssertionError("generated again despite the cache")

    monkeypatch.setattr("orient3d.data.sources.generate", boom)
    b = load_dataset("procedural", 16, "train", 27, seed=2, cache_dir=tmp_path)
    assert torch.equal(a.voxels, b.voxels) and torch.equal(a.stabilizers, b.stabilizers)
    assert a.ids == b.ids and a.class_names == b.class_names and torch.equal(a.labels, b.labels)


def test_corrupt_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    a = load_dataset("procedural", 16, "test", 18, seed=3, cache_dir=tmp_path)
    (entry,) = tmp_path.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:100])  # truncated
    b = load_dataset("procedural", 16, "test", 18, seed=3, cache_dir=tmp_path)
    assert torch.equal(a.voxels, b.voxels)
    assert cache_mod.read_entry(entry).ids == a.ids  # rewritten, readable


def test_cache_dir_from_environment(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("ORIENT3D_CACHE", str(tmp_path / "c"))
    assert cache_mod.default_cache_dir() == tmp_path / "c"
    load_dataset("procedural", 16, "train", 9, seed=0)
    assert len(list((tmp_path / "c").glob("procedural-*.npz"))) == 1


def test_rasterize_keeps_thin_parts() -> None:
    grid = procedural.rasterize([("cyl", 2, 0.5, 0.5, 0.001, 0.0, 0.5)], 16)
    assert grid[:, :, :8].sum() >= 7 and grid.sum() == grid[:, :, :8].sum()
