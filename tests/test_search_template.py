"""The shared occupancy template (congealing): its scores, its running average, and the
search mode's use of it (search.template = voxels)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from orient3d.errors import ConfigError
from orient3d.geometry.groups import cube_group, rotate, same_voxels
from orient3d.search import canonical_pose, score_and_encode, score_orientations
from orient3d.search.template import LatentTemplate, OccupancyTemplate, latent_nll, template_nll
from orient3d.training.modes.search import SearchMode
from test_search_discrete import make_objects, tiny_model
from test_training_modes_search import _batch as search_batch
from test_training_modes_search import _cfg as search_cfg


def test_template_nll_equals_the_slow_bernoulli_nll_of_every_turned_grid() -> None:
    o = cube_group()
    x = make_objects(3).voxels.float()
    t = torch.rand(16, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.98 + 0.01
    fast = template_nll(x, t, o)
    assert fast.shape == (3, 24)
    for b in range(3):
        for r in range(24):
            y = rotate(x[b], o, int(o.inverse[r]))  # r⁻¹·x
            slow = -(y * t.log() + (1 - y) * (1 - t).log()).sum()
            assert float(fast[b, r]) == pytest.approx(float(slow), rel=1e-5)


def test_a_template_of_one_object_picks_the_poses_that_match_it() -> None:
    o = cube_group()
    objs = make_objects(2)  # asymmetric: exactly one pose matches
    t = objs.voxels[0].double() * 0.9 + 0.05  # the first object, blurred towards 1/2
    for g in range(24):
        x = rotate(objs.voxels[:1], o, g).float()  # shown as g·c
        r = int(template_nll(x, t.float(), o).argmin(dim=1))
        assert r == g  # r⁻¹·(g·c) = c: back in the template's pose


def test_occupancy_template_is_the_smoothed_weighted_mean() -> None:
    tmpl = OccupancyTemplate(4)
    assert not tmpl.ready and float(tmpl.occupancy.unique()) == 0.5
    ones, zeros = torch.ones(2, 4, 4, 4), torch.zeros(1, 4, 4, 4)
    tmpl.add(ones)
    tmpl.add(zeros, weight=torch.tensor([2.0]))
    tmpl.update()
    # (2 filled + 1) / (4 weight + 2) = 1/2 everywhere
    assert tmpl.ready and torch.allclose(tmpl.occupancy, torch.full((4, 4, 4), 0.5))
    tmpl.add(ones[:1])
    tmpl.update()
    assert torch.allclose(tmpl.occupancy, torch.full((4, 4, 4), 2 / 3))
    tmpl.update()  # nothing came: the template stays
    assert torch.allclose(tmpl.occupancy, torch.full((4, 4, 4), 2 / 3))
    # scoring reads the template's turned log-odds, derived again after each update
    o, x = cube_group(), (torch.rand(3, 4, 4, 4, generator=torch.Generator().manual_seed(2)) < 0.5)
    before = tmpl.nll(x, o)
    torch.testing.assert_close(before, template_nll(x, tmpl.occupancy, o))
    tmpl.add(zeros)
    tmpl.update()
    torch.testing.assert_close(tmpl.nll(x, o), template_nll(x, tmpl.occupancy, o))
    assert not torch.allclose(tmpl.nll(x, o), before)
    copy = OccupancyTemplate(4)
    copy.load_state_dict(tmpl.state_dict())
    assert copy.ready and torch.equal(copy.occupancy, tmpl.occupancy)


def test_template_weight_must_be_finite_and_not_negative() -> None:
    with pytest.raises(ConfigError, match="search.template_weight"):
        search_cfg("search.template=voxels", "search.template_weight=-1")
    with pytest.raises(ConfigError, match="search.template_weight"):
        search_cfg("search.template=voxels", "search.template_weight=inf")


def test_the_warmup_builds_the_template_and_a_heavy_template_decides_the_choice() -> None:
    o = cube_group()
    objs = make_objects(6)
    cfg = search_cfg(
        "search.cache=false",
        "search.warmup_epochs=1",
        "search.template=voxels",
        "search.template_weight=1000",
    )
    mode = SearchMode(cfg, objs, torch.Generator())
    model = tiny_model()
    x, g, idx = search_batch(6)
    # The warm-up: the grids as shown make the template (no search yet).
    mode.start_epoch(model, 1)
    assert mode.prepare(model, x, g, idx, 1).choice is None
    stats = mode.end_epoch(1)
    assert mode.template is not None and mode.template.ready
    want = (x.double().sum(dim=0) + 1) / (6 + 2)
    torch.testing.assert_close(mode.template.occupancy, want.float())
    assert 0 < stats["template_entropy"] < math.log(2)
    # A template of object 0 alone, weighted 1000x against the model's scores.
    mode.template.occupancy = objs.voxels[0].float() * 0.98 + 0.01
    mode.start_epoch(model, 2)
    prep = mode.prepare(model, x, g, idx, 2)
    assert prep.choice is not None
    total = score_orientations(model, x, o) + 1000 * template_nll(x, mode.template.occupancy, o)
    assert torch.equal(prep.choice, total.argmin(dim=1))
    h = canonical_pose(prep.choice, g, o)
    assert same_voxels(objs.stabilizers[:1], o, h[:1], torch.zeros(1, dtype=torch.long)).all()
    stats = mode.end_epoch(2)
    assert 0 <= stats["template_overruled_frac"] <= 1
    # The template now averages the chosen grids (the rows trained on).
    torch.testing.assert_close(mode.template.occupancy, ((prep.x.double().sum(0) + 1) / 8).float())


def test_without_a_template_the_mode_keeps_none() -> None:
    mode = SearchMode(search_cfg(), make_objects(2), torch.Generator())
    assert mode.template is None and "template" not in mode.state_dict()


def test_score_and_encode_gives_the_scores_and_each_turned_grids_encoder_mean() -> None:
    o = cube_group()
    model = tiny_model(torch.float64)
    x = make_objects(3).voxels
    cand = torch.tensor([[5, 0], [23, 7], [1, 2]])
    for candidates, chunk in ((None, 256), (None, 30), (cand, 3)):
        scores, mu = score_and_encode(model, x, o, chunk=chunk, candidates=candidates)
        assert torch.equal(scores, score_orientations(model, x, o, candidates=candidates))
        elems = torch.arange(24).expand(3, -1) if candidates is None else candidates
        model.eval()
        for b in range(3):  # the slow version: encode each turned grid alone
            for k, r in enumerate(elems[b].tolist()):
                grid = rotate(x[b : b + 1], o, o.inverse[r : r + 1]).double()
                want = model.encode(grid)[0][0].float()
                torch.testing.assert_close(mu[b, k], want, rtol=1e-5, atol=1e-5)


def test_latent_nll_known_answer_and_shapes() -> None:
    mu = torch.tensor([[[1.0, 2.0], [3.0, 0.0]]])  # (1, 2, 2)
    centre = torch.tensor([1.0, 0.0])
    assert latent_nll(mu, centre).tolist() == [[2.0, 2.0]]  # ½(0 + 4), ½(4 + 0)
    with pytest.raises(ValueError, match="centre"):
        latent_nll(mu, torch.zeros(3))


def test_latent_template_is_the_weighted_mean_code_and_round_trips() -> None:
    tmpl = LatentTemplate(2)
    assert not tmpl.ready
    tmpl.update()  # nothing accumulated: not ready, centre kept
    assert not tmpl.ready and tmpl.centre.tolist() == [0.0, 0.0]
    tmpl.add(torch.tensor([[1.0, 0.0], [3.0, 4.0]]))
    tmpl.add(torch.tensor([[10.0, 10.0]]), weight=torch.tensor([0.0]))
    tmpl.update()
    assert tmpl.ready and tmpl.centre.tolist() == [2.0, 2.0]
    tmpl.add(torch.tensor([[0.0, 0.0], [6.0, 3.0]]), weight=torch.tensor([1.0, 2.0]))
    tmpl.update()
    assert tmpl.centre.tolist() == [4.0, 2.0]
    copy = LatentTemplate(2)
    copy.load_state_dict(tmpl.state_dict())
    assert copy.ready and torch.equal(copy.centre, tmpl.centre)


def test_a_heavy_latent_template_decides_the_choice_and_learns_from_it() -> None:
    o = cube_group()
    objs = make_objects(6)
    # an untrained model's codes of one object's poses lie ~1e-5 nats apart: a weight of
    # 1e6 lets the template outweigh score differences of ~0.2 nats
    cfg = search_cfg("search.cache=false", "search.template=latent", "search.template_weight=1e6")
    mode = SearchMode(cfg, objs, torch.Generator())
    model = tiny_model()
    x, g, idx = search_batch(6)
    # The first search epoch: the template is not ready, the model alone chooses.
    mode.start_epoch(model, 1)
    prep = mode.prepare(model, x, g, idx, 1)
    assert prep.choice is not None
    assert torch.equal(prep.choice, score_orientations(model, x, o).argmin(dim=1))
    stats = mode.end_epoch(1)
    assert isinstance(mode.template, LatentTemplate) and mode.template.ready
    _, mu = score_and_encode(model, x, o)
    chosen = mu[torch.arange(6), prep.choice]  # the codes of the chosen grids
    torch.testing.assert_close(mode.template.centre, chosen.mean(dim=0))
    assert stats["template_centre_norm"] == pytest.approx(float(chosen.mean(dim=0).norm()))
    # A centre at one code of object 0, weighted 1e6x against the model's scores.
    mode.template.centre = mu[0, 7].clone()
    mode.start_epoch(model, 2)
    prep = mode.prepare(model, x, g, idx, 2)
    total = score_orientations(model, x, o) + 1e6 * latent_nll(mu, mu[0, 7])
    assert prep.choice is not None and torch.equal(prep.choice, total.argmin(dim=1))
    assert int(prep.choice[0]) == 7
    assert 0 <= mode.end_epoch(2)["template_overruled_frac"] <= 1
    state = mode.state_dict()
    assert torch.equal(state["template"]["centre"], mode.template.centre)


@pytest.mark.parametrize("kind", ["voxels", "latent"])
def test_training_with_a_template_resumes_as_an_uninterrupted_run(
    tmp_path: Path, kind: str
) -> None:
    from orient3d.training.loop import fit
    from train_helpers import interrupted_fit, metric_values, tiny_config, tiny_data

    cfg = tiny_config(
        'train.mode="search"',
        "train.epochs=4",
        "search.warmup_epochs=1",
        "search.stale_probe=4",
        f'search.template="{kind}"',
        "search.template_weight=2.0",
    )
    data = tiny_data(cfg)
    fit(cfg, *data, tmp_path / "full")
    rows = metric_values(tmp_path / "full")
    key = "template_entropy" if kind == "voxels" else "template_centre_norm"
    # the voxel template is built by the warm-up; the latent one by the first search epoch
    assert (rows[0][key] is None) == (kind == "latent")
    assert all(math.isfinite(r[key]) for r in rows[1:])
    assert "template_overruled_frac" in rows[1]  # the first search epoch searches in full
    interrupted_fit(cfg, data, tmp_path / "cut", epoch=3, step=2)
    fit(cfg, *data, tmp_path / "cut", resume=True)
    assert metric_values(tmp_path / "cut") == rows
