"""The continuous training mode: SO(3) views, coarse-to-fine search, the pose cache."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from orient3d import runs, so3
from orient3d.config import Config
from orient3d.continuous_mode import ContinuousMode
from orient3d.errors import ConfigError
from orient3d.evaluate import evaluate
from orient3d.groups import cube_group, rotate
from orient3d.modes import get_mode
from orient3d.pose_search import turn_back
from orient3d.train import fit
from orient3d.transforms import compose, inverse
from test_search_discrete import make_objects, tiny_model
from train_helpers import interrupted_fit, metric_values, tiny_config, tiny_data

FAST = ("continuous.grid_level=0", "continuous.levels=0", "continuous.precision=fp32")


def _cfg(*overrides: str) -> Config:
    return tiny_config("train.mode=continuous", "continuous.warmup_epochs=0", *FAST, *overrides)


def test_config_and_registration() -> None:
    cfg = _cfg("continuous.scale=[0.9, 1.1]", "continuous.translate=2")
    assert cfg.continuous.scale == (0.9, 1.1) and cfg.continuous.translate == 2
    assert get_mode("continuous") is ContinuousMode
    with pytest.raises(ConfigError, match="continuous.top_k"):
        _cfg("continuous.top_k=0")


def test_warmup_shows_binary_random_views() -> None:
    objs = make_objects(4)
    mode = ContinuousMode(_cfg("continuous.warmup_epochs=1"), objs, torch.Generator())
    mode.start_epoch(tiny_model(), 1)
    x = objs.voxels.float()
    prep = mode.prepare(tiny_model(), x, torch.zeros(4), torch.arange(4), 1)
    assert prep.x.shape == x.shape and set(prep.x.unique().tolist()) <= {0.0, 1.0}
    assert not torch.equal(prep.x, x) and prep.weight is None
    assert mode.end_epoch(1) == {"search_active": False}


def test_cache_reuses_the_canonical_pose_without_scoring() -> None:
    """With no refresh and no refinement, a new view reuses H: R = G·H⁻¹, nothing scored."""
    objs, model = make_objects(4), tiny_model()
    cfg = _cfg(
        "continuous.refresh_every=0", "continuous.refine_every=0", "continuous.refresh_frac=0"
    )
    mode = ContinuousMode(cfg, objs, torch.Generator().manual_seed(0))
    x, idx = objs.voxels.float(), torch.arange(4)
    mode.start_epoch(model, 1)
    mode.prepare(model, x, torch.zeros(4), idx, 1)
    first = mode.end_epoch(1)
    assert first["refreshed_frac"] == 1.0 and first["forward_passes_per_sample"] == 24
    H1 = mode.H[idx]
    mode.start_epoch(model, 2)
    mode.prepare(model, x, torch.zeros(4), idx, 2)
    second = mode.end_epoch(2)
    assert second["cache_hit_frac"] == 1.0 and second["forward_passes_per_sample"] == 0
    assert second["pose_change_median_deg"] == pytest.approx(0.0, abs=0.1)
    assert torch.allclose(mode.H[idx].R, H1.R, atol=1e-4)


def test_refinement_scores_one_neighbourhood_and_prepares_the_turned_back_grid() -> None:
    objs, model = make_objects(4), tiny_model()
    mode = ContinuousMode(_cfg("continuous.refresh_frac=0"), objs, torch.Generator().manual_seed(1))
    x, idx = objs.voxels.float(), torch.arange(4)
    mode.start_epoch(model, 1)
    mode.prepare(model, x, torch.zeros(4), idx, 1)
    mode.end_epoch(1)
    mode.start_epoch(model, 2)
    state = mode.gen.get_state()
    prep = mode.prepare(model, x, torch.zeros(4), idx, 2)
    stats = mode.end_epoch(2)
    assert stats["refined_frac"] == 1.0 and stats["forward_passes_per_sample"] == 27
    # Replay the view draw: the prepared grid is R⁻¹·x_view with R = G·H⁻¹ (the new H).
    from orient3d.transforms import apply, random_pose

    G = random_pose(4, torch.Generator().set_state(state))
    view = (apply(x, G) > 0.5).float()
    R = compose(G, inverse(mode.H[idx]))
    assert torch.allclose(prep.x, turn_back(view, R, False), atol=1e-4)


def test_tiny_run_logs_search_stats_and_evaluates_with_so3_search(tmp_path: Path) -> None:
    cfg = _cfg(
        "continuous.warmup_epochs=1",
        "train.epochs=3",
        "continuous.translate=1",
        "continuous.top_k=1",
        "continuous.refresh_frac=0",
    )
    data = tiny_data(cfg)
    res = fit(cfg, *data, tmp_path / "run")
    assert res["protocol"] == "so3+search" and res["mode"] == "continuous"
    recs = runs.read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert recs[0]["search_active"] is False and recs[1]["refreshed_frac"] == 1.0
    assert recs[1]["forward_passes_per_sample"] == 24 + 27  # grid + one shift round
    assert recs[2]["refined_frac"] == 1.0 and recs[2]["refreshed_frac"] == 0.0
    assert recs[2]["forward_passes_per_sample"] == 27 + 27  # 27 rotations, 27 shifts
    # A refinement moves H by one offset exp(45° u), u in {-1, 0, 1}³ (the level-1
    # lattice): the median change is the angle of one of 0, 1, 2 or 3 unit steps.
    steps = [math.degrees(so3.grid_spacing(1)) * math.sqrt(n) for n in range(4)]
    change = recs[2]["pose_change_median_deg"]
    assert min(abs(change - s) for s in steps) < 0.01, (change, steps)
    # The so3 protocol without search is available to every model.
    plain = evaluate(tiny_model(), data[1], cfg, protocol="so3")
    assert plain["n_test"] == len(data[1])


def test_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = _cfg("continuous.warmup_epochs=1", "train.epochs=3", "continuous.refresh_frac=0.5")
    data = tiny_data(cfg)
    fit(cfg, *data, tmp_path / "full")

    interrupted_fit(cfg, data, tmp_path / "cut", epoch=3, step=1)
    fit(cfg, *data, tmp_path / "cut", resume=True)
    assert metric_values(tmp_path / "cut") == metric_values(tmp_path / "full")


def test_canonicalize_returns_poses_that_turn_with_the_input() -> None:
    """Grid level 0 is O itself and the cube rotations resample exactly, so the search
    scores the same grids for ``g·x`` as for ``x``: the pose found for ``g·x`` is ``g``
    times the pose found for ``x``, for every ``g`` of O."""
    objs, model = make_objects(3), tiny_model()
    mode = ContinuousMode(_cfg(), objs, torch.Generator())
    x = objs.voxels.float()
    M = mode.canonicalize(model, x)
    assert M is not None and M.shape == (3, 3, 4)
    assert torch.equal(M[..., 3], torch.zeros(3, 3))  # continuous.translate=0: no shift
    R = M[..., :3]
    O = cube_group()
    assert all(O.index_of(r.round()) >= 0 for r in R)  # a point of the level-0 grid
    turned = torch.cat([rotate(x, O, g) for g in range(len(O))])  # (24·3, D, D, D)
    Mg = mode.canonicalize(model, turned)
    assert Mg is not None
    want = O.matrices.float()[:, None] @ R  # (24, 3, 3, 3): g times the pose of x
    assert torch.allclose(Mg[..., :3].reshape(len(O), 3, 3, 3), want, atol=1e-5)
    # The angle of each pose from the identity, against scipy's rotation magnitude.
    want = Rotation.from_matrix(R.double().numpy()).magnitude()
    got = so3.geodesic_angle(torch.eye(3), R).double().numpy()
    np.testing.assert_allclose(got, want, atol=1e-5)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_pose_change_is_the_angle_between_epochs(axis: int) -> None:
    """A known answer of the logged ``pose_change_median_deg``: each object's canonical
    rotation turns by 10°, 20° or 30° about one axis between two epochs (from random
    starts), so the median change is 20°; scipy measures the same angles."""
    mode = ContinuousMode(_cfg(), make_objects(3), torch.Generator())
    vec = np.zeros((3, 3))
    vec[:, axis] = np.radians([10.0, 20.0, 30.0])
    before = Rotation.random(3, random_state=axis)
    after = before * Rotation.from_rotvec(vec)
    np.testing.assert_allclose((before.inv() * after).magnitude(), vec[:, axis], atol=1e-12)
    mode.k = 0  # a search epoch
    mode.last_R = torch.from_numpy(before.as_matrix()).float()
    mode.epoch_R = torch.from_numpy(after.as_matrix()).float()
    assert mode.end_epoch(2)["pose_change_median_deg"] == pytest.approx(20.0, abs=1e-3)
