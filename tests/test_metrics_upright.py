"""Known answers of the upright-agreement metric (orient3d.metrics.upright)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from orient3d import groups
from orient3d.metrics.upright import (
    DIRECTIONS,
    direction_index,
    upright_agreement,
    upright_mask,
)

O = groups.cube_group()


def _chair() -> torch.Tensor:
    """An asymmetric upright object: a seat, a back at -y... legs at the bottom."""
    x = torch.zeros(6, 6, 6)
    x[1:5, 1:5, 2] = 1  # seat
    x[1:5, 4, 3:6] = 1  # back
    x[1, 1, 0:2] = x[4, 1, 0:2] = x[1, 4, 0:2] = 1  # three legs: no symmetry
    return x


def test_upright_poses_are_the_quarter_turns_about_z() -> None:
    up = upright_mask(O)
    assert up.sum() == 4 and up[0]
    for h in np.flatnonzero(up):
        m = O.matrices[h].numpy()
        assert (m @ np.array([0, 0, 1]) == [0, 0, 1]).all()
    # The direction of up is the third column of M[h].
    d = direction_index(O)
    assert DIRECTIONS[d[0]] == "+z"
    assert np.bincount(d, minlength=6).tolist() == [4] * 6


def test_the_grid_of_an_upright_pose_keeps_its_floor_at_the_bottom() -> None:
    x = _chair()
    for h in range(24):
        y = groups.rotate(x, O, h)
        legs_at_bottom = bool(y[:, :, 0:2].sum() == 6 and y[:, :, 0].sum() == 3)
        assert legs_at_bottom == bool(upright_mask(O)[h])


def test_identity_and_perfect_canonicalizers_score_one() -> None:
    stab = groups.stabilizer_mask(_chair()[None], O).expand(5, -1)
    res = upright_agreement(np.zeros(5, dtype=np.int64), stab, O)
    assert res["upright"] == 1.0 and res["up_consistency"] == 1.0
    assert res["chance"] == pytest.approx(1 / 6)
    # A quarter turn about z keeps up up; a half turn about x does not.
    qz, hx = (
        O.index_of(np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1]])),
        O.index_of(np.diag([1, -1, -1])),
    )
    res = upright_agreement(np.array([qz, hx, hx, hx, hx]), stab, O, labels=[0, 0, 1, 1, 1])
    assert res["upright"] == pytest.approx(0.2)
    assert res["per_class"] == {0: 0.5, 1: 0.0}
    assert res["up_consistency"] == pytest.approx(0.8)  # four of five have up at -z
    assert DIRECTIONS[int(np.argmax(res["up_counts"]))] == "-z"
    # Per class: class 0 has one up at +z and one at -z, class 1 all three at -z.
    plus_z, minus_z = DIRECTIONS.index("+z"), DIRECTIONS.index("-z")
    want = {0: np.eye(6)[plus_z] + np.eye(6)[minus_z], 1: 3 * np.eye(6)[minus_z]}
    assert set(res["per_class_up_counts"]) == {0, 1}
    for c, counts in want.items():
        np.testing.assert_allclose(res["per_class_up_counts"][c], counts)


def test_symmetry_counts_an_upside_down_symmetric_object_upright() -> None:
    rod = torch.zeros(4, 4, 4)
    rod[1:3, 1:3, :] = 1  # symmetric under the half turn about x (z -> -z)
    stab = groups.stabilizer_mask(rod[None], O)
    hx = O.index_of(np.diag([1, -1, -1]))
    res = upright_agreement(np.array([hx]), stab, O)
    assert res["upright"] == 1.0
    assert res["chance"] == pytest.approx(1 / 3)  # up goes to ±z for 8 of 24 poses
    # Its unit weight is shared by the two directions its coset sends up to.
    per = upright_agreement(np.array([hx]), stab, O, labels=[7])["per_class_up_counts"][7]
    np.testing.assert_allclose(per, [0, 0, 0, 0, 0.5, 0.5])


def test_random_poses_match_chance_and_views_are_items() -> None:
    rng = np.random.default_rng(0)
    stab = groups.stabilizer_mask(_chair()[None], O).expand(4000, -1)
    res = upright_agreement(rng.integers(24, size=4000), stab, O)
    assert res["upright"] == pytest.approx(res["chance"], abs=0.02)
    views = upright_agreement(rng.integers(24, size=(10, 24)), stab[:10], O)
    assert views["per_object"].shape == (10, 24)
    with pytest.raises(ValueError, match="labels"):
        upright_agreement(np.zeros(3, dtype=np.int64), stab[:3], O, labels=[0, 1])
