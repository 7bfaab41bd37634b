"""The search training mode: hard/soft preparation, the pose cache, a tiny run end to end."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from orient3d.config import Config, apply_overrides
from orient3d.groups import cube_group, rotate, same_voxels
from orient3d.model import VAE
from orient3d.search import canonical_pose, score_orientations
from orient3d.search_mode import temperature_at
from orient3d.training.modes.search import SearchMode
from test_search_discrete import make_objects, tiny_model


def _cfg(*overrides: str) -> Config:
    base = [
        "data.res=16",
        "model.latent=4",
        "model.width=4",
        "train.mode=search",
        "train.epochs=3",
        "search.precision=fp32",
        "search.warmup_epochs=0",
    ]
    return apply_overrides(Config(), [*base, *overrides])


def _batch(n: int = 4, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    o = cube_group()
    objs = make_objects(n)
    g = torch.randint(24, (n,), generator=torch.Generator().manual_seed(seed))
    return rotate(objs.voxels, o, g).float(), g, torch.arange(n)


def test_hard_prepare_turns_each_sample_to_its_argmin() -> None:
    o, cfg = cube_group(), _cfg()
    mode = SearchMode(cfg, make_objects(4), torch.Generator().manual_seed(0))
    model = tiny_model()
    x, g, idx = _batch()
    mode.start_epoch(model, 1)
    prep = mode.prepare(model, x, g, idx, 1)
    r = score_orientations(model, x, o).argmin(dim=1)
    assert prep.weight is None and torch.equal(prep.choice, r)
    assert torch.equal(prep.x, rotate(x, o, o.inverse[r]))
    stats = mode.end_epoch(1)
    assert sum(stats["pose_hist"]) == 4 and stats["rows_scored_per_sample"] == 24
    assert stats["cache_hit_frac"] == 0.0


def test_warmup_is_augmented() -> None:
    mode = SearchMode(_cfg("search.warmup_epochs=1"), make_objects(4), torch.Generator())
    model = tiny_model()
    x, g, idx = _batch()
    mode.start_epoch(model, 1)
    prep = mode.prepare(model, x, g, idx, 1)
    assert prep.x is x and prep.choice is None
    assert mode.end_epoch(1) == {"search_active": False}


def test_cache_is_exact_while_the_model_is_fixed() -> None:
    """A cached canonical pose answers a new view exactly as a fresh full search."""
    o = cube_group()
    objs = make_objects(4)
    cfg = _cfg("search.cache=true", "search.refresh_every=3", "search.stale_probe=0")
    mode = SearchMode(cfg, objs, torch.Generator())
    model = tiny_model()
    x, g, idx = _batch(seed=0)
    mode.start_epoch(model, 1)
    first = mode.prepare(model, x, g, idx, 1)
    mode.end_epoch(1)
    mode.start_epoch(model, 2)  # within the refresh period: cache hits, nothing scored
    x2, g2, _ = _batch(seed=1)
    cached = mode.prepare(model, x2, g2, idx, 2)
    stats = mode.end_epoch(2)
    assert stats["cache_hit_frac"] == 1.0 and stats["rows_scored_per_sample"] == 0
    assert stats["changed_frac"] == 0.0
    fresh = score_orientations(model, x2, o).argmin(dim=1)
    assert torch.equal(cached.x, rotate(x2, o, o.inverse[fresh]))
    h1 = canonical_pose(first.choice, g, o)
    h2 = canonical_pose(cached.choice, g2, o)
    assert same_voxels(objs.stabilizers, o, h1, h2).all()
    mode.start_epoch(model, 4)  # refresh epoch: searched again
    mode.prepare(model, x2, g2, idx, 4)
    assert mode.end_epoch(4)["cache_hit_frac"] == 0.0


def test_the_staleness_probe_measures_the_cache_and_refreshes_it_when_stale() -> None:
    o = cube_group()
    objs = make_objects(6)
    cfg = _cfg("search.cache=true", "search.refresh_every=8", "search.stale_probe=4")
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, refresh_frac=0.0))
    mode = SearchMode(cfg, objs, torch.Generator())
    model = tiny_model()
    x, g, idx = _batch(6)
    mode.start_epoch(model, 1)  # the first search epoch: nothing cached, no probe
    mode.prepare(model, x, g, idx, 1)
    assert mode.end_epoch(1)["cache_stale_probe"] is None
    # The model is fixed: a fresh search agrees with every cached choice.
    mode.start_epoch(model, 2)
    mode.prepare(model, x, g, idx, 2)
    stats = mode.end_epoch(2)
    assert stats["cache_stale_probe"] == 0.0 and stats["cache_stale_probe_n"] == 4
    assert stats["cache_hit_frac"] == 1.0 and not stats["cache_refreshed"]
    assert stats["rows_scored_per_sample"] == 4 * 24 / 6  # the probe's rows alone
    # Cached poses turned by a quarter turn (the objects are asymmetric): all stale.
    right = mode.poses[:, 0].clone()
    mode.poses[:, 0] = o.table[right, 1]
    mode.start_epoch(model, 3)
    prep = mode.prepare(model, x, g, idx, 3)
    stats = mode.end_epoch(3)
    assert stats["cache_stale_probe"] == 1.0 and stats["cache_refreshed"]
    assert stats["cache_hit_frac"] == 0.0  # the whole epoch searched afresh
    assert prep.choice is not None
    assert torch.equal(prep.choice, score_orientations(model, x, o).argmin(dim=1))
    assert same_voxels(objs.stabilizers, o, mode.poses[:, 0], right).all()


def test_with_proposals_staleness_compares_the_choice_a_cache_hit_trains_on() -> None:
    o = cube_group()
    objs = make_objects(6)
    cfg = _cfg(
        "search.cache=true", "search.refresh_every=8", "search.proposals=2", "search.stale_probe=6"
    )
    cfg = dataclasses.replace(cfg, search=dataclasses.replace(cfg.search, refresh_frac=0.0))
    mode = SearchMode(cfg, objs, torch.Generator())
    model = tiny_model()
    x, g, idx = _batch(6)
    mode.start_epoch(model, 1)
    mode.prepare(model, x, g, idx, 1)
    mode.end_epoch(1)
    best = mode.poses[:, 0].clone()
    wrong = o.table[best, 1]  # a quarter turn away (the objects are asymmetric)
    # The best pose second in the cache: a hit re-scores both and trains on it, so the
    # cache is not stale although its first entry is.
    mode.poses[:, 0], mode.poses[:, 1] = wrong, best
    mode.start_epoch(model, 2)
    prep = mode.prepare(model, x, g, idx, 2)
    stats = mode.end_epoch(2)
    assert stats["cache_stale_probe"] == 0.0 and not stats["cache_refreshed"]
    assert stats["cache_hit_frac"] == 1.0
    assert prep.choice is not None
    assert torch.equal(prep.choice, score_orientations(model, x, o).argmin(dim=1))
    # Neither cached pose the best: every probed choice is stale, the epoch re-searches.
    mode.poses[:, 0], mode.poses[:, 1] = wrong, o.table[best, 2]
    mode.start_epoch(model, 3)
    mode.prepare(model, x, g, idx, 3)
    stats = mode.end_epoch(3)
    assert stats["cache_stale_probe"] == 1.0 and stats["cache_refreshed"]


def _adaptive_after_first_search(n: int) -> tuple[Any, SearchMode, VAE, tuple, dict]:
    """``n`` objects, adaptive proposals (P = 3, the probe on all of them, no per-step
    refresh) and the first search epoch done: every object searched, 3 poses cached."""
    objs = make_objects(n)
    cfg = _cfg(
        "search.cache=true",
        "search.refresh_every=8",
        "search.proposals=3",
        f"search.stale_probe={n}",
        "search.adaptive_proposals=true",
        "search.refresh_frac=0.0",
    )
    mode = SearchMode(cfg, objs, torch.Generator())
    model = tiny_model()
    batch = _batch(n)
    mode.start_epoch(model, 1)
    mode.prepare(model, *batch, 1)
    return objs, mode, model, batch, mode.end_epoch(1)


def test_adaptive_proposals_take_the_cheapest_level_the_probe_finds_fresh() -> None:
    """Fresh first pose: hits reuse it, no scoring. Stale first pose, best of the first
    two fresh: hits re-score two of the three. All stale: the epoch re-searches."""
    o = cube_group()
    objs, mode, model, (x, g, idx), stats = _adaptive_after_first_search(6)
    truth = score_orientations(model, x, o).argmin(dim=1)
    assert stats["cache_stale_probe"] is None and stats["cache_stale_probe_first"] is None
    best = mode.poses[:, 0].clone()
    wrong = o.table[best, 1]  # a quarter turn away (the objects are asymmetric)

    def epoch(k: int) -> tuple[dict, torch.Tensor]:
        mode.start_epoch(model, k)
        prep = mode.prepare(model, x, g, idx, k)
        assert prep.choice is not None
        return mode.end_epoch(k), prep.choice

    stats, choice = epoch(2)  # the model is fixed: the first pose is fresh
    assert stats["cache_stale_probe_first"] == 0.0 and stats["cache_stale_probe"] == 0.0
    assert stats["cache_poses_rescored"] == 0 and stats["cache_hit_frac"] == 1.0
    assert stats["rows_scored_per_sample"] == 6 * 24 / 6  # the probe's rows alone
    assert torch.equal(choice, truth)
    mode.poses[:, 0], mode.poses[:, 1] = wrong, best  # the best pose second
    stats, choice = epoch(3)
    assert stats["cache_stale_probe_first"] == 1.0 and stats["cache_stale_probe"] == 0.0
    assert stats["cache_poses_rescored"] == 2 and not stats["cache_refreshed"]
    assert stats["rows_scored_per_sample"] == (6 * 24 + 6 * 2) / 6
    assert torch.equal(choice, truth)  # the best of the first two, re-scored
    mode.poses[:, 0], mode.poses[:, 1], mode.poses[:, 2] = wrong, wrong, best  # third
    stats, choice = epoch(4)
    assert stats["cache_stale_probe_first"] == 1.0 and stats["cache_stale_probe"] == 0.0
    assert stats["cache_poses_rescored"] == 3 and not stats["cache_refreshed"]
    assert stats["rows_scored_per_sample"] == (6 * 24 + 6 * 3) / 6
    assert torch.equal(choice, truth)
    mode.poses[:, 0], mode.poses[:, 1], mode.poses[:, 2] = wrong, wrong, o.table[best, 2]
    stats, choice = epoch(5)  # none of the three is the best: re-search every object
    assert stats["cache_stale_probe_first"] == 1.0 and stats["cache_stale_probe"] == 1.0
    assert stats["cache_refreshed"] and stats["cache_hit_frac"] == 0.0
    assert torch.equal(choice, truth)
    assert same_voxels(objs.stabilizers, o, mode.poses[:, 0], best).all()


def test_adaptive_proposals_escalate_within_an_epoch_before_re_searching() -> None:
    """The samples searched in full during an epoch check every k: past max_stale at the
    epoch's k, the epoch moves to the smallest k still fresh, and re-searches only
    when no k is."""
    o = cube_group()
    objs, mode, model, (x, g, idx), _ = _adaptive_after_first_search(24)
    mode.start_epoch(model, 2)  # the model is fixed: the first pose is fresh
    assert mode.rescore == 1 and not mode.escalated
    scores = score_orientations(model, x, o)
    fresh = canonical_pose(scores.argmin(dim=1), g, o)
    best = mode.poses[:, 0].clone()
    wrong = o.table[best, 1]
    stale_first = int((~same_voxels(objs.stabilizers, o, wrong, best)).sum())
    assert stale_first > 0.05 * 24  # enough asymmetric objects to pass max_stale
    mode.poses[:, 0], mode.poses[:, 1] = wrong, best  # the best pose moved to second
    mode._count_stale(idx, fresh, g, scores)
    assert mode.rescore == 2 and mode.escalated and not mode.triggered
    assert mode.stale_found == 0  # the share now counted is that of k = 2
    mode.poses[:, 1] = wrong  # no cached pose is the best any more
    mode._count_stale(idx, fresh, g, scores)
    assert mode.triggered and mode.refreshed and mode.rescore == 2
    stats = mode.end_epoch(2)
    assert stats["cache_rescore_escalated"] and stats["cache_poses_rescored"] == 2


@pytest.mark.parametrize(
    "extra",
    [
        ["search.proposals=1"],
        ["search.proposals=4", "search.choice=soft"],
        ["search.proposals=4", "search.cache=false"],
        ["search.proposals=4", "search.stale_probe=0"],
    ],
)
def test_adaptive_proposals_are_refused_where_they_cannot_act(extra: list[str]) -> None:
    from orient3d.config import ConfigError

    with pytest.raises(ConfigError, match="search.adaptive_proposals"):
        _cfg("search.adaptive_proposals=true", *extra)


def test_cache_with_proposals_rescores_only_those() -> None:
    objs = make_objects(4)
    cfg = _cfg(
        "search.cache=true", "search.refresh_every=2", "search.proposals=3", "search.stale_probe=0"
    )
    mode = SearchMode(cfg, objs, torch.Generator())
    model = tiny_model()
    x, g, idx = _batch()
    for epoch in (1, 2):
        mode.start_epoch(model, epoch)
        mode.prepare(model, x, g, idx, epoch)
        stats = mode.end_epoch(epoch)
    assert stats["rows_scored_per_sample"] == 3 and stats["cache_hit_frac"] == 1.0


def test_soft_prepare_weights_are_the_posterior() -> None:
    o = cube_group()
    cfg = _cfg(
        "search.choice=soft",
        "search.top_k=3",
        "search.temperature=2.0",
        "search.temperature_start=2.0",
    )
    mode = SearchMode(cfg, make_objects(4), torch.Generator())
    model = tiny_model()
    x, g, idx = _batch()
    mode.start_epoch(model, 1)
    prep = mode.prepare(model, x, g, idx, 1)
    assert prep.x.shape == (12, 16, 16, 16) and prep.weight.shape == (12,)
    w = prep.weight.view(4, 3)
    torch.testing.assert_close(w.sum(1), torch.ones(4))
    s = score_orientations(model, x, o)
    top, r = s.sort(dim=1)
    torch.testing.assert_close(w, torch.softmax(-top[:, :3] / 2.0, dim=1))
    assert torch.equal(prep.x.view(4, 3, 16, 16, 16)[:, 0], rotate(x, o, o.inverse[r[:, 0]]))


def test_temperature_schedule_is_geometric() -> None:
    assert temperature_at(0, 5, 8.0, 0.5) == 8.0
    assert temperature_at(2, 5, 8.0, 0.5) == pytest.approx(2.0)
    assert temperature_at(4, 5, 8.0, 0.5) == pytest.approx(0.5)
    assert temperature_at(9, 5, 8.0, 0.5) == pytest.approx(0.5)


def test_state_dict_round_trip() -> None:
    objs = make_objects(4)
    cfg = _cfg("search.cache=true")
    a = SearchMode(cfg, objs, torch.Generator())
    model = tiny_model()
    x, g, idx = _batch()
    a.start_epoch(model, 1)
    a.prepare(model, x, g, idx, 1)
    a.end_epoch(1)
    b = SearchMode(cfg, objs, torch.Generator())
    b.load_state_dict(a.state_dict())
    assert torch.equal(b.poses, a.poses) and torch.equal(b.last_h, a.last_h)


@pytest.mark.parametrize("choice", ["hard", "soft"])
def test_search_run_end_to_end(tmp_path: Path, choice: str) -> None:
    from orient3d.train import fit

    objs = make_objects(12)
    cfg = _cfg(
        "train.epochs=2",
        "train.batch_size=6",
        "search.warmup_epochs=1",
        "search.cache=true",
        "search.proposals=2",
        f"search.choice={choice}",
        "train.progress=false",
    )
    train_set, test_set = objs.subset(list(range(8))), objs.subset([8, 9, 10, 11])
    result = fit(cfg, train_set, test_set, tmp_path / "run", val_set=objs.subset([10, 11]))
    assert result["protocol"] == "rotated+search"
    records = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    ]
    assert records[0]["search_active"] is False
    assert sum(records[1]["pose_hist"]) == 8 and records[1]["changed_frac"] is None


def test_adaptive_proposals_run_end_to_end_and_log_their_level(tmp_path: Path) -> None:
    from orient3d.train import fit

    objs = make_objects(12)
    cfg = _cfg(
        "train.epochs=4",
        "train.batch_size=4",
        "search.warmup_epochs=1",
        "search.proposals=4",
        "search.adaptive_proposals=true",
        "search.stale_probe=8",
        "train.progress=false",
    )
    train_set, test_set = objs.subset(list(range(8))), objs.subset([8, 9, 10, 11])
    fit(cfg, train_set, test_set, tmp_path / "run", val_set=objs.subset([10, 11]))
    records = [
        json.loads(line) for line in (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    ]
    searched = [r for r in records if r["search_active"]]
    assert len(searched) == 3 and searched[0]["cache_stale_probe_first"] is None
    for r in searched[1:]:  # probed: the level taken is the fewest poses found fresh
        k = r["cache_poses_rescored"]
        assert k in (0, 2, 3, 4) and r["cache_stale_probe_first"] is not None
        assert (k == 0) == (r["cache_stale_probe_first"] <= cfg.search.max_stale)
        if not r["cache_refreshed"]:
            assert r["cache_stale_probe"] <= cfg.search.max_stale


def test_rate_limited_search_keeps_unsearched_samples_as_shown() -> None:
    o = cube_group()
    cfg = _cfg("search.cache=true", "search.refresh_every=0", "search.refresh_frac=0.5")
    mode = SearchMode(cfg, make_objects(8), torch.Generator().manual_seed(0))
    model = tiny_model()
    o8 = make_objects(8)
    g = torch.randint(24, (8,), generator=torch.Generator().manual_seed(2))
    x = rotate(o8.voxels, o, g).float()
    mode.start_epoch(model, 1)
    prep = mode.prepare(model, x, g, torch.arange(8), 1)
    searched = mode.searched_at >= 0
    assert 0 < int(searched.sum()) < 8
    assert (prep.choice[~searched] == 0).all()
    assert torch.equal(prep.x[~searched], x[~searched])
    assert mode.end_epoch(1)["rows_scored_per_sample"] == 24 * float(searched.float().mean())


@pytest.mark.parametrize(
    "override",
    ["search.proposals=0", "search.refresh_frac=1.5", "search.temperature=0", "search.chunk=0"],
)
def test_search_config_rejects_bad_values(override: str) -> None:
    from orient3d.errors import ConfigError

    with pytest.raises(ConfigError, match=override.split("=")[0]):
        _cfg(override)


def test_search_toml_loads() -> None:
    from orient3d.config import load_config

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "search.toml")
    assert cfg.train.mode == "search" and cfg.data.res == 16


def test_oh_search_prepares_in_oh_and_canonicalizes_in_o() -> None:
    oh, o = cube_group(reflections=True), cube_group()
    mode = SearchMode(_cfg("search.group=Oh"), make_objects(4), torch.Generator())
    model = tiny_model()
    x, g, idx = _batch()
    mode.start_epoch(model, 1)
    prep = mode.prepare(model, x, g, idx, 1)
    assert torch.equal(prep.x, rotate(x, oh, oh.inverse[prep.choice]))
    assert len(mode.end_epoch(1)["pose_hist"]) == 48
    r = mode.canonicalize(model, x)
    assert r is not None and int(r.max()) < 24
    s = score_orientations(model, x, o)
    assert torch.equal(r, s.argmin(dim=1))


def _stale_mode(n: int) -> tuple[SearchMode, torch.Tensor, torch.Tensor, torch.Tensor]:
    cfg = _cfg(
        "search.cache=true",
        "search.refresh_every=100",
        "search.refresh_frac=1.0",  # every presented sample is searched: all are checked
        "search.max_stale=0.05",
        "search.stale_probe=0",  # the in-epoch checks alone (the probe has its own test)
        "train.epochs=4",
    )
    mode = SearchMode(cfg, make_objects(n), torch.Generator().manual_seed(0))
    x, g, idx = _batch(n)
    return mode, x, g, idx


def _stale_share(mode: SearchMode, model: VAE, x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Which objects' cached choice a fresh search with ``model`` would change."""
    o = cube_group()
    fresh = canonical_pose(score_orientations(model, x, o).argmin(1), g, o)
    return ~same_voxels(mode.stab, o, fresh, mode.poses[:, 0])


