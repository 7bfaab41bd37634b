"""The orientation head: its symmetry-aware loss, its training beside the VAE, old runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from orient3d.config import ModelConfig
from orient3d.evaluation.protocols import load_run
from orient3d.geometry.groups import cube_group, rotate, same_voxels, stabilizer_mask
from orient3d.model import VAE
from orient3d.rundir import runs
from orient3d.training.loop import fit
from orient3d.training.modes.base import Prepared
from orient3d.training.pose_head import (
    HeadTrainer,
    model_frame_rows,
    symmetric_nll,
    symmetric_targets,
)
from test_search_discrete import make_objects
from train_helpers import interrupted_fit, metric_values, tiny_config, tiny_data

O = cube_group()
HEAD_KEYS = ("pose_head_acc", "pose_head_loss")


def _table(res: int = 8) -> torch.Tensor:
    """A square table: a top and four legs, symmetric under the quarter turns about z."""
    x = torch.zeros(res, res, res, dtype=torch.uint8)
    x[1:7, 1:7, 5] = 1
    for i in (1, 6):
        for j in (1, 6):
            x[i, j, 1:5] = 1
    return x


def _slow_nll(logits: torch.Tensor, stab: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Per sample: -log of the softmax mass on the elements e with e·x == s·x."""
    out = []
    for b in range(logits.shape[0]):
        p = torch.softmax(logits[b].double(), dim=0)
        mass = sum(float(p[e]) for e in range(24) if bool(same_voxels(stab[b], O, e, int(s[b]))))
        out.append(-math.log(mass))
    return torch.tensor(out, dtype=torch.float64)


def test_the_loss_equals_a_slow_per_sample_version(torch_gen: torch.Generator) -> None:
    x = torch.cat([make_objects(3, res=8).voxels, _table()[None], torch.ones(1, 8, 8, 8)])
    stab = stabilizer_mask(x, O)  # (5, 24): trivial, trivial, trivial, 4 elements, all 24
    assert stab.sum(dim=1).tolist() == [1, 1, 1, 4, 24]
    s = torch.randint(24, (5,), generator=torch_gen)
    logits = 3 * torch.randn(5, 24, generator=torch_gen)
    fast = symmetric_nll(logits, symmetric_targets(stab, s, O))
    torch.testing.assert_close(fast.double(), _slow_nll(logits, stab, s), rtol=1e-5, atol=1e-6)
    assert float(fast[4]) == pytest.approx(0.0, abs=1e-6)  # every element is right


def test_every_equivalent_element_of_a_symmetric_object_counts() -> None:
    x = _table()
    for s in range(24):
        shown = rotate(x, O, s)
        right = symmetric_targets(stabilizer_mask(x[None], O), torch.tensor([s]), O)[0]
        by_voxels = [torch.equal(rotate(x, O, e), shown) for e in range(24)]
        assert right.tolist() == by_voxels and sum(by_voxels) == 4
        # all the mass on one equivalent element that is not s itself: no loss
        other = next(e for e in range(24) if by_voxels[e] and e != s)
        logits = torch.full((1, 24), -30.0)
        logits[0, other] = 30.0
        assert float(symmetric_nll(logits, right[None])[0]) == pytest.approx(0.0, abs=1e-6)
        logits = torch.full((1, 24), -30.0)
        logits[0, next(e for e in range(24) if not by_voxels[e])] = 30.0
        assert float(symmetric_nll(logits, right[None])[0]) > 50


def test_soft_rows_give_the_row_of_largest_weight() -> None:
    x = torch.arange(6 * 8**3, dtype=torch.float32).view(6, 8, 8, 8)  # 2 samples × 3 rows
    w = torch.tensor([0.2, 0.7, 0.1, 0.5, 0.1, 0.4])
    rows = model_frame_rows(Prepared(x, w, None), 2)
    assert torch.equal(rows, x[[1, 3]])
    assert model_frame_rows(Prepared(x, None, None), 6) is not None


