"""Pose estimation through the real VAE: shapes and counts of each method, cube-start
finds cube rotations, and the error modulo symmetry on known answers."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import pytest
import torch

from orient3d import groups, pose, so3
from orient3d.config import ModelConfig
from orient3d.model import VAE
from orient3d.search.continuous import _cube_turns
from orient3d.search.poses import PoseSearch, search

RES = 16


@pytest.fixture(autouse=True, scope="module")
def one_thread() -> Iterator[None]:
    """Tiny models run several times faster on one thread when the cores are shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _objects(n: int, gen: torch.Generator) -> torch.Tensor:
    """``(n, 16, 16, 16)`` unions of 4 random boxes, with a trivial stabilizer in O."""
    out: list[torch.Tensor] = []
    while len(out) < n:
        x = torch.zeros(RES, RES, RES)
        for _ in range(4):
            lo = torch.randint(2, 9, (3,), generator=gen)
            size = torch.randint(2, 6, (3,), generator=gen)
            x[lo[0] : lo[0] + size[0], lo[1] : lo[1] + size[1], lo[2] : lo[2] + size[2]] = 1
        if int(groups.stabilizer_mask(x, groups.cube_group()).sum()) == 1:
            out.append(x)
    return torch.stack(out)


@pytest.fixture(scope="module")
def trained() -> tuple[VAE, torch.Tensor]:
    """A tiny VAE overfit for a few seconds on 6 objects in their canonical pose."""
    gen = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    x = _objects(6, gen)
    model = VAE(ModelConfig(latent=8, width=4, norm="group", beta=0.1), RES)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(150):
        loss = model(x, generator=gen).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), x


def test_symmetric_error_known_answers() -> None:
    O = groups.cube_group()
    M = O.matrices.double()
    R_true = so3.random_rotations(3, torch.Generator().manual_seed(1), dtype=torch.float64)
    quarter_z = O.index_of(groups.axis_angle_matrix([0, 0, 1], math.pi / 2))
    half_z = O.index_of(groups.axis_angle_matrix([0, 0, 1], math.pi))
    stab = torch.zeros(3, 24, dtype=torch.bool)
    stab[:, 0] = True
    stab[1, [quarter_z, half_z, O.inverse[quarter_z]]] = True  # 4-fold about z
    tilt = so3.axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.radians(7)], dtype=torch.float64))
    # x = R_true·c; a pose R claims x = R·c. With c = M_s·c, R_true M_s is as right.
    R_pred = torch.stack([R_true[0] @ tilt, R_true[1] @ M[quarter_z] @ tilt, R_true[2] @ M[half_z]])
    err = torch.rad2deg(pose.symmetric_error(R_pred, R_true, stab))
    assert err.tolist() == pytest.approx([7.0, 7.0, 180.0], abs=1e-6)
    # The other order (M_s applied after R_true) is not a symmetry of x in general.
    wrong = torch.rad2deg(pose.symmetric_error(M[quarter_z] @ R_true[1:2], R_true[1:2], stab[1:2]))
    assert float(wrong[0]) > 10


def test_pose_scores_match_the_model(trained: tuple[VAE, torch.Tensor]) -> None:
    model, x = trained
    O = groups.cube_group()
    R = O.matrices.float()[torch.tensor([[0, 5], [3, 0]])]  # (2, 2, 3, 3)
    got = pose.pose_scores(model, x[:2], R, chunk=3)  # (2, 2)
    with torch.no_grad():
        ref = torch.stack(
            [
                model(
                    groups.rotate(x[:2], O, O.inverse[torch.tensor([0, 3])]), sample=False
                ).neg_elbo,
                model(
                    groups.rotate(x[:2], O, O.inverse[torch.tensor([5, 0])]), sample=False
                ).neg_elbo,
            ],
            dim=1,
        )
    assert torch.allclose(got, ref, rtol=1e-4, atol=1e-2)


@pytest.mark.parametrize("method", sorted(pose.METHODS))
def test_methods_return_rotations_and_counts(
    method: str, trained: tuple[VAE, torch.Tensor]
) -> None:
    model, x = trained
    model.train()
    opts: dict[str, Any] = {"steps": 3, "grid_level": 0, "levels": 1, "top_k": 2, "cosets": 0}
    res = pose.estimate_pose(model, x[:2], method, **opts)
    assert model.training and all(p.requires_grad for p in model.parameters())  # restored
    model.eval()
    assert res.R.shape == (2, 3, 3) and res.score.shape == (2,)
    eye = torch.eye(3).expand(2, 3, 3)
    assert torch.allclose(res.R.transpose(-1, -2) @ res.R, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(res.R), torch.ones(2), atol=1e-5)
    extra = {"gradient": 0, "cube-start": 24, "grid-refine": 24 + 2 * 27}[method]
    assert (res.forward_passes, res.backward_passes) == (4 + extra, 3)
    # The reported score is that of the returned rotation.
    again = pose.pose_scores(model, x[:2], res.R[:, None])[:, 0]
    assert torch.allclose(again, res.score, rtol=1e-4, atol=1e-2)


