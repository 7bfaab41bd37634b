"""The training state a checkpoint holds: the number of processes that trained it, and
the warning when a resume runs on another number."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from orient3d.training.distributed import Dist
from orient3d.training.state import TrainState, build_state
from train_helpers import tiny_config, tiny_data

LOGGER = "orient3d.training.state"


@pytest.fixture
def state() -> TrainState:
    cfg = tiny_config("train.mode=search")
    return build_state(cfg, tiny_data(cfg)[0], torch.device("cpu"), Dist())


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]


def test_checkpoint_records_the_world_size(state: TrainState) -> None:
    assert state.state_dict()["world"] == 1
    two = dataclasses.replace(state, dist=Dist(1, 2))
    assert two.state_dict()["world"] == 2


def test_same_world_size_resumes_silently_and_restores_this_ranks_generator(
    state: TrainState, caplog: pytest.LogCaptureFixture
) -> None:
    saved = state.state_dict()
    with caplog.at_level("WARNING", logger=LOGGER):
        state.load_state_dict(saved)
        state.load_state_dict({k: v for k, v in saved.items() if k != "world"})  # older file
    assert not _warnings(caplog)
    # Rank 1 of 2 takes the second of the two saved per-rank generators.
    gens = [torch.Generator().manual_seed(s).get_state() for s in (5, 6)]
    rank1 = dataclasses.replace(state, dist=Dist(1, 2), mode_gen=torch.Generator())
    assert rank1.mode_gen is not None
    rank1.load_state_dict({**saved, "world": 2, "mode_gens": gens})
    assert torch.equal(rank1.mode_gen.get_state(), gens[1])


@pytest.mark.parametrize(
    ("saved_world", "mode_gens"),
    [(2, None), (None, 3)],  # recorded; or, in an older file, read from the generators
)
def test_another_world_size_warns_naming_both(
    state: TrainState,
    caplog: pytest.LogCaptureFixture,
    saved_world: int | None,
    mode_gens: int | None,
) -> None:
    saved = {k: v for k, v in state.state_dict().items() if k != "world"}
    if saved_world is not None:
        saved["world"] = saved_world
    if mode_gens is not None:
        saved["mode_gens"] = [torch.Generator().get_state()] * mode_gens
    saved["epoch"] = 4
    with caplog.at_level("WARNING", logger=LOGGER):
        state.load_state_dict(saved)
    (msg,) = _warnings(caplog)
    old = saved_world if saved_world is not None else mode_gens
    assert f"epoch 4 trained by {old} process(es) with 1" in msg
    assert "slice of every batch" in msg and "not match an uninterrupted one" in msg
    assert state.epoch == 4  # the resume goes on


def test_only_rank_zero_warns(state: TrainState, caplog: pytest.LogCaptureFixture) -> None:
    saved = {**state.state_dict(), "world": 1}
    rank1 = dataclasses.replace(state, dist=Dist(1, 2), mode_gen=torch.Generator())
    with caplog.at_level("WARNING", logger=LOGGER):
        rank1.load_state_dict(saved)
    assert not _warnings(caplog)
