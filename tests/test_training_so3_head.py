"""The SO(3) proposal head: its targets against a brute-force nearest cell, that fitting
learns the cells, and that ``head-refine`` searches where the head points and counts
its passes."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from orient3d import groups, pose, so3
from orient3d.config import ModelConfig
from orient3d.model import VAE
from orient3d.training.so3_head import cell_targets, fit_so3_head, head_top_k
from test_search_continuous import RES, _objects, one_thread  # noqa: F401 (an autouse fixture)


def test_cell_targets_match_the_nearest_cell_by_brute_force() -> None:
    grid = so3.so3_grid(1, torch.float64)  # (96, 3, 3)
    M = groups.cube_group().matrices.double()
    gen = torch.Generator().manual_seed(4)
    R = so3.random_rotations(40, gen, dtype=torch.float64)
    stab = torch.rand(40, 24, generator=gen) < 0.2
    stab[:, 0] = True
    got = cell_targets(R, stab, grid)
    for b in range(40):
        want = torch.zeros(grid.shape[0], dtype=torch.bool)
        for s in torch.nonzero(stab[b]).flatten().tolist():
            want[int(so3.geodesic_angle(R[b] @ M[s], grid).argmin())] = True
        assert torch.equal(got[b], want), b
    # Known answers: a grid point is its own cell; a fully symmetric object at the
    # identity is right in exactly the 24 cells of the cube rotations (all in the grid).
    assert cell_targets(grid[5:6], torch.eye(24, dtype=torch.bool)[:1], grid).nonzero()[
        :, 1
    ].tolist() == [5]
    every = cell_targets(
        torch.eye(3, dtype=torch.float64)[None], torch.ones(1, 24, dtype=torch.bool), grid
    )
    cube = {int(so3.geodesic_angle(m, grid).argmin()) for m in M}
    assert set(every[0].nonzero().flatten().tolist()) == cube and len(cube) == 24


class _Pointing(nn.Module):
    """A head that always proposes the cells ``cells`` of the level-1 grid, best first."""

    level = 1

    def __init__(self, cells: list[int]) -> None:
        super().__init__()
        self.register_buffer("grid", so3.so3_grid(1), persistent=False)
        self.cells = cells

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.zeros(x.shape[0], self.grid.shape[0])
        for rank, c in enumerate(self.cells):
            logits[:, c] = 10.0 - rank
        return logits


def test_head_refine_searches_where_the_head_points_and_counts_its_passes() -> None:
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=8, width=4, norm="group"), RES).eval()
    x = _objects(3, torch.Generator().manual_seed(1))
    grid = so3.so3_grid(1)
    for cell in (0, 41, 90):
        res = pose.estimate_pose(
            model, x, "head-refine", head=_Pointing([cell]), top_k=1, levels=2, steps=0, cosets=0
        )
        # the head (1), its proposal (1), two rounds of 27 neighbours, the final score (1)
        assert (res.forward_passes, res.backward_passes) == (1 + 1 + 2 * 27 + 1, 0)
        # each round moves at most one lattice diagonal: √3·(π/8 + π/16) from the cell
        reach = math.sqrt(3) * (so3.grid_spacing(2) + so3.grid_spacing(3))
        dist = so3.geodesic_angle(res.R, grid[cell].expand(3, 3, 3))
        assert bool((dist <= reach + 1e-4).all()), (cell, dist)
    # With cosets and two proposals: + the 24 turns, two rounds of cosets × 27, + 1.
    res = pose.estimate_pose(
        model, x, "head-refine", head=_Pointing([7, 8]), top_k=2, levels=1, steps=2, cosets=3
    )
    assert res.forward_passes == (1 + 2 + 2 * 27 + 3) + (24 + 3 * 27 + 3)
    again = pose.pose_scores(model, x, res.R[:, None])[:, 0]
    assert torch.allclose(again, res.score, rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="'head-refine' needs a fitted head"):
        pose.estimate_pose(model, x, "head-refine")
    with pytest.raises(ValueError, match="unknown pose method 'nope'"):
        pose.estimate_pose(model, x, "nope")


def test_fitting_learns_the_cells_and_leaves_the_model_alone() -> None:
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=8, width=8, norm="group"), RES).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _objects(128, torch.Generator().manual_seed(2))
    fit = fit_so3_head(model, x, epochs=40, batch=16, lr=2e-3, seed=0)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert fit.head.grid.shape == (96, 3, 3) and fit.seconds > 0
    # Fresh rotations of the same objects: above twice chance (k / 96) for k = 1 and 8
    # (this small encoder is untrained; BENCHMARKS.md measures a trained model's head).
    R = so3.random_rotations(128, torch.Generator().manual_seed(9))
    shown = (so3.resample(x, R) > 0.5).float()
    stab = groups.stabilizer_mask(x, groups.cube_group())
    top = head_top_k(fit.head, shown, R, stab, ks=(1, 8))
    assert top["1"] > 2 / 96 and top["8"] > 2 * 8 / 96, top
    # The same seed fits the same head.
    again = fit_so3_head(model, x, epochs=2, batch=16, seed=0)
    once = fit_so3_head(model, x, epochs=2, batch=16, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(again.head.parameters(), once.head.parameters()))
    with pytest.raises(ValueError, match=r"x must be \(N, 16, 16, 16\), got \(2, 8, 8, 8\)"):
        fit_so3_head(model, torch.zeros(2, 8, 8, 8), epochs=1)


class _Oracle(nn.Module):
    """A head that knows the cell of every grid it was told about (by its voxels)."""

    level = 1

    def __init__(self, cells: dict[bytes, int]) -> None:
        super().__init__()
        self.register_buffer("grid", so3.so3_grid(1), persistent=False)
        self.cells = cells

    def forward(self, x: Tensor) -> Tensor:
        logits = torch.zeros(x.shape[0], self.grid.shape[0])
        for b in range(x.shape[0]):
            logits[b, self.cells[x[b].numpy().tobytes()]] = 10.0
        return logits


def test_head_views_map_each_answer_back_to_the_pose_shown() -> None:
    """Each view M_q·x of x = R·c is (M_q R)·c: a head right about every view must agree
    on R's cell once its answers are mapped back, whatever views are averaged."""
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=8, width=4, norm="group"), RES).eval()
    o = groups.cube_group()
    M = o.matrices.float()
    grid = so3.so3_grid(1)
    c = _objects(3, torch.Generator().manual_seed(5))
    R = so3.random_rotations(3, torch.Generator().manual_seed(6))
    x = (so3.resample(c, R) > 0.5).float()
    cells: dict[bytes, int] = {}
    for b in range(3):
        for q in range(24):
            cells[groups.rotate(x[b], o, q).numpy().tobytes()] = int(
                so3.geodesic_angle(M[q] @ R[b], grid).argmin()
            )
    assert len(cells) == 3 * 24  # no view repeats another: the answers are distinct
    want = torch.stack([grid[int(so3.geodesic_angle(R[b], grid).argmin())] for b in range(3)])
    for views in (1, 4, 24):
        res = pose.estimate_pose(
            model, x, "head-refine", head=_Oracle(cells), head_views=views,
            top_k=1, levels=0, steps=0, cosets=0,
        )  # fmt: skip
        assert torch.allclose(res.R, want, atol=1e-5), views
        assert res.forward_passes == views + 1 + 1
    with pytest.raises(ValueError, match="head_views: 25 is invalid, must be in 1..24"):
        pose.estimate_pose(model, x, "head-refine", head=_Oracle(cells), head_views=25)


def test_left_cube_permutation_matches_the_turned_grid() -> None:
    M = groups.cube_group().matrices.double()
    for level in (0, 1, 2):
        grid = so3.so3_grid(level, torch.float64)
        perm = so3.left_cube_permutation(level)
        assert perm.shape == (24, grid.shape[0])
        for g in (0, 5, 17):
            assert sorted(perm[g].tolist()) == list(range(grid.shape[0]))  # a permutation
            assert torch.allclose(grid[perm[g]], M[g] @ grid, atol=1e-9)
        assert perm[0].tolist() == list(range(grid.shape[0]))  # the identity moves nothing
