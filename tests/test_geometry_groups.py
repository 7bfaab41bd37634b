"""Group laws, the external reference (scipy), and exactness of the voxel action."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from orient3d import groups

O = groups.cube_group()
OH = groups.cube_group(reflections=True)
BOTH = [O, OH]


def _key(m: np.ndarray) -> bytes:
    return np.rint(m).astype(np.int64).tobytes()


@pytest.mark.parametrize("group", BOTH, ids=lambda g: g.name)
def test_group_laws_over_every_element(group: groups.CubeGroup) -> None:
    m = group.matrices.numpy()
    n = len(group)
    assert n == (24 if group.name == "O" else 48)
    assert (m[0] == np.eye(3)).all()
    keys = {_key(a): i for i, a in enumerate(m)}
    assert len(keys) == n  # distinct
    for a, b in itertools.product(range(n), repeat=2):
        prod = m[a] @ m[b]
        assert _key(prod) in keys  # closure
        assert keys[_key(prod)] == int(group.table[a, b])
    for a in range(n):
        assert (m[a] @ m[int(group.inverse[a])] == np.eye(3)).all()
        assert int(group.compose(a, 0)) == a == int(group.compose(0, a))
    t = group.table
    for a, b, c in itertools.product(range(n), repeat=3):
        assert t[t[a, b], c] == t[a, t[b, c]]


@pytest.mark.parametrize("group", BOTH, ids=lambda g: g.name)
def test_signed_permutations_with_right_determinants(group: groups.CubeGroup) -> None:
    m = group.matrices.numpy()
    assert set(np.abs(m).sum(axis=1).ravel().tolist()) == {1}
    assert set(np.abs(m).sum(axis=2).ravel().tolist()) == {1}
    dets = np.rint(np.linalg.det(m.astype(float))).astype(int)
    assert (dets == group.determinants.numpy()).all()
    expected = {1} if group.name == "O" else {1, -1}
    assert set(dets.tolist()) == expected


def test_O_equals_scipy_octahedral_group() -> None:
    ref = np.rint(Rotation.create_group("O").as_matrix()).astype(np.int64)
    assert {_key(a) for a in ref} == {_key(a) for a in O.matrices.numpy()}


def test_Oh_is_O_times_inversion() -> None:
    ref = np.rint(Rotation.create_group("O").as_matrix()).astype(np.int64)
    expected = {_key(a) for a in ref} | {_key(-a) for a in ref}
    assert expected == {_key(a) for a in OH.matrices.numpy()}
    proper = [i for i in range(48) if int(OH.determinants[i]) == 1]
    assert len(proper) == 24


def test_generators_come_from_axes() -> None:
    m = O.matrices.numpy()
    q, t = (m[i] for i in O.generators)
    assert np.allclose(q, groups.axis_angle_matrix([0, 0, 1], np.pi / 2))
    assert np.allclose(t, groups.axis_angle_matrix([1, 1, 1], 2 * np.pi / 3))
    assert (OH.matrices[OH.generators[2]].numpy() == -np.eye(3)).all()


@pytest.mark.parametrize("group", BOTH, ids=lambda g: g.name)
def test_angles_and_axes_match_scipy(group: groups.CubeGroup) -> None:
    for g in range(len(group)):
        m = group.matrices[g].numpy().astype(float) * int(group.determinants[g])
        rotvec = Rotation.from_matrix(m).as_rotvec()
        angle = np.linalg.norm(rotvec)
        assert np.isclose(float(group.angles[g]), angle, atol=1e-6)
        if angle > 1e-6:
            axis = group.axes[g].numpy()
            assert np.allclose(groups.axis_angle_matrix(axis, float(group.angles[g])), m)


def test_conjugacy_classes_of_O() -> None:
    sizes = sorted(len(c) for c in O.classes)
    assert sizes == [1, 3, 6, 6, 8]  # identity, face 180°, face 90°, edge 180°, vertex 120°
    assert sorted(len(c) for c in OH.classes) == [1, 1, 3, 3, 6, 6, 6, 6, 8, 8]
    for cls in O.classes:
        angles = {round(np.degrees(float(O.angles[g]))) for g in cls}
        assert len(angles) == 1
        assert sorted(i for c in O.classes for i in c) == list(range(24))


def _centres(d: int) -> np.ndarray:
    idx = np.stack(np.meshgrid(*[np.arange(d)] * 3, indexing="ij"), axis=-1).reshape(-1, 3)
    return idx - (d - 1) / 2


@pytest.mark.parametrize("d", [3, 4, 5])
@pytest.mark.parametrize("group", BOTH, ids=lambda g: g.name)
def test_voxel_action_matches_matrix_action_on_centres(group: groups.CubeGroup, d: int) -> None:
    """Rotating by R moves the voxel at centred coordinate c to R @ c, for every element."""
    x = torch.arange(d**3, dtype=torch.float64).reshape(d, d, d)
    c = _centres(d)
    for g in range(len(group)):
        r = group.matrices[g].numpy()
        y = groups.rotate(x, group, g).numpy()
        dst = np.rint(c @ r.T + (d - 1) / 2).astype(int)
        src = np.rint(c + (d - 1) / 2).astype(int)
        assert (
            y[dst[:, 0], dst[:, 1], dst[:, 2]] == x.numpy()[src[:, 0], src[:, 1], src[:, 2]]
        ).all()


def test_axis_convention_quarter_turn_about_up() -> None:
    """90° about z (up) takes +x to +y and keeps every layer's height."""
    d = 4
    x = torch.zeros(d, d, d)
    x[3, 1, 0] = 1  # at +x, on the floor
    g = O.index_of(groups.axis_angle_matrix([0, 0, 1], np.pi / 2))
    y = groups.rotate(x, O, g)
    assert y.nonzero().tolist() == [[2, 3, 0]]  # now at +y, still on the floor


