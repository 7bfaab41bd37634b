"""The orientation head: its symmetry-aware loss, its fit after training, old runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from orient3d.config import ModelConfig
from orient3d.evaluation.protocols import load_run
from orient3d.evaluation.recovery import head_log_probs
from orient3d.geometry.groups import cube_group, rotate, same_voxels, stabilizer_mask
from orient3d.model import VAE
from orient3d.rundir import runs
from orient3d.training.loop import fit
from orient3d.training.modes.base import SingleMode
from orient3d.training.pose_head import (
    fit_head,
    head_accuracy,
    model_frame,
    symmetric_nll,
    symmetric_targets,
)
from test_search_discrete import make_objects
from train_helpers import interrupted_fit, metric_values, tiny_config, tiny_data

O = cube_group()


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


def test_the_fit_moves_the_head_only_and_learns() -> None:
    torch.set_num_threads(1)  # tiny convs run faster that way on a shared machine
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=4, width=4, pose_head=True), 16).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = make_objects(4).voxels
    rng = torch.get_rng_state()
    fitted = fit_head(model, x, epochs=120, seed=0)
    assert torch.equal(torch.get_rng_state(), rng)  # its own draws
    assert model.training and all(not p.requires_grad for p in model.pose_head.parameters())
    after = model.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved == {k for k in before if k.startswith("pose_head.")}
    # far above chance (1/24); a random width-4 encoder does not tell every pose apart
    assert fitted["train_acc"] > 0.5 and fitted["train_loss"] < 0.5 * math.log(24)
    acc = head_accuracy(model, x)
    assert acc["top_k"]["1"] > 0.5 and acc["top_k"]["1"] <= acc["top_k"]["2"] <= acc["top_k"]["4"]
    # the same seed fits the same head, whatever the head held before
    again = fit_head(model, x, epochs=120, seed=0)
    assert again == fitted and all(torch.equal(v, model.state_dict()[k]) for k, v in after.items())


def test_head_accuracy_equals_a_direct_evaluation_of_every_pose() -> None:
    torch.set_num_threads(1)
    torch.manual_seed(1)
    model = VAE(ModelConfig(latent=4, width=4, pose_head=True), 8).eval()
    x = torch.cat([make_objects(2, res=8).voxels, _table()[None]])
    got = head_accuracy(model, x)
    stab = stabilizer_mask(x, O)
    for v in (1, 2, 4):
        hits = 0
        for e in range(24):
            pred = head_log_probs(model, rotate(x, O, e), views=v).argmax(dim=1)
            hits += sum(bool(same_voxels(stab[i], O, int(pred[i]), e)) for i in range(3))
        assert got["views"][str(v)] == pytest.approx(hits / 72)
    for k in (1, 2, 4):
        hits = 0
        for e in range(24):
            top = head_log_probs(model, rotate(x, O, e)).topk(k, dim=1).indices
            hits += sum(
                any(bool(same_voxels(stab[i], O, int(t), e)) for t in top[i]) for i in range(3)
            )
        assert got["top_k"][str(k)] == pytest.approx(hits / 72)


def test_the_model_frame_of_search_is_its_exhaustive_choice() -> None:
    from orient3d.search.discrete import canonicalize
    from orient3d.training.modes import SearchMode

    torch.manual_seed(2)
    model = VAE(ModelConfig(latent=4, width=4, pose_head=True), 16).eval()
    objs = make_objects(3)
    mode = SearchMode(tiny_config("train.mode=search"), objs, torch.Generator())
    r = canonicalize(model, objs.voxels, O)
    assert torch.equal(model_frame(model, mode, objs.voxels), rotate(objs.voxels, O, O.inverse[r]))
    single = SingleMode(tiny_config(), objs, torch.Generator())
    assert torch.equal(model_frame(model, single, objs.voxels), objs.voxels)


def _run(tmp_path: Path, name: str, *overrides: str) -> Path:
    cfg = tiny_config("data.res=8", "data.n_train=12", "data.n_test=4", *overrides)
    fit(cfg, *tiny_data(cfg), tmp_path / name)
    return tmp_path / name


@pytest.mark.parametrize("mode", ["single", "search"])
def test_the_vae_is_bitwise_the_same_with_and_without_the_head(tmp_path: Path, mode: str) -> None:
    common = (f"train.mode={mode}", "search.warmup_epochs=1", "model.pose_head_epochs=2")
    plain = _run(tmp_path, "plain", *common)
    head = _run(tmp_path, "head", *common, "model.pose_head=true")
    assert metric_values(plain) == metric_values(head) and len(metric_values(head)) == 2
    ra, rb = (runs.read_json(r / "results.json") for r in (plain, head))
    assert ra.pop("seconds_total") > 0 and rb.pop("seconds_total") > 0
    assert ra == rb
    for which in ("best", "last"):
        sa = runs.load_checkpoint(runs.checkpoint_path(plain, which), "cpu")["model"]
        sb = runs.load_checkpoint(runs.checkpoint_path(head, which), "cpu")["model"]
        extra = set(sb) - set(sa)
        assert extra and all(k.startswith("pose_head.") for k in extra)
        assert all(torch.equal(v, sb[k]) for k, v in sa.items())
    report = runs.read_json(head / "pose_head.json")
    assert report["epochs"] == 2 and report["objects"] == 11  # 12 less 1 for validation
    assert set(report["val_views"]) == {"1", "2", "4"} and 0 <= report["train_acc"] <= 1
    assert not (plain / "pose_head.json").exists()
    # the fitted head is in the checkpoint load_run reads: it matches the report's figure
    cfg, model = load_run(head)
    torch.manual_seed(0)
    fresh = VAE(cfg.model, 8).state_dict()
    assert not torch.equal(model.state_dict()["pose_head.3.weight"], fresh["pose_head.3.weight"])


def test_a_resumed_run_trains_the_head_as_an_uninterrupted_one(tmp_path: Path) -> None:
    cfg = tiny_config(
        "data.res=8", "data.n_train=12", "train.epochs=3", "model.pose_head=true",
        "model.pose_head_epochs=3",
    )  # fmt: skip
    data = tiny_data(cfg)
    interrupted_fit(cfg, data, tmp_path / "killed", epoch=2, step=1)
    fit(cfg, *data, tmp_path / "killed", resume=True)
    fit(cfg, *data, tmp_path / "full")
    assert metric_values(tmp_path / "killed") == metric_values(tmp_path / "full")
    a, b = (runs.read_json(tmp_path / r / "pose_head.json") for r in ("killed", "full"))
    assert a.pop("seconds") > 0 and b.pop("seconds") > 0 and a == b
    _, a = load_run(tmp_path / "killed")
    _, b = load_run(tmp_path / "full")
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())


def test_a_run_trained_without_a_head_gets_the_same_head_fitted_afterwards(
    tmp_path: Path,
) -> None:
    """fit_run on a headless run's checkpoint: the head (and its report) that the same
    run trained with model.pose_head = true fitted; another model is refused."""
    import dataclasses

    from orient3d.data import split_validation
    from orient3d.errors import RunError
    from orient3d.training.pose_head import fit_run

    common = ("model.pose_head_epochs=2",)
    plain = _run(tmp_path, "plain", *common)
    head = _run(tmp_path, "head", *common, "model.pose_head=true")
    cfg = runs.read_run_config(head)
    train, _ = tiny_data(cfg)
    fit_set, val_set = split_validation(train, cfg.data.n_val, cfg.seed)
    mode = SingleMode(cfg, fit_set, torch.Generator())
    report = fit_run(VAE(cfg.model, 8), mode, cfg, fit_set, val_set, plain)
    want = runs.read_json(head / "pose_head.json")
    assert report.pop("seconds") > 0 and want.pop("seconds") > 0 and report == want
    for which in ("best", "last"):
        sa = runs.load_checkpoint(runs.checkpoint_path(plain, which), "cpu")["model"]
        sb = runs.load_checkpoint(runs.checkpoint_path(head, which), "cpu")["model"]
        assert set(sa) == set(sb) and all(torch.equal(v, sb[k]) for k, v in sa.items())
    wide = dataclasses.replace(cfg.model, width=cfg.model.width * 2)
    with pytest.raises(RunError, match="does not match the model"):
        fit_run(VAE(wide, 8), mode, cfg, fit_set, val_set, plain)


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
    assert head["pose_head.3.weight"].shape == (24, 512)