def test_a_step_moves_the_head_only_and_learns() -> None:
    torch.set_num_threads(1)  # tiny convs run faster that way on a shared machine
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=4, width=4, pose_head=True), 16)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    head = HeadTrainer(model, opt, seed=0)
    x = make_objects(4).voxels.float()
    rng = torch.get_rng_state()
    for _ in range(150):
        head.step(Prepared(x, None, None), 4)
    assert torch.equal(torch.get_rng_state(), rng)  # its own generator
    assert model.training and all(not p.requires_grad for p in model.pose_head.parameters())
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {k for k in before if k.startswith("pose_head.")}
    last = head.end_epoch()
    assert last["pose_head_loss"] < math.log(24)  # below chance over the 150 steps
    # 4 fixed objects: the head ends up telling their 24 poses apart
    right = symmetric_targets(stabilizer_mask(x, O).repeat(24, 1), torch.arange(24).repeat(4), O)
    shown = rotate(x.repeat(24, 1, 1, 1), O, torch.arange(24).repeat(4))
    model.eval()
    with torch.no_grad():
        pred = model.pose_logits(shown).argmax(dim=1)
    assert right.gather(1, pred[:, None]).float().mean() > 0.5


def _run(tmp_path: Path, name: str, *overrides: str) -> Path:
    cfg = tiny_config("data.res=8", "data.n_train=12", "data.n_test=4", *overrides)
    fit(cfg, *tiny_data(cfg), tmp_path / name)
    return tmp_path / name


def _without_head(records: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k not in HEAD_KEYS} for r in records]


@pytest.mark.parametrize("mode", ["single", "search"])
def test_the_vae_is_bitwise_the_same_with_and_without_the_head(tmp_path: Path, mode: str) -> None:
    plain = _run(tmp_path, "plain", f"train.mode={mode}", "search.warmup_epochs=1")
    head = _run(tmp_path, "head", f"train.mode={mode}", "search.warmup_epochs=1",
                "model.pose_head=true")  # fmt: skip
    a, b = metric_values(plain), metric_values(head)
    assert len(a) == 2 and all(set(HEAD_KEYS) <= set(r) for r in b)
    assert all(0 <= r["pose_head_acc"] <= 1 for r in b)
    assert a == _without_head(b)
    sa = runs.load_checkpoint(runs.checkpoint_path(plain, "last"), "cpu")
    sb = runs.load_checkpoint(runs.checkpoint_path(head, "last"), "cpu")
    extra = set(sb["model"]) - set(sa["model"])
    assert extra and all(k.startswith("pose_head.") for k in extra)
    assert all(torch.equal(v, sb["model"][k]) for k, v in sa["model"].items())
    ra, rb = (runs.read_json(r / "results.json") for r in (plain, head))
    assert ra["per_object"] == rb["per_object"] and ra["test_mse"] == rb["test_mse"]


def test_a_resumed_run_trains_the_head_as_an_uninterrupted_one(tmp_path: Path) -> None:
    cfg = tiny_config("data.res=8", "data.n_train=12", "train.epochs=3", "model.pose_head=true")
    data = tiny_data(cfg)
    interrupted_fit(cfg, data, tmp_path / "killed", epoch=2, step=1)
    fit(cfg, *data, tmp_path / "killed", resume=True)
    fit(cfg, *data, tmp_path / "full")
    assert metric_values(tmp_path / "killed") == metric_values(tmp_path / "full")
    _, a = load_run(tmp_path / "killed")
    _, b = load_run(tmp_path / "full")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_a_headless_run_written_before_the_key_still_loads(tmp_path: Path) -> None:
    run = _run(tmp_path, "old")
    text = (run / "config.toml").read_text()
    assert "pose_head = false" in text
    (run / "config.toml").write_text(text.replace("pose_head = false\n", ""))
    cfg, model = load_run(run)
    assert not cfg.model.pose_head and model.pose_head is None
    with pytest.raises(ValueError, match="no orientation head"):
        model.pose_logits(torch.zeros(1, 8, 8, 8))


def test_the_head_leaves_the_initial_weights_alone() -> None:
    torch.manual_seed(3)
    plain = VAE(ModelConfig(latent=4, width=4), 16).state_dict()
    torch.manual_seed(3)
    head = VAE(ModelConfig(latent=4, width=4, pose_head=True), 16).state_dict()
    assert all(torch.equal(v, head[k]) for k, v in plain.items())
    assert head["pose_head.3.weight"].shape == (24, 256)