@pytest.mark.parametrize("group", BOTH, ids=lambda g: g.name)
def test_composition_convention(group: groups.CubeGroup, torch_gen: torch.Generator) -> None:
    x = torch.rand(5, 5, 5, generator=torch_gen)
    n = len(group)
    for a, b in itertools.product(range(n), repeat=2):
        lhs = groups.rotate(groups.rotate(x, group, a), group, b)
        rhs = groups.rotate(x, group, int(group.compose(b, a)))
        assert torch.equal(lhs, rhs)


def test_batched_rotate_and_orbit_equal_slow_loops(torch_gen: torch.Generator) -> None:
    x = torch.rand(7, 2, 6, 6, 6, generator=torch_gen)  # extra channel axis
    g = torch.randint(0, 24, (7,), generator=torch_gen)
    y = groups.rotate(x, O, g)
    for b in range(7):
        assert torch.equal(y[b], groups.rotate(x[b], O, int(g[b])))
    xs = x[:, 0]
    orb = groups.orbit(xs, O)
    assert orb.shape == (7, 24, 6, 6, 6)
    for b, e in itertools.product(range(7), range(24)):
        assert torch.equal(orb[b, e], groups.rotate(xs[b], O, e))
    picked = [5, 0, 17, 5]  # chosen elements, in their order (repeats allowed)
    sub = groups.orbit(xs, O, torch.tensor(picked))
    assert sub.shape == (7, 4, 6, 6, 6)
    for b, (k, e) in itertools.product(range(7), enumerate(picked)):
        assert torch.equal(sub[b, k], groups.rotate(xs[b], O, e))


