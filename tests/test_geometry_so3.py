"""Continuous rotations: parametrizations against scipy, resampling against the exact
cube action, differentiability, composition, and the SO(3) grids."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from orient3d import groups, so3

DTYPES = [torch.float32, torch.float64]
TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture
def rots(torch_gen: torch.Generator) -> torch.Tensor:
    return so3.random_rotations((5, 7), torch_gen, dtype=torch.float64)  # (5, 7, 3, 3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_quaternion_matches_scipy(rots: torch.Tensor, dtype: torch.dtype) -> None:
    R = rots.to(dtype)
    q = so3.matrix_to_quaternion(R)  # (5, 7, 4)
    assert q.shape == (5, 7, 4) and bool((q[..., 0] >= 0).all())
    ref = Rotation.from_matrix(rots.reshape(-1, 3, 3).numpy()).as_quat()[:, [3, 0, 1, 2]]
    ref = ref * np.sign(ref[:, :1])  # scalar first, w >= 0
    np.testing.assert_allclose(q.reshape(-1, 4).double().numpy(), ref, atol=10 * TOL[dtype])
    back = so3.quaternion_to_matrix(q)
    assert torch.allclose(back, R, atol=10 * TOL[dtype])
    # Not normalized on input: scaling does not matter.
    assert torch.allclose(so3.quaternion_to_matrix(3 * q), R, atol=10 * TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
def test_sixd_and_axis_angle_round_trip(rots: torch.Tensor, dtype: torch.dtype) -> None:
    R = rots.to(dtype)
    assert torch.allclose(so3.sixd_to_matrix(so3.matrix_to_sixd(R)), R, atol=10 * TOL[dtype])
    v = so3.matrix_to_axis_angle(R)  # (5, 7, 3)
    ref = Rotation.from_matrix(rots.reshape(-1, 3, 3).numpy()).as_rotvec()
    np.testing.assert_allclose(v.reshape(-1, 3).double().numpy(), ref, atol=100 * TOL[dtype])
    assert torch.allclose(so3.axis_angle_to_matrix(v), R, atol=10 * TOL[dtype])
    # The 24 cube rotations include half turns (angle π), the hard case.
    M = groups.cube_group().matrices.to(dtype)
    assert torch.allclose(so3.axis_angle_to_matrix(so3.matrix_to_axis_angle(M)), M, atol=1e-5)
    assert torch.allclose(so3.quaternion_to_matrix(so3.matrix_to_quaternion(M)), M, atol=1e-6)


def test_sixd_gram_schmidt_gives_rotations(torch_gen: torch.Generator) -> None:
    R = so3.sixd_to_matrix(torch.randn(10, 6, generator=torch_gen, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64).expand(10, 3, 3)
    assert torch.allclose(R.transpose(-1, -2) @ R, eye, atol=1e-12)
    assert torch.allclose(torch.linalg.det(R), torch.ones(10, dtype=torch.float64))


@pytest.mark.parametrize("angle", [0.0, 1e-7, 0.3, 2.0, math.pi - 1e-6, math.pi])
def test_geodesic_angle_known(angle: float, rots: torch.Tensor) -> None:
    A = rots[0]  # (7, 3, 3)
    axis = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
    D = so3.axis_angle_to_matrix(axis / axis.norm() * angle)
    ang = so3.geodesic_angle(A, A @ D)  # (7,)
    assert torch.allclose(ang, torch.full_like(ang, angle), atol=1e-9)
    assert torch.allclose(so3.geodesic_angle(A @ D, A), ang, atol=1e-9)


def test_geodesic_angle_matches_scipy(rots: torch.Tensor) -> None:
    """The angle of ``A⁻¹B`` as scipy's ``Rotation.magnitude`` gives it, for random pairs
    and for quarter, half and third turns of the cube group (known: 90°, 180°, 120°)."""
    A, B = rots[0], rots[1]  # (7, 3, 3) each
    want = (Rotation.from_matrix(A.numpy()).inv() * Rotation.from_matrix(B.numpy())).magnitude()
    np.testing.assert_allclose(so3.geodesic_angle(A, B).numpy(), want, atol=1e-9)
    M = groups.cube_group().matrices.double()  # (24, 3, 3)
    ang = so3.geodesic_angle(torch.eye(3, dtype=torch.float64), M).numpy()
    np.testing.assert_allclose(ang, Rotation.from_matrix(M.numpy()).magnitude(), atol=1e-7)
    assert sorted(np.round(np.degrees(ang)).astype(int).tolist()) == sorted(
        [0] + [90] * 6 + [180] * 9 + [120] * 8
    )


def test_random_rotations_seeded_and_uniform() -> None:
    a = so3.random_rotations(4000, torch.Generator().manual_seed(3), dtype=torch.float64)
    b = so3.random_rotations(4000, torch.Generator().manual_seed(3), dtype=torch.float64)
    assert torch.equal(a, b)
    assert torch.allclose(torch.linalg.det(a), torch.ones(4000, dtype=torch.float64))
    # Haar: E[R] = 0, and the angle has density (1 - cos θ) / π, mean π/2 + 2/π.
    assert float(a.mean(0).abs().max()) < 0.05
    mean_angle = float(so3.geodesic_angle(torch.eye(3, dtype=torch.float64), a).mean())
    assert abs(mean_angle - (math.pi / 2 + 2 / math.pi)) < 0.03


@pytest.mark.parametrize("res", [5, 8])
def test_resample_equals_exact_cube_rotation(res: int, torch_gen: torch.Generator) -> None:
    O = groups.cube_group()
    x = (torch.rand(3, res, res, res, generator=torch_gen) > 0.5).float()
    M = O.matrices.float()
    for g in range(len(O)):
        got = so3.resample(x, M[g].expand(3, 3, 3))
        # Whole grid, boundary included: voxel centres map onto voxel centres.
        assert torch.allclose(got, groups.rotate(x, O, g), atol=1e-5), O.element_label(g)
    # Per-sample matrices and a channel axis.
    gb = torch.tensor([5, 17, 22])
    xc = torch.stack([x, 1 - x], dim=1)  # (3, 2, D, D, D)
    got = so3.resample(xc, M[gb])
    assert torch.allclose(got[:, 1], groups.rotate(1 - x, O, gb), atol=1e-5)


def test_resample_moves_a_voxel_to_R_c() -> None:
    # A quarter turn about z: (i, j, k) centred c -> R c, checked on one voxel.
    d = 7
    x = torch.zeros(1, d, d, d)
    x[0, 5, 1, 4] = 1.0
    R = torch.from_numpy(groups.axis_angle_matrix([0, 0, 1], math.pi / 2)).float()
    c = torch.tensor([5.0, 1.0, 4.0]) - (d - 1) / 2
    target = (R @ c + (d - 1) / 2).round().long().tolist()
    out = so3.resample(x, R)
    assert out[0, target[0], target[1], target[2]] == pytest.approx(1.0, abs=1e-5)
    assert float(out.sum()) == pytest.approx(1.0, abs=1e-5)


def _smooth(d: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, torch.Tensor]:
    """A wide Gaussian blob off centre, ``(1, D, D, D)``, and the centred coordinates."""
    ax = torch.arange(d, dtype=dtype) - (d - 1) / 2
    c = torch.stack(torch.meshgrid(ax, ax, ax, indexing="ij"), dim=-1)  # (D, D, D, 3)
    mu = torch.tensor([1.5, -1.0, 0.5], dtype=dtype)
    return torch.exp(-((c - mu) ** 2).sum(-1) / (2 * 4.0**2))[None], c


def test_resample_matches_the_analytic_rotation_and_composes(torch_gen: torch.Generator) -> None:
    d = 16
    x, c = _smooth(d)
    A = so3.axis_angle_to_matrix(torch.tensor([0.9, -0.2, 0.4], dtype=torch.float64))
    B = so3.axis_angle_to_matrix(torch.tensor([-0.1, 0.2, 1.0], dtype=torch.float64))
    mu = torch.tensor([1.5, -1.0, 0.5], dtype=torch.float64)
    # The blob centred at mu moves to A mu: out[c] = x[Aᵀ c].
    want = torch.exp(-((c - A @ mu) ** 2).sum(-1) / (2 * 4.0**2))[None]
    wrong = torch.exp(-((c - A.T @ mu) ** 2).sum(-1) / (2 * 4.0**2))[None]
    inner = c.norm(dim=-1) < (d - 1) / 2 - 1  # sources inside the grid (zeros outside)
    out = so3.resample(x, A)
    # Trilinear interpolation error of this blob is about 0.02; the other direction is far.
    assert float((out - want)[:, inner].abs().max()) < 0.03
    assert float((out - wrong)[:, inner].abs().max()) > 0.1
    twice = so3.resample(so3.resample(x, A), B)
    once = so3.resample(x, B @ A)
    err = float((twice - once)[:, inner].abs().max())
    assert err < 0.03
    assert float((so3.resample(x, A @ B) - once)[:, inner].abs().max()) > 3 * err  # order


def test_resample_gradcheck_sixd_and_quaternion(torch_gen: torch.Generator) -> None:
    x = torch.rand(2, 5, 5, 5, generator=torch_gen, dtype=torch.float64)
    d6 = torch.randn(2, 6, generator=torch_gen, dtype=torch.float64, requires_grad=True)
    q = torch.randn(2, 4, generator=torch_gen, dtype=torch.float64, requires_grad=True)
    v = torch.randn(2, 3, generator=torch_gen, dtype=torch.float64, requires_grad=True)
    w = torch.rand(2, 5, 5, 5, generator=torch_gen, dtype=torch.float64)

    def f6(p: torch.Tensor) -> torch.Tensor:
        return (so3.resample(x, so3.sixd_to_matrix(p)) * w).sum()

    def fq(p: torch.Tensor) -> torch.Tensor:
        return (so3.resample(x, so3.quaternion_to_matrix(p)) * w).sum()

    def fv(p: torch.Tensor) -> torch.Tensor:
        return (so3.resample(x, so3.axis_angle_to_matrix(p)) * w).sum()

    for fn, p in ((f6, d6), (fq, q), (fv, v)):
        assert torch.autograd.gradcheck(fn, (p,), eps=1e-6, atol=1e-5)


def test_so3_grid_levels() -> None:
    sizes = [24, 96, 720]
    eye = torch.eye(3, dtype=torch.float64)
    radii = []
    M = groups.cube_group().matrices.double()
    for level, n in enumerate(sizes):
        grid = so3.so3_grid(level, torch.float64)
        assert grid.shape == (n, 3, 3)
        assert torch.allclose(grid[0], eye)
        # Every cube rotation is in every level; no point appears twice.
        dist = so3.geodesic_angle(grid[None], M[:, None])  # (G, N)
        assert float(dist.min(dim=1).values.max()) < 1e-9
        q = so3.matrix_to_quaternion(grid)
        gram = (q @ q.T).abs().fill_diagonal_(0)
        assert float(gram.max()) < 1 - 1e-9
        radii.append(so3.covering_radius(grid, 4000, torch.Generator().manual_seed(0)))
    deg = [math.degrees(r) for r in radii]
    assert deg[0] > deg[1] > deg[2]
    for level, r in enumerate(deg):  # a lower bound of the value measured with more probes
        assert r <= so3.COVERING_DEG[level][1] + 0.5
        assert r > so3.COVERING_DEG[level][1] - 8


def test_neighbours(rots: torch.Tensor) -> None:
    R = rots[:2, :3]  # (2, 3, 3, 3)
    for level in (1, 2):
        nb = so3.neighbours(R, level)  # (2, 3, 27, 3, 3)
        assert nb.shape == (2, 3, 27, 3, 3)
        assert torch.allclose(nb[..., 0, :, :], R)
        dist = so3.geodesic_angle(R[..., None, :, :], nb)  # (2, 3, 27)
        h = so3.grid_spacing(level)
        norms = sorted({round(float(v) / h, 6) for v in dist.flatten()})
        assert norms == [0.0, 1.0, round(math.sqrt(2), 6), round(math.sqrt(3), 6)]
