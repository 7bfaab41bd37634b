"""Known answers of orientation usage."""

from __future__ import annotations

import numpy as np
import pytest

from orient3d import groups
from orient3d.metrics import orientation_usage, usage_from_hist

O = groups.cube_group()


def test_one_pose_has_zero_entropy() -> None:
    res = orientation_usage(np.full(100, 7), O)
    assert res["entropy_nats"] == 0.0 and res["n_used"] == 1
    assert res["hist"][7] == 100


def test_uniform_usage_is_maximal() -> None:
    res = orientation_usage(np.tile(np.arange(24), 5), O)
    assert res["entropy_nats"] == pytest.approx(np.log(24))
    assert res["entropy_bits"] == pytest.approx(np.log2(24))
    assert res["entropy_normalized"] == pytest.approx(1.0)
    assert res["n_used"] == 24


def test_min_count_threshold_and_hist() -> None:
    hist = np.zeros(24)
    hist[[0, 1, 2]] = [90, 9, 1]
    res = usage_from_hist(hist, min_count=5)
    assert res["n_used"] == 2 and res["n"] == 100
    p = np.array([0.9, 0.09, 0.01])
    assert res["entropy_nats"] == pytest.approx(-(p * np.log(p)).sum())


def test_symmetric_object_spreads_over_its_coset() -> None:
    stab = np.zeros((1, 24), dtype=bool)
    z_turns = [g for g in range(24) if int(O.matrices[g, 2, 2]) == 1]  # 4 turns about z
    stab[0, z_turns] = True
    res = orientation_usage([0], O, stab_mask=stab)
    assert res["hist"][z_turns] == pytest.approx([0.25] * 4)
    assert res["hist"].sum() == pytest.approx(1.0)
    assert res["entropy_nats"] == pytest.approx(np.log(4))
