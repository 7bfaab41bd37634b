"""Orientation views against groups.rotate."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from orient3d import groups
from orient3d.data import DataError, generate, make_view
from orient3d.data.views import AllView, RandomView, SingleView, SubsetView, collate

O = groups.cube_group()


@pytest.fixture(scope="module")
def vs():
    return generate(3, 16, np.random.default_rng(11))


def _check(item: dict, vs) -> None:
    i, g = item["index"], item["rotation"]
    assert torch.equal(item["voxels"], groups.rotate(vs.voxels[i], O, g))
    assert item["id"] == vs.ids[i] and item["label"] == int(vs.labels[i])


def test_single(vs) -> None:
    view = make_view(vs, "single")
    assert isinstance(view, SingleView) and len(view) == 3
    for k in range(3):
        item = view[k]
        assert item["index"] == k and item["rotation"] == 0
        assert torch.equal(item["voxels"], vs.voxels[k])


def test_all_is_every_rotation_in_order(vs) -> None:
    view = make_view(vs, "all")
    assert isinstance(view, AllView) and len(view) == 3 * 24
    seen = set()
    for k in range(len(view)):
        item = view[k]
        assert (item["index"], item["rotation"]) == divmod(k, 24)
        _check(item, vs)
        seen.add(item["voxels"].numpy().tobytes())
    assert len(seen) == 3 * 24  # trivial stabilizers: 24 distinct grids each
    assert torch.equal(view[-1]["voxels"], view[len(view) - 1]["voxels"])
    with pytest.raises(IndexError):
        view[len(view)]


def test_random_is_seeded_and_fresh(vs) -> None:
    a = make_view(vs, "random", rng=np.random.default_rng(0))
    b = RandomView(vs, np.random.default_rng(0))
    rots_a = [a[k % 3]["rotation"] for k in range(60)]
    rots_b = [b[k % 3]["rotation"] for k in range(60)]
    assert rots_a == rots_b and len(set(rots_a)) > 12
    assert len({a[0]["rotation"] for _ in range(20)}) > 1  # fresh per access
    for k in range(3):
        _check(a[k], vs)


def test_subset(vs) -> None:
    view = make_view(vs, "subset", elements=[0, 5, 7])
    assert isinstance(view, SubsetView) and len(view) == 9
    assert [view[k]["rotation"] for k in range(9)] == [0, 5, 7] * 3
    assert [view[k]["index"] for k in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    for k in range(9):
        _check(view[k], vs)


def test_bad_views(vs) -> None:
    with pytest.raises(DataError, match="unknown view"):
        make_view(vs, "sideways")
    with pytest.raises(DataError, match="rng"):
        make_view(vs, "random")
    with pytest.raises(DataError, match="elements"):
        make_view(vs, "subset", elements=[0, 24])


def test_dataloader_batches(vs) -> None:
    loader = DataLoader(make_view(vs, "all"), batch_size=10, collate_fn=collate)
    batch = next(iter(loader))
    assert batch["voxels"].shape == (10, 16, 16, 16) and batch["rotation"].tolist() == [*range(10)]
    assert torch.equal(batch["voxels"], groups.rotate(vs.voxels[[0] * 10], O, batch["rotation"]))


def test_random_view_reseeds_per_worker(vs, monkeypatch) -> None:
    class Info:
        def __init__(self, seed: int) -> None:
            self.seed = seed

    def rotations(worker_seed: int) -> list[int]:
        monkeypatch.setattr("orient3d.data.views.get_worker_info", lambda: Info(worker_seed))
        view = RandomView(vs, np.random.default_rng(0))  # every worker holds this copy
        return [view[k % 3]["rotation"] for k in range(30)]

    assert rotations(10) == rotations(10)
    assert rotations(10) != rotations(11)