def test_rotate_by_gather_equals_the_loop_over_elements(
    torch_gen: torch.Generator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Small grids rotate by one gather, large ones loop over elements: same voxels."""
    for dtype in (torch.float32, torch.uint8):
        x = (torch.rand(30, 3, 8, 8, 8, generator=torch_gen) * 5).to(dtype)
        g = torch.randint(0, 48, (30,), generator=torch_gen)
        oh = groups.cube_group(reflections=True)
        gathered = groups.rotate(x, oh, g)
        monkeypatch.setattr(groups, "_GATHER_MAX_SIDE", 0)
        looped = groups.rotate(x, oh, g)
        monkeypatch.undo()
        assert gathered.dtype == dtype and torch.equal(gathered, looped)


def test_rotate_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="cubic"):
        groups.rotate(torch.zeros(4, 4, 5), O, 0)
    with pytest.raises(ValueError, match="matching"):
        groups.rotate(torch.zeros(3, 4, 4, 4), O, torch.zeros(2, dtype=torch.long))


def _polycube(cells: list[tuple[int, int, int]], d: int = 5) -> torch.Tensor:
    x = torch.zeros(d, d, d, dtype=torch.uint8)
    for c in cells:
        x[c] = 1
    return x


def test_stabilizers() -> None:
    x = torch.zeros(4, 4, 4)
    assert groups.stabilizer(x, O).tolist() == list(range(24))
    # Two square plates, floor and ceiling: the 4 quarter turns about z and the 4 half turns
    # about horizontal axes map it onto itself.
    plate = torch.zeros(4, 4, 4)
    plate[:, :, 0] = 1
    plate[:, :, 3] = 1
    s = groups.stabilizer(plate, O).tolist()
    assert len(s) == 8 and 0 in s
    leg = _polycube([(2, 2, 0), (2, 2, 1), (2, 2, 2), (3, 2, 2)])
    assert groups.stabilizer(leg, O).tolist() == [0]
    mask = groups.stabilizer_mask(torch.stack([x, plate]), O)
    assert mask.shape == (2, 24) and mask[0].all() and int(mask[1].sum()) == 8


def test_same_voxels_counts_symmetric_predictions_right() -> None:
    plate = torch.zeros(4, 4, 4)
    plate[:, :, 0] = 1
    mask = groups.stabilizer_mask(plate, O)
    quarter = O.index_of(groups.axis_angle_matrix([0, 0, 1], np.pi / 2))
    tilt = O.index_of(groups.axis_angle_matrix([1, 0, 0], np.pi / 2))
    assert bool(groups.same_voxels(mask, O, quarter, 0))
    assert not bool(groups.same_voxels(mask, O, tilt, 0))
    # The same as comparing the rotated grids, for every pair.
    for g1, g2 in itertools.product(range(24), repeat=2):
        direct = torch.equal(groups.rotate(plate, O, g1), groups.rotate(plate, O, g2))
        assert bool(groups.same_voxels(mask, O, g1, g2)) == direct
    batch = groups.stabilizer_mask(torch.stack([plate, plate]), O)
    out = groups.same_voxels(batch, O, torch.tensor([quarter, tilt]), torch.tensor([0, 0]))
    assert out.tolist() == [True, False]


def test_chiral_polycube_needs_reflection_to_meet_its_mirror() -> None:
    # A chiral tetracube (the "screw" piece): no proper rotation maps it onto its mirror.
    x = _polycube([(1, 1, 1), (2, 1, 1), (2, 2, 1), (2, 2, 2)])
    mirror = torch.flip(x, dims=[0])
    assert not torch.equal(x, mirror)
    assert not any(torch.equal(groups.rotate(x, O, g), mirror) for g in range(24))
    assert any(torch.equal(groups.rotate(x, OH, g), mirror) for g in range(48))
    assert groups.orbit(x, O).flatten(1).unique(dim=0).shape[0] == 24


def test_index_of_rejects_non_elements() -> None:
    with pytest.raises(KeyError):
        O.index_of(-np.eye(3))
    inversion = OH.index_of(-np.eye(3))
    assert torch.equal(OH.matrices[inversion], -torch.eye(3, dtype=OH.matrices.dtype))