def test_cache_staleness_is_measured_and_refreshes_the_rest_of_the_epoch() -> None:
    """The samples searched while their cache entry is current measure staleness; from
    20 checks on, a share above max_stale re-searches the rest of the epoch, and the
    next epoch re-searches the objects presented before the trigger."""
    n = 30
    mode, x, g, idx = _stale_mode(n)
    model = tiny_model()
    mode.start_epoch(model, 1)
    mode.prepare(model, x[:24], g[:24], idx[:24], 1)  # fills the cache of 0..23
    mode.prepare(model, x[:24], g[:24], idx[:24], 1)  # same model: every check agrees
    stats = mode.end_epoch(1)
    assert stats["cache_stale_checked"] == 24 and stats["cache_stale_frac"] == 0.0
    assert not stats["cache_refresh_triggered"] and mode.due_before is None

    other = tiny_model(seed=7)
    differ = _stale_share(mode, other, x, g)[:24]
    assert differ.float().mean() > 0.05, "the two models should disagree on some poses"
    mode.start_epoch(other, 2)
    mode.prepare(other, x[:12], g[:12], idx[:12], 2)  # 12 checks: too few to trigger
    assert not mode.triggered
    mode.prepare(other, x[12:24], g[12:24], idx[12:24], 2)  # 24 checks
    assert mode.triggered and mode.refresh_from == mode.k
    mode.cfg = dataclasses.replace(mode.cfg, refresh_frac=0.0)  # look at what is due
    due = mode._need_search(idx)
    assert due[24:].all() and not due[:24].any()  # not presented yet: re-searched
    stats = mode.end_epoch(2)
    assert stats["cache_stale_frac"] == pytest.approx(float(differ.float().mean()))
    assert stats["cache_refreshed"] and stats["cache_refresh_triggered"]
    mode.start_epoch(other, 3)  # the objects not re-searched after the trigger are due
    assert mode.refreshed and torch.equal(mode._need_search(idx), idx >= 24)


def test_a_stale_epoch_with_few_checks_refreshes_every_object_next() -> None:
    n = 6
    mode, x, g, idx = _stale_mode(n)
    model, other = tiny_model(), tiny_model(seed=7)
    mode.start_epoch(model, 1)
    mode.prepare(model, x, g, idx, 1)
    mode.end_epoch(1)
    differ = _stale_share(mode, other, x, g)
    assert differ.any(), "the two models should disagree on some pose"
    mode.start_epoch(other, 2)
    mode.prepare(other, x, g, idx, 2)
    stats = mode.end_epoch(2)
    assert stats["cache_stale_checked"] == n and not stats["cache_refresh_triggered"]
    mode.start_epoch(other, 3)
    mode.cfg = dataclasses.replace(mode.cfg, refresh_frac=0.0)
    assert mode.refreshed and bool(mode._need_search(idx).all())