def test_cosets_search_again_and_never_do_worse(trained: tuple[VAE, torch.Tensor]) -> None:
    model, x = trained
    O = groups.cube_group()
    R_true = so3.random_rotations(4, torch.Generator().manual_seed(3))
    shown = (so3.resample(x[:4], R_true) > 0.5).float()
    opts: dict[str, Any] = {"steps": 2, "grid_level": 0, "levels": 1, "top_k": 2}
    plain = pose.estimate_pose(model, shown, "grid-refine", cosets=0, **opts)
    both = pose.estimate_pose(model, shown, "grid-refine", cosets=3, **opts)
    first = 24 + 2 * 27 + 3  # the grid, one round of 2 × 27 neighbours, 2 steps + 1
    again = 24 + 3 * 27 + 3  # the 24 turns, one round of 3 × 27, 2 steps + 1
    assert (plain.forward_passes, plain.backward_passes) == (first, 2)
    assert (both.forward_passes, both.backward_passes) == (first + again, 4)
    # The first pass is deterministic and kept unless the second scores better.
    assert bool((both.score <= plain.score + 1e-4).all())
    again_scores = pose.pose_scores(model, shown, both.R[:, None])[:, 0]
    assert torch.allclose(again_scores, both.score, rtol=1e-4, atol=1e-2)
    with pytest.raises(ValueError, match="cosets: 25 is invalid, must be in 0..24"):
        pose.estimate_pose(model, shown, "grid-refine", cosets=25, **opts)
    # Started from a pose a cube turn away from the truth, the turns contain the truth.
    g = torch.tensor([7, 13, 20, 3])
    exact = groups.rotate(x[:4], O, g)
    wrong = O.matrices.float()[g] @ O.matrices.float()[5].T  # (4, 3, 3)
    found = search(model, exact, PoseSearch(grid_level=0, top_k=1, levels=0), _cube_turns(wrong))
    stab = groups.stabilizer_mask(x[:4], O)
    err = torch.rad2deg(pose.symmetric_error(found.pose.R, O.matrices.float()[g], stab))
    assert bool((err < 1e-3).all()) and found.passes == 24, err


def test_cube_start_finds_cube_rotations(trained: tuple[VAE, torch.Tensor]) -> None:
    model, x = trained
    O = groups.cube_group()
    g = torch.tensor([7, 13, 20, 3, 16, 9])
    shown = groups.rotate(x, O, g)  # (6, D, D, D)
    res = pose.estimate_pose(model, shown, "cube-start", steps=5, lr=0.01)
    stab = groups.stabilizer_mask(x, O)
    err = torch.rad2deg(pose.symmetric_error(res.R, O.matrices.float()[g], stab))
    assert bool((err < 10).all()), err
    # Refinement keeps the best iterate: never worse than the exact start.
    start = pose.pose_scores(model, shown, O.matrices.float()[g][:, None])[:, 0]
    assert bool((res.score <= start + 1e-3).all())


def test_recover_continuous_is_json_ready(trained: tuple[VAE, torch.Tensor]) -> None:
    model, x = trained
    stab = groups.stabilizer_mask(x, groups.cube_group())
    out = pose.recover_continuous(
        model, x, stab, 3, ("gradient", "grid-refine"), torch.Generator().manual_seed(0),
        steps=2, grid_level=0, levels=1, top_k=1, cosets=0,
    )  # fmt: skip
    assert set(out) == {"so3"} and set(out["so3"]) == {"gradient", "grid-refine"}
    row = json.loads(json.dumps(out))["so3"]["grid-refine"]
    assert 0.0 <= row["success_rate"] <= 1.0 and 0.0 <= row["median_error_deg"] <= 180.0
    assert row["forward_passes"] == 3 + 24 + 27 and row["n"] == 3
    # By class: the same draw, split by label; the counts and rates add up to the whole.
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    split = pose.recover_continuous(
        model, x, stab, 3, ("grid-refine",), torch.Generator().manual_seed(0),
        labels=labels, class_names=("a", "b"),
        steps=2, grid_level=0, levels=1, top_k=1, cosets=0,
    )["so3"]["grid-refine"]  # fmt: skip
    assert split["success_rate"] == row["success_rate"]
    by = split["by_class"]
    assert set(by) <= {"a", "b"} and sum(v["n"] for v in by.values()) == 3
    for key in ("success_rate", "scored_at_most_truth"):
        total = sum(v[key] * v["n"] for v in by.values()) / 3
        assert total == pytest.approx(split[key])
