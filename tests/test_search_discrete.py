"""Orientation search: batched scores equal the slow loop; choices give known answers."""

from __future__ import annotations

import math

import pytest
import torch

from orient3d.config import ModelConfig
from orient3d.data import VoxelSet
from orient3d.groups import cube_group, rotate, stabilizer_mask
from orient3d.model import VAE
from orient3d.search import (
    canonical_pose,
    canonicalize,
    choice_from_pose,
    choose,
    discrete,
    score_orientations,
)


def make_objects(n: int, res: int = 16, seed: int = 0) -> VoxelSet:
    """``n`` random asymmetric polycubes of cells of ``res / 4`` voxels (trivial stabilizer)."""
    gen = torch.Generator().manual_seed(seed)
    grids: list[torch.Tensor] = []
    o = cube_group()
    s = res // 4
    while len(grids) < n:
        cells = torch.zeros(4, 4, 4, dtype=torch.uint8)
        cur = torch.randint(0, 4, (3,), generator=gen)
        cells[tuple(cur)] = 1
        for _ in range(int(torch.randint(5, 9, (1,), generator=gen))):
            step = torch.zeros(3, dtype=torch.long)
            step[int(torch.randint(0, 3, (1,), generator=gen))] = 1 - 2 * int(
                torch.randint(0, 2, (1,), generator=gen)
            )
            cur = (cur + step).clamp(0, 3)
            cells[tuple(cur)] = 1
        grid = cells.repeat_interleave(s, 0).repeat_interleave(s, 1).repeat_interleave(s, 2)
        if stabilizer_mask(grid, o).sum() == 1:
            grids.append(grid)
    vox = torch.stack(grids)  # (N, D, D, D)
    return VoxelSet(
        voxels=vox,
        labels=torch.zeros(n, dtype=torch.long),
        class_names=("polycube",),
        ids=tuple(f"p{i}" for i in range(n)),
        stabilizers=stabilizer_mask(vox, o),
    )


def tiny_model(dtype: torch.dtype = torch.float32, seed: int = 0) -> VAE:
    torch.manual_seed(seed)
    return VAE(ModelConfig(latent=4, width=4), 16).to(dtype)


@pytest.mark.parametrize("precision", ["fp32", "auto"])
def test_batched_scores_equal_slow_loop(precision: str) -> None:
    o = cube_group()
    model = tiny_model(torch.float64)
    model.train()  # scoring must switch to eval (BatchNorm running stats) and back
    x = make_objects(2).voxels.double()
    fast = score_orientations(model, x, o, chunk=30, precision=precision)  # type: ignore[arg-type]
    assert model.training
    assert fast.shape == (2, 24)
    model.eval()
    slow = torch.empty(2, 24)
    with torch.no_grad():
        for b in range(2):
            for g in range(24):
                grid = rotate(x[b], o, int(o.inverse[g]))[None]  # g⁻¹·x
                slow[b, g] = model(grid, sample=False).neg_elbo[0]
    torch.testing.assert_close(fast, slow, rtol=1e-6, atol=1e-4)


def test_candidates_score_the_same_elements() -> None:
    o = cube_group()
    model = tiny_model()
    x = make_objects(2).voxels.float()
    full = score_orientations(model, x, o)
    cand = torch.tensor([[5, 0, 17], [23, 1, 1]])
    part = score_orientations(model, x, o, candidates=cand, chunk=4)
    torch.testing.assert_close(part, full.gather(1, cand), rtol=1e-5, atol=1e-3)


def test_sampled_scores_follow_the_generator() -> None:
    model = tiny_model()
    x = make_objects(2).voxels.float()
    a = score_orientations(model, x, sample=True, generator=torch.Generator().manual_seed(3))
    b = score_orientations(model, x, sample=True, generator=torch.Generator().manual_seed(3))
    c = score_orientations(model, x, sample=False)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_bf16_scores_close_to_fp32() -> None:
    model = tiny_model()
    x = make_objects(2).voxels.float()
    a = score_orientations(model, x, precision="fp32")
    b = score_orientations(model, x, precision="bf16")
    assert b.dtype == torch.float32
    assert ((a - b).abs() / a.abs()).max() < 0.05


