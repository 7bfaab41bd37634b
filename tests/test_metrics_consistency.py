"""Known answers of the consistency metrics, and the batched counts against a slow loop."""

from __future__ import annotations

import numpy as np
import torch

from orient3d import groups
from orient3d.metrics import (
    canonical_pose,
    class_consistency,
    global_consistency,
    instance_consistency,
    pose_use_counts,
)

O = groups.cube_group()


def _grids(rng: np.random.Generator, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` small objects: random polycubes, square tables and rods (mixed symmetry)."""
    out = []
    for i in range(n):
        x = torch.zeros(4, 4, 4)
        kind = i % 3
        if kind == 0:
            x = torch.from_numpy(rng.random((4, 4, 4)) < 0.4).float()
        elif kind == 1:
            x[:, :, 0] = 1
            x[1:3, 1:3, 1:] = 1
        else:
            x[1:3, 1:3, :] = 1  # a rod along z: Stab has 8 elements
        out.append(x)
    x = torch.stack(out)
    return x, groups.stabilizer_mask(x, O)


def _perfect_picks(rng: np.random.Generator, stab: torch.Tensor, offset: int) -> np.ndarray:
    """``(N, 24)`` picks r of an exact canonicalizer: every view g goes to grid offset·c.

    ``r = g·s·offset⁻¹`` for a random ``s ∈ Stab`` per view, so ``h = r⁻¹g = offset·s⁻¹``
    differs as an index but gives the same voxels.
    """
    n = stab.shape[0]
    r = np.empty((n, 24), dtype=np.int64)
    inv_off = int(O.inverse[offset])
    for i in range(n):
        elems = stab[i].nonzero().flatten().numpy()
        for g in range(24):
            s = int(rng.choice(elems))
            r[i, g] = int(O.compose(O.compose(g, s), inv_off))
    return r


def test_perfect_canonicalizer_scores_one(rng: np.random.Generator) -> None:
    x, stab = _grids(rng, 12)
    r = _perfect_picks(rng, stab, offset=5)
    h = canonical_pose(r, np.arange(24)[None, :], O)
    assert len(np.unique(h)) > 1  # comparing indices alone would not give 1
    for i in range(12):  # every view really gives the same grid
        canon = groups.rotate(x[i].expand(24, 4, 4, 4), O, torch.from_numpy(h[i]))
        assert (canon == canon[0]).all()
    inst = instance_consistency(h, stab, O)
    assert inst["consistency"] == 1.0 and (inst["n_distinct"] == 1).all()
    glob = global_consistency(h, stab, O)
    assert glob["consistency"] == 1.0 and glob["modal_pose"] == 5
    labels = np.arange(12) % 3
    cls = class_consistency(h[:, 0], stab, labels, O)
    assert cls["consistency"] == 1.0 and cls["weighted"] == 1.0
    assert set(cls["per_class"]) == {0, 1, 2}


def test_random_choices_score_near_chance(rng: np.random.Generator) -> None:
    n = 4800
    h = rng.integers(0, 24, size=n)
    stab = np.zeros((n, 24), dtype=bool)
    stab[:, 0] = True
    res = global_consistency(h, stab, O)
    p = 1 / 24
    tol = 5 * np.sqrt(p * (1 - p) / n)  # the max over 24 poses stays within ~3 sd
    assert res["chance"] == p
    assert abs(res["consistency"] - p) < tol
    inst = instance_consistency(h.reshape(200, 24), stab[:200], O)
    assert inst["mean_distinct"] > 12  # ~15.3 distinct of 24 for uniform picks


def test_class_consistency_two_classes() -> None:
    n = 40
    labels = np.array(["chair"] * 20 + ["lamp"] * 20)
    h = np.where(labels == "chair", 3, 7)
    h[0] = 11  # one chair elsewhere
    stab = np.zeros((n, 24), dtype=bool)
    stab[:, 0] = True
    res = class_consistency(h, stab, labels, O)
    assert res["per_class"]["chair"]["consistency"] == 19 / 20
    assert res["per_class"]["lamp"]["modal_pose"] == 7
    assert abs(res["weighted"] - 39 / 40) < 1e-12
    assert global_consistency(h, stab, O)["consistency"] == 0.5


def test_pose_use_counts_equal_slow_loop(rng: np.random.Generator) -> None:
    x, stab = _grids(rng, 9)
    h = rng.integers(0, 24, size=(9, 3))
    fast = pose_use_counts(h, stab, O)
    slow = np.zeros(24, dtype=np.int64)
    for i in range(9):
        for v in range(3):
            target = groups.rotate(x[i], O, int(h[i, v]))
            for p in range(24):
                slow[p] += int(torch.equal(groups.rotate(x[i], O, p), target))
    assert (fast == slow).all()
    inst = instance_consistency(h, stab, O)
    for i in range(9):
        views = [groups.rotate(x[i], O, int(g)) for g in h[i]]
        same = [sum(torch.equal(a, b) for b in views) for a in views]
        assert inst["per_object"][i] == max(same) / 3
