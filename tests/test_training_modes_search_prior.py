"""The search mode with a learned orientation prior (search.prior = learned | class)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from orient3d.config import Config
from orient3d.errors import ConfigError
from orient3d.groups import cube_group
from orient3d.search import canonical_pose, score_orientations
from orient3d.training.modes.search import SearchMode
from test_search_discrete import make_objects, tiny_model
from test_training_modes_search import _batch as search_batch
from test_training_modes_search import _cfg as search_cfg


def _cfg(*overrides: str) -> Config:
    """The search-mode test config with full search and a learned prior."""
    return search_cfg("search.cache=false", "search.prior=learned", *overrides)


def _batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return search_batch(n, seed)


def _concentrate(mode: SearchMode, pose: int, row: int = 0) -> None:
    assert mode.prior is not None
    logits = torch.full((24,), -1e4, dtype=torch.float64)
    logits[pose] = 0.0
    mode.prior.logits[row] = torch.log_softmax(logits, 0)


def test_uniform_prior_has_no_prior_state() -> None:
    mode = SearchMode(_cfg("search.prior=uniform"), make_objects(2), torch.Generator())
    assert mode.prior is None and "prior" not in mode.state_dict()


def test_a_concentrated_prior_decides_the_hard_choice() -> None:
    o = cube_group()
    mode = SearchMode(_cfg(), make_objects(6), torch.Generator())
    _concentrate(mode, 13)
    model = tiny_model()
    x, g, idx = _batch()
    mode.start_epoch(model, 1)
    prep = mode.prepare(model, x, g, idx, 1)
    assert prep.choice is not None
    assert (canonical_pose(prep.choice, g, o) == 13).all()  # the MAP pose, not argmin L
    stats = mode.end_epoch(1)
    assert stats["prior_top_pose"] == 13 and stats["prior_top_prob"] > 0.97
    assert stats["prior_nll"] == pytest.approx(0.0, abs=1e-3)


def test_hard_choices_update_the_prior_to_their_floored_histogram() -> None:
    o = cube_group()
    mode = SearchMode(_cfg("search.prior_floor=0.01"), make_objects(6), torch.Generator())
    model = tiny_model()
    x, g, idx = _batch()
    mode.start_epoch(model, 1)
    prep = mode.prepare(model, x, g, idx, 1)
    r = score_orientations(model, x, o).argmin(dim=1)  # a uniform prior: argmin L
    assert prep.choice is not None and torch.equal(prep.choice, r)
    stats = mode.end_epoch(1)
    hist = torch.bincount(canonical_pose(r, g, o), minlength=24).double() / 6
    want = hist.clamp_min(0.01)
    assert mode.prior is not None
    torch.testing.assert_close(mode.prior.log_p()[0].exp(), want / want.sum())
    assert stats["prior_entropy"] < stats["prior_entropy_max"]


def test_soft_weights_are_the_posterior_with_the_prior() -> None:
    o = cube_group()
    cfg = _cfg("search.choice=soft", "search.temperature=2.0", "search.temperature_start=2.0")
    mode = SearchMode(cfg, make_objects(3), torch.Generator())
    assert mode.prior is not None
    logp = torch.log_softmax(torch.randn(24, generator=torch.Generator().manual_seed(3)), 0)
    mode.prior.logits[0] = logp.double()
    model = tiny_model()
    x, g, idx = _batch(3)
    mode.start_epoch(model, 1)
    prep = mode.prepare(model, x, g, idx, 1)
    scores = score_orientations(model, x, o)  # (B, G), column r
    h = canonical_pose(torch.arange(24).expand(3, -1), g[:, None], o)
    # q(r | x) ∝ p(h) exp(-L / T): annealing the likelihood does not damp the prior
    post = torch.softmax(-scores / 2.0 + logp[h], dim=1)  # (B, G) over r
    assert prep.weight is not None
    got = prep.weight.view(3, 24)  # rows in the sorted order of the scores with the prior
    want, _ = post.sort(dim=1, descending=True)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_class_priors_keep_one_pose_per_class() -> None:
    o = cube_group()
    objs = make_objects(6)
    objs = dataclasses.replace(
        objs, labels=torch.tensor([0, 0, 0, 1, 1, 1]), class_names=("a", "b")
    )
    mode = SearchMode(_cfg("search.prior=class"), objs, torch.Generator())
    _concentrate(mode, 5, row=0)
    _concentrate(mode, 17, row=1)
    model = tiny_model()
    x, g, idx = _batch()
    mode.start_epoch(model, 1)
    prep = mode.prepare(model, x, g, idx, 1)
    assert prep.choice is not None
    assert canonical_pose(prep.choice, g, o).tolist() == [5, 5, 5, 17, 17, 17]
    assert mode.end_epoch(1)["prior_top_pose_per_class"] == [5, 17]
    other = SearchMode(_cfg("search.prior=class"), objs, torch.Generator())
    other.load_state_dict(mode.state_dict())
    assert other.prior is not None and mode.prior is not None
    torch.testing.assert_close(other.prior.log_p(), mode.prior.log_p())


@pytest.mark.parametrize("override", ["search.prior_floor=0.5", "search.prior=beta"])
def test_prior_config_rejects_bad_values(override: str) -> None:
    with pytest.raises(ConfigError, match="search.prior"):
        _cfg(override)


def test_learned_prior_run_logs_the_prior(tmp_path: Path) -> None:
    from orient3d.train import fit

    objs = make_objects(12)
    cfg = _cfg("train.epochs=2", "train.batch_size=6", "train.progress=false")
    fit(cfg, objs.subset(list(range(8))), objs.subset([8, 9, 10, 11]), tmp_path / "run")
    lines = (tmp_path / "run/metrics.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert all("prior_entropy" in r and "prior_top_pose" in r for r in records)
    assert records[1]["prior_entropy"] < records[0]["prior_entropy_max"]


def test_prior_weight_scales_the_prior_and_changes_are_logged() -> None:
    objs = make_objects(6)
    model = tiny_model()
    x, g, idx = _batch()
    weak = SearchMode(_cfg("search.prior_weight=0"), objs, torch.Generator())
    _concentrate(weak, 13)
    weak.start_epoch(model, 1)
    prep = weak.prepare(model, x, g, idx, 1)
    assert prep.choice is not None
    assert torch.equal(prep.choice, score_orientations(model, x).argmin(dim=1))
    stats = weak.end_epoch(1)
    scores = score_orientations(model, x)
    best_two = scores.sort(dim=1).values[:, :2]  # (B, 2) best and second-best
    gap = (best_two[:, 1] - best_two[:, 0]).median()  # the lower middle value, as torch
    assert stats["prior_changed_frac"] == 0.0
    assert stats["score_gap_median"] == pytest.approx(float(gap), rel=1e-5)
    strong = SearchMode(_cfg(), objs, torch.Generator())
    _concentrate(strong, 13)
    strong.start_epoch(model, 1)
    strong.prepare(model, x, g, idx, 1)
    h13 = cube_group().table[g, cube_group().inverse[13]]  # r with r⁻¹g = 13
    want = (scores.gather(1, h13[:, None]).squeeze(1) > scores.min(dim=1).values).float().mean()
    assert strong.end_epoch(1)["prior_changed_frac"] == pytest.approx(float(want))