@pytest.mark.parametrize(
    ("native", "speedup", "want"), [(True, 4.1, "bf16"), (True, 0.56, "fp32"), (False, 4.1, "fp32")]
)
def test_auto_scores_in_bf16_where_training_would(
    monkeypatch: pytest.MonkeyPatch, native: bool, speedup: float, want: str
) -> None:
    from orient3d import devices

    monkeypatch.setattr(devices, "native_bf16", lambda device: native)
    monkeypatch.setattr(devices, "bf16_matmul_speedup", lambda: speedup)
    cpu = torch.device("cpu")
    assert discrete.scoring_precision(cpu, "auto") == want
    assert devices.resolve_precision(cpu, "auto") == want  # one rule for both
    for given in ("fp32", "bf16"):  # explicit choices are kept
        assert discrete.scoring_precision(cpu, given) == given
    with pytest.raises(ValueError, match="precision"):
        discrete.scoring_precision(cpu, "fp16")


def test_oh_scores_48_and_rotated_input_moves_the_argmin() -> None:
    oh = cube_group(reflections=True)
    model = tiny_model()
    x = make_objects(1).voxels.float()
    s = score_orientations(model, x, oh)
    assert s.shape == (1, 48)
    # Showing g·x: the score of r for g·x is the score of g⁻¹r for x.
    g = 7
    sg = score_orientations(model, rotate(x, oh, g), oh)
    idx = oh.table[oh.inverse[g]]  # g⁻¹r for every r
    torch.testing.assert_close(sg[0], s[0, idx], rtol=1e-5, atol=1e-3)


def test_choose_hard_and_soft_known_answers() -> None:
    scores = torch.tensor([[3.0, 1.0, 2.0], [0.0, 0.0, 5.0]])
    hard = choose(scores, "hard")
    assert hard.r.tolist() == [1, 0]
    assert hard.posterior.tolist() == [[0, 1, 0], [1, 0, 0]]
    torch.testing.assert_close(hard.bound, torch.tensor([-1.0, 0.0]) - math.log(3))
    soft = choose(scores, "soft", temperature=1.0)
    assert soft.r.tolist() == [1, 0]
    torch.testing.assert_close(soft.posterior, torch.softmax(-scores, dim=1))
    # At T = 1 the bound is logsumexp(-L) - log|G| (the best bound), above the hard one.
    torch.testing.assert_close(soft.bound, torch.logsumexp(-scores, dim=1) - math.log(3))
    assert (soft.bound >= hard.bound).all()
    cold = choose(scores, "soft", temperature=1e-3)
    torch.testing.assert_close(cold.bound[:1], hard.bound[:1], atol=1e-3, rtol=0)
    hot = choose(scores, "soft", temperature=1e3)
    torch.testing.assert_close(hot.posterior, torch.full((2, 3), 1 / 3), atol=1e-2, rtol=0)
    with pytest.raises(ValueError):
        choose(scores, "medium")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        choose(scores, "soft", temperature=0.0)


def test_choose_with_candidates_scatters_the_posterior() -> None:
    scores = torch.tensor([[2.0, 1.0]])
    cand = torch.tensor([[4, 9]])
    c = choose(scores, "soft", candidates=cand, order=24)
    assert c.r.tolist() == [9]
    assert c.posterior.shape == (1, 24)
    e1, e2 = math.exp(-1.0), math.exp(-2.0)  # softmax of the negative scores 2, 1
    assert c.posterior[0, [4, 9]].tolist() == pytest.approx([e2 / (e1 + e2), e1 / (e1 + e2)])
    assert c.posterior[0].count_nonzero() == 2
    torch.testing.assert_close(c.bound, torch.logsumexp(-scores, 1) - math.log(24))


def test_canonical_pose_round_trip() -> None:
    o = cube_group()
    r = torch.arange(24).repeat_interleave(24)
    g = torch.arange(24).repeat(24)
    h = canonical_pose(r, g, o)
    assert torch.equal(choice_from_pose(h, g, o), r)
    # r⁻¹·(g·c) == h·c on a real grid
    x = make_objects(1).voxels[0]
    for i in (0, 100, 575):
        shown = rotate(x, o, int(g[i]))
        assert torch.equal(rotate(shown, o, int(o.inverse[r[i]])), rotate(x, o, int(h[i])))


def test_canonicalize_is_view_independent() -> None:
    """Exhaustive search over an exact group: every view maps to the same canonical grid."""
    o = cube_group()
    model = tiny_model()
    c = make_objects(1).voxels
    views = rotate(c.expand(8, -1, -1, -1), o, torch.arange(0, 24, 3))  # (8, D, D, D)
    r = canonicalize(model, views, o)
    canon = rotate(views, o, o.inverse[r])
    assert (canon == canon[0]).all()
