"""Known answers of recovery_accuracy, checked against real voxel grids."""

from __future__ import annotations

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from orient3d import groups
from orient3d.metrics import error_angles, recovery_accuracy

O = groups.cube_group()


def _asymmetric(d: int = 4) -> torch.Tensor:
    x = torch.zeros(d, d, d)
    x[0, 0, 0] = x[1, 0, 0] = x[2, 0, 0] = x[0, 1, 0] = x[0, 0, 1] = 1  # a chiral tripod
    x[0, 0, 2] = 1
    return x


def _table(d: int = 4) -> torch.Tensor:
    """A square table: a full floor plate and a centred column; Stab = 4 turns about z."""
    x = torch.zeros(d, d, d)
    x[:, :, 0] = 1
    x[1:3, 1:3, 1:] = 1
    return x


def test_stabilizers_of_fixtures() -> None:
    assert int(groups.stabilizer_mask(_asymmetric(), O).sum()) == 1
    assert int(groups.stabilizer_mask(_table(), O).sum()) == 4


def test_perfect_prediction_scores_one(rng: np.random.Generator) -> None:
    g = torch.from_numpy(rng.integers(0, 24, size=50))
    stab = groups.stabilizer_mask(_asymmetric(), O).expand(50, 24)
    res = recovery_accuracy(g, g, stab, O)
    assert res["accuracy"] == 1.0 and res["n_correct"] == 50
    assert res["error_angle_counts"] == {90: 0, 120: 0, 180: 0}


def test_symmetric_equivalent_prediction_counts_right() -> None:
    c = _table()
    stab = groups.stabilizer_mask(c, O)
    s_elems = stab.nonzero().flatten().tolist()
    true, pred = [], []
    for g in range(24):
        for s in s_elems:
            true.append(g)
            pred.append(int(O.compose(g, s)))  # pred·c = g·s·c = g·c
    true_t, pred_t = torch.tensor(true), torch.tensor(pred)
    for p, t in zip(pred, true):
        assert torch.equal(groups.rotate(c, O, p), groups.rotate(c, O, t))
    assert not torch.equal(true_t, pred_t)  # indices alone would call most of them wrong
    res = recovery_accuracy(pred_t, true_t, stab, O)
    assert res["accuracy"] == 1.0
    # The same predictions on an asymmetric object are mostly wrong.
    res_asym = recovery_accuracy(pred_t, true_t, groups.stabilizer_mask(_asymmetric(), O), O)
    assert res_asym["accuracy"] == 0.25


def test_error_angle_breakdown_asymmetric() -> None:
    stab = groups.stabilizer_mask(_asymmetric(), O)
    by_angle = {
        a: [g for g in range(24) if round(float(np.degrees(O.angles.numpy()[g]))) == a]
        for a in (90, 120, 180)
    }
    true = torch.arange(24)
    # pred = e·true with e a fixed 120° rotation: the error rotation is e.
    e = by_angle[120][0]
    res = recovery_accuracy(O.compose(e, true), true, stab, O)
    assert res["accuracy"] == 0.0
    assert res["error_angle_counts"] == {90: 0, 120: 24, 180: 0}


def test_error_angles_equal_slow_loop(rng: np.random.Generator) -> None:
    grids = [_table(), _asymmetric(), torch.ones(4, 4, 4)]
    n = 60
    which = rng.integers(0, 3, size=n)
    stab = torch.stack([groups.stabilizer_mask(grids[i], O) for i in which])
    pred = rng.integers(0, 24, size=n)
    true = rng.integers(0, 24, size=n)
    fast = error_angles(pred, true, stab, O)
    m = O.matrices.numpy().astype(float)
    for b in range(n):
        best = 360.0
        for s in range(24):
            # pred·s gives the same grid as pred exactly when s fixes the object.
            if not torch.equal(groups.rotate(grids[which[b]], O, s), grids[which[b]]):
                continue
            err = m[pred[b]] @ m[s] @ m[true[b]].T
            best = min(best, float(np.degrees(Rotation.from_matrix(err).magnitude())))
        assert abs(fast[b] - best) < 1e-6
    # The full cube is fixed by everything: every prediction is right.
    assert (fast[which == 2] == 0).all()


def test_posterior_mass_sums_equivalent_elements() -> None:
    stab = groups.stabilizer_mask(_table(), O).expand(24, 24)
    true = torch.arange(24)
    uniform = torch.full((24, 24), 1 / 24, dtype=torch.float64)
    res = recovery_accuracy(true, true, stab, O, posterior=uniform)
    assert abs(res["posterior_mass"] - 4 / 24) < 1e-12
    # All mass on one symmetric equivalent of the truth counts fully.
    s = int(stab[0].nonzero().flatten()[-1])
    onehot = torch.nn.functional.one_hot(O.compose(true, s), 24).double()
    assert (
        abs(recovery_accuracy(true, true, stab, O, posterior=onehot)["posterior_mass"] - 1) < 1e-12
    )
