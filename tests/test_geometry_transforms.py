"""General poses: exact integer shifts, pose algebra, random views, shift recovery."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from orient3d import so3
from orient3d.data import VoxelSet
from orient3d.groups import cube_group, rotate
from orient3d.model import VAE
from orient3d.pose_search import PoseSearch, score_poses, search
from orient3d.transforms import (
    Pose,
    apply,
    compose,
    identity,
    inverse,
    random_pose,
    shift,
    shift_offsets,
    undo,
)
from test_evaluation_recovery import _train_single
from test_search_discrete import make_objects


def _blob(n: int = 3, d: int = 16, margin: int = 3, seed: int = 0) -> torch.Tensor:
    """``(n, d, d, d)`` random 0/1 grids empty within ``margin`` of every face."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, d, d, d)
    inner = torch.rand(n, d - 2 * margin, d - 2 * margin, d - 2 * margin, generator=g) > 0.6
    x[:, margin:-margin, margin:-margin, margin:-margin] = inner.float()
    return x


def test_a_shifted_grid_shifted_back_is_exact() -> None:
    x = _blob()
    t = torch.tensor([[1, -2, 3], [0, 0, 0], [-3, 3, -1]])
    y = shift(x, t)
    assert not torch.equal(y[0], x[0]) and torch.equal(y[1], x[1])
    assert torch.equal(shift(y, -t), x)
    assert torch.equal(y[0, 4, 3, 6], x[0, 3, 5, 3])  # out[p + t] = x[p]
    assert torch.equal(shift(x.to(torch.uint8), t), y.to(torch.uint8))


def test_a_cube_rotation_with_a_shift_is_exact_and_undone() -> None:
    o, x = cube_group(), _blob()
    g = torch.tensor([5, 0, 17])
    t = torch.tensor([[1.0, 0, -1], [2, 2, 2], [0, -3, 0]])
    p = Pose(o.matrices[g].float(), t, torch.ones(3))
    shown = apply(x, p)
    assert torch.allclose(shown, shift(rotate(x, o, g), t), atol=1e-5)
    assert torch.allclose(undo(shown, p), x, atol=1e-5)


def test_scale_moves_a_voxel_from_p_to_s_p() -> None:
    d, c = 17, 8  # odd side: the centre is a voxel
    x = torch.zeros(1, d, d, d)
    x[0, c + 3, c, c] = 1
    p = Pose(torch.eye(3)[None], torch.zeros(1, 3), torch.tensor([2.0]))
    y = apply(x, p)
    assert y[0, c + 6, c, c] == pytest.approx(1.0, abs=1e-5)
    assert float(y.sum()) == pytest.approx(8.0, abs=1e-3)  # the volume grows by s³


def test_pose_algebra() -> None:
    g = torch.Generator().manual_seed(0)
    a = random_pose(5, g, translate=2, scales=(0.8, 1.25))
    b = random_pose(5, g, translate=2, scales=(0.8, 1.25))
    e = compose(a, inverse(a))
    assert torch.allclose(e.R, torch.eye(3).expand(5, 3, 3), atol=1e-5)
    assert torch.allclose(e.t, torch.zeros(5, 3), atol=1e-5) and torch.allclose(e.s, torch.ones(5))
    ab = compose(a, b)
    p = torch.randn(5, 3, generator=g)
    bp = b.s[:, None] * (b.R @ p[..., None])[..., 0] + b.t
    abp = a.s[:, None] * (a.R @ bp[..., None])[..., 0] + a.t
    assert torch.allclose(ab.s[:, None] * (ab.R @ p[..., None])[..., 0] + ab.t, abp, atol=1e-4)
    back = Pose.from_matrix(ab.matrix())
    assert torch.allclose(back.R, ab.R, atol=1e-5) and torch.allclose(back.s, ab.s, atol=1e-5)
    assert identity(2).shape == (2,)


def test_random_pose_is_seeded_and_in_range() -> None:
    a = random_pose(200, torch.Generator().manual_seed(1), translate=2, scales=(0.9, 1.1))
    b = random_pose(200, torch.Generator().manual_seed(1), translate=2, scales=(0.9, 1.1))
    assert torch.equal(a.R, b.R) and torch.equal(a.t, b.t) and torch.equal(a.s, b.s)
    assert set(a.t.unique().tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert a.s.unique().tolist() == pytest.approx([0.9, 1.1])
    assert torch.allclose(a.R @ a.R.transpose(-1, -2), torch.eye(3).expand(200, 3, 3), atol=1e-5)
    offs = shift_offsets(1)
    assert offs.shape == (27, 3) and offs[0].abs().sum() == 0


def _inset(n: int = 6) -> VoxelSet:
    """Procedural objects with an empty 1-voxel border, so that ±1 shifts are lossless."""
    objs = make_objects(n, seed=3)
    v = torch.zeros_like(objs.voxels)
    v[:, 1:-1, 1:-1, 1:-1] = objs.voxels[:, 1:-1, 1:-1, 1:-1]
    return dataclasses.replace(objs, voxels=v)


@pytest.fixture(scope="module")
def trained() -> VAE:
    return _train_single(_inset(), steps=150)


def test_scoring_candidates_with_the_true_shift_recovers_it(trained: VAE) -> None:
    objs = _inset()
    t_true = torch.tensor([[1.0, 0, -1], [0, 1, 1], [-1, -1, 0], [1, 1, 1], [0, 0, 1], [-1, 0, 0]])
    x = shift(objs.voxels.float(), t_true)
    offs = shift_offsets(1)  # (27, 3)
    cand = Pose(torch.eye(3).expand(6, 27, 3, 3), offs.expand(6, 27, 3), torch.ones(6, 27))
    scores = score_poses(trained, x, cand, PoseSearch())  # (6, 27)
    assert torch.equal(offs[scores.argmin(dim=1)], t_true)


def test_search_finds_rotation_and_shift_together(trained: VAE) -> None:
    o, objs = cube_group(), _inset()
    g = torch.tensor([3, 9, 0, 14, 21, 7])
    t_true = torch.tensor([[1.0, 0, -1], [0, 1, 1], [-1, -1, 0], [1, 1, 1], [0, 0, 1], [-1, 0, 0]])
    x = shift(rotate(objs.voxels.float(), o, g), t_true)
    found = search(trained, x, PoseSearch(grid_level=0, top_k=2, levels=1, translate=1))
    err = torch.rad2deg(so3.geodesic_angle(found.pose.R, o.matrices[g].float()))
    assert float((err < 1).float().mean()) >= 5 / 6, err
    assert float((found.pose.t == t_true).all(dim=1).float().mean()) >= 5 / 6
    assert found.passes == 24 + 2 * 27 + 2 * 27


def test_search_over_scales_finds_the_applied_scale(trained: VAE) -> None:
    objs = _inset()
    s_true = torch.tensor([1.25, 0.8, 1.0, 1.25, 0.8, 1.0])
    pose = Pose(torch.eye(3).expand(6, 3, 3), torch.zeros(6, 3), s_true)
    x = (apply(objs.voxels.float(), pose) > 0.5).float()
    opt = PoseSearch(grid_level=0, top_k=1, levels=0, scales=(0.8, 1.0, 1.25), frame="shown")
    found = search(trained, x, opt)
    assert found.passes == 24 * 3
    assert float((found.pose.s == s_true).float().mean()) >= 5 / 6, found.pose.s
