"""The training loop: run folder, determinism, resume, divergence, modes, evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, ClassVar

import pytest
import torch

from orient3d import groups, model, runs, train
from orient3d.devices import (
    autocast,
)
from orient3d.errors import ConfigError, RunError
from orient3d.evaluate import eval_rotations, evaluate, load_run
from orient3d.train import Prepared, SingleMode, TrainingDiverged, fit
from orient3d.training import evaluation
from train_helpers import TIMING, interrupted_fit, metric_values, tiny_config, tiny_data


def test_fit_writes_the_run_folder(tmp_path: Path) -> None:
    cfg = tiny_config('train.mode="augmented"')
    result = fit(cfg, *tiny_data(cfg), tmp_path / "run", command="test")
    run = tmp_path / "run"
    assert runs.read_run_config(run) == cfg
    assert runs.read_json(run / "meta.json")["command"] == "test"
    records = runs.read_jsonl(run / "metrics.jsonl")
    assert [r["epoch"] for r in records] == [1, 2]
    keys = ("train_loss", "test_mse", "test_iou", "test_bce", "test_neg_elbo", "lr", "grad_norm")
    for key in (*keys, *TIMING):
        assert all(math.isfinite(r[key]) for r in records), key
    assert records[1]["lr"] < records[0]["lr"]  # cosine
    saved = json.loads((run / "results.json").read_text())
    assert saved == json.loads(json.dumps(result))
    _check_test_metrics_by_hand(cfg, run, saved)
    assert saved["protocol"] == "rotated" and saved["epochs_run"] == 2
    assert len(saved["per_object"]["mse"]) == len(saved["per_object"]["iou"]) == 8
    assert (run / "checkpoints" / "last.pt").exists() and (run / "checkpoints" / "best.pt").exists()
    assert any((run / "tb").iterdir())
    state = runs.load_checkpoint(run / "checkpoints" / "last.pt")
    want = {"model", "optimizer", "scheduler", "scaler", "epoch", "data_gen", "noise_gen", "mode"}
    assert want <= set(state) and state["epoch"] == 2
    assert runs.read_json(run / "meta.json")["precision"] in ("fp32", "bf16")


def _check_test_metrics_by_hand(cfg: Any, run: Path, saved: dict[str, Any]) -> None:
    """results.json's test metrics, recomputed voxel by voxel from the best checkpoint
    (protocol ``rotated``: each test object turned by its fixed element of O)."""
    vae = model.VAE(cfg.model, cfg.data.res)
    vae.load_state_dict(runs.load_checkpoint(run / "checkpoints" / "best.pt")["model"])
    vae.eval()
    test = tiny_data(cfg)[1]
    O, g = groups.cube_group(), eval_rotations(len(test), cfg.seed)
    shown = torch.stack([groups.rotate(v.float(), O, int(h)) for v, h in zip(test.voxels, g)])
    with torch.no_grad(), autocast(torch.device("cpu"), cfg.train.precision):
        out = vae(shown, sample=False)
    for i, x in enumerate(shown):  # x (D, D, D)
        p = torch.sigmoid(out.logits[i].float())
        pred, occ = p >= 0.5, x > 0
        # The run's model has another memory layout: a voxel whose probability sits at
        # 0.5 may fall the other way; allow two such flips in each thresholded rate.
        inter, union = int((pred & occ).sum()), int((pred | occ).sum())
        pos, neg = int(occ.sum()), int((~occ).sum())
        want = {
            "mse": (float(((p - x) ** 2).mean()), 1e-6),
            "neg_elbo": (float(out.neg_elbo[i]), 1e-4 * float(out.neg_elbo[i].abs())),
            "iou": (inter / union, 2 / union),
            "tpr": (inter / pos, 2 / pos),
            "tnr": (int((~pred & ~occ).sum()) / neg, 2 / neg),
        }
        for key, (value, tol) in want.items():
            got = saved["per_object"][key][i]
            assert got == pytest.approx(value, abs=tol), (key, i)
    for key in ("mse", "iou", "tpr", "tnr", "neg_elbo", "bce"):
        mean = sum(saved["per_object"][key]) / len(test)
        assert saved[f"test_{key}"] == pytest.approx(mean, rel=1e-9), key


def test_same_seed_same_numbers(tmp_path: Path) -> None:
    cfg = tiny_config('train.mode="augmented"')
    fit(cfg, *tiny_data(cfg), tmp_path / "a")
    fit(cfg, *tiny_data(cfg), tmp_path / "b")
    assert metric_values(tmp_path / "a") == metric_values(tmp_path / "b")
    other = tiny_config('train.mode="augmented"', "seed=1")
    fit(other, *tiny_data(cfg), tmp_path / "c")
    assert metric_values(tmp_path / "a") != metric_values(tmp_path / "c")


@pytest.mark.parametrize("every", [1, 2])
def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path, every: int) -> None:
    cfg = tiny_config(
        'train.mode="augmented"',
        "train.epochs=3",
        'train.lr_schedule="step"',
        "train.lr_step_epochs=1",
        f"train.checkpoint_every={every}",
    )
    data = tiny_data(cfg)
    fit(cfg, *data, tmp_path / "full")

    interrupted_fit(cfg, data, tmp_path / "cut", epoch=2, step=2)
    assert len(runs.read_jsonl(tmp_path / "cut" / "metrics.jsonl")) == 1
    runs.append_jsonl(tmp_path / "cut" / "metrics.jsonl", {"epoch": 2, "stale": True})
    fit(cfg, *data, tmp_path / "cut", resume=True)
    assert metric_values(tmp_path / "cut") == metric_values(tmp_path / "full")
    a = runs.read_json(tmp_path / "cut" / "results.json")
    b = runs.read_json(tmp_path / "full" / "results.json")
    assert a["per_object"] == b["per_object"] and a["epochs_run"] == 3
    assert len(runs.read_json(tmp_path / "cut" / "meta.json")["resumed"]) == 1
    assert runs.load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 3


def test_resume_of_a_missing_run_is_an_error(tmp_path: Path) -> None:
    cfg = tiny_config()
    with pytest.raises(RunError, match="not a run folder"):
        fit(cfg, *tiny_data(cfg), tmp_path / "nothing", resume=True)


def test_resume_refuses_a_changed_config(tmp_path: Path) -> None:
    cfg = tiny_config("train.epochs=1")
    fit(cfg, *tiny_data(cfg), tmp_path / "run")
    with pytest.raises(RunError, match=r"model\.latent"):
        fit(
            tiny_config("train.epochs=1", "model.latent=3"),
            *tiny_data(cfg),
            tmp_path / "run",
            resume=True,
        )
    fit(
        tiny_config("train.epochs=1", "train.threads=2"),
        *tiny_data(cfg),
        tmp_path / "run",
        resume=True,
    )


def test_non_empty_folder_is_refused_unless_forced(tmp_path: Path) -> None:
    cfg = tiny_config("train.epochs=1")
    data = tiny_data(cfg)
    fit(cfg, *data, tmp_path)
    with pytest.raises(RunError, match="not empty"):
        fit(cfg, *data, tmp_path)
    fit(cfg, *data, tmp_path, force=True)
    assert len(runs.read_jsonl(tmp_path / "metrics.jsonl")) == 1


def test_nan_loss_stops_with_a_clear_error_and_keeps_the_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = tiny_config("train.epochs=3")
    calls = {"n": 0}
    real = model.recon_loss

    def poisoned(*args: Any, **kwargs: Any) -> torch.Tensor:
        out = real(*args, **kwargs)
        if out.requires_grad:  # training steps only: 3 per epoch
            calls["n"] += 1
            if calls["n"] == 5:  # epoch 2, step 2
                return out * float("nan")
        return out

    monkeypatch.setattr(model, "recon_loss", poisoned)
    with pytest.raises(TrainingDiverged, match="epoch 2, step 2") as err:
        fit(cfg, *tiny_data(cfg), tmp_path)
    assert "epoch 1" in str(err.value) and isinstance(err.value, RunError)
    state = runs.load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_fp16_on_cpu_is_a_config_error(tmp_path: Path) -> None:
    cfg = tiny_config('train.precision="fp16"', 'train.device="cpu"')
    with pytest.raises(ConfigError, match="fp16"):
        fit(cfg, *tiny_data(cfg), tmp_path)


def test_bf16_and_contiguous_training_run(tmp_path: Path) -> None:
    cfg = tiny_config('train.precision="bf16"', "train.channels_last=false", "train.epochs=1")
    result = fit(cfg, *tiny_data(cfg), tmp_path)
    assert math.isfinite(result["test_neg_elbo"])


class RecordingMode(SingleMode):
    """Augmented, recording what the loop shows it; weights two copies of each row by 1/2."""

    rotate_inputs = True
    seen: ClassVar[list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]] = []

    def prepare(
        self, m: Any, x_shown: torch.Tensor, g: torch.Tensor, idx: torch.Tensor, epoch: int
    ) -> Prepared:
        self.seen.append((x_shown.clone(), g.clone(), idx.clone()))
        x = x_shown.repeat(2, 1, 1, 1)
        return Prepared(x, torch.full((x.shape[0],), 0.5), None)

    def end_epoch(self, epoch: int) -> dict[str, Any]:
        return {"rows_seen": sum(len(s[2]) for s in self.seen)}


def test_modes_see_rotated_batches_and_extras_are_logged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(train.MODES, "augmented", RecordingMode)
    RecordingMode.seen = []
    cfg = tiny_config('train.mode="augmented"', "train.epochs=1")
    train_set, test_set = tiny_data(cfg)
    fit(cfg, train_set, test_set, tmp_path, val_set=test_set)  # all of train_set trains
    group = groups.cube_group()
    idx_all = torch.cat([s[2] for s in RecordingMode.seen])
    assert sorted(idx_all.tolist()) == list(range(len(train_set)))  # a permutation
    for x_shown, g, idx in RecordingMode.seen:
        want = groups.rotate(train_set.voxels[idx], group, g).float()
        assert torch.equal(x_shown, want)
    assert len(torch.unique(torch.cat([s[1] for s in RecordingMode.seen]))) > 1
    assert runs.read_jsonl(tmp_path / "metrics.jsonl")[0]["rows_seen"] == len(train_set)


def test_unknown_mode_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="nope"):
        train.get_mode("nope")


@pytest.mark.parametrize(
    ("schedule", "want"), [("constant", [1e-3] * 3), ("step", [1e-3, 5e-4, 5e-4])]
)
def test_lr_schedules(tmp_path: Path, schedule: str, want: list[float]) -> None:
    cfg = tiny_config(
        f'train.lr_schedule="{schedule}"',
        "train.lr_step_epochs=1",
        "train.epochs=3",
        "data.n_train=8",
    )
    fit(cfg, *tiny_data(cfg), tmp_path)
    lrs = [r["lr"] for r in runs.read_jsonl(tmp_path / "metrics.jsonl")]
    assert lrs[: 2 if schedule == "step" else 3] == pytest.approx(
        want[: 2 if schedule == "step" else 3]
    )


def test_early_stopping(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = evaluation.evaluate

    def worse_each_epoch(*args: Any, **kwargs: Any) -> dict[str, Any]:
        out = real(*args, **kwargs)
        calls["n"] += 1
        out["test_neg_elbo"] = 100.0 + calls["n"]
        return out

    monkeypatch.setattr(evaluation, "evaluate", worse_each_epoch)
    cfg = tiny_config("train.epochs=6", "train.early_stopping=2", "data.n_train=8")
    result = fit(cfg, *tiny_data(cfg), tmp_path)
    assert result["epochs_run"] == 3 and result["early_stopped"] and result["best_epoch"] == 1
    assert runs.load_checkpoint(tmp_path / "checkpoints" / "last.pt")["epoch"] == 3
    # A resume of a finished run changes nothing.
    fit(cfg, *tiny_data(cfg), tmp_path, resume=True)
    assert len(runs.read_jsonl(tmp_path / "metrics.jsonl")) == 3


def test_evaluate_protocols_and_load_run(tmp_path: Path) -> None:
    cfg = tiny_config("train.epochs=1", "data.n_test=12", "train.eval_batch_size=64")
    _, test_set = tiny_data(cfg)
    fit(cfg, *tiny_data(cfg), tmp_path)
    cfg2, vae = load_run(tmp_path)
    assert cfg2 == cfg and not vae.training
    stored = evaluate(vae, test_set, cfg)
    assert stored["protocol"] == "as_stored"
    assert stored["test_mse"] == pytest.approx(
        runs.read_json(tmp_path / "results.json")["test_mse"]
    )
    rotated = evaluate(vae, test_set, cfg, protocol="rotated")
    assert rotated["per_object"]["mse"] != stored["per_object"]["mse"]
    g = eval_rotations(len(test_set), cfg.seed)

    def oracle(m: Any, x: torch.Tensor) -> torch.Tensor:
        return g  # the true rotation: the model sees the stored objects again

    searched = evaluate(vae, test_set, cfg, protocol="rotated+search", canonicalize=oracle)
    for key in ("mse", "iou", "bce", "neg_elbo"):
        assert searched["per_object"][key] == pytest.approx(stored["per_object"][key], abs=1e-6)
    with pytest.raises(RunError, match="canonicalize"):
        evaluate(vae, test_set, cfg, protocol="rotated+search")
    with pytest.raises(ConfigError):
        evaluate(vae, test_set, cfg, protocol="sideways")


def test_load_run_errors(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a run folder"):
        load_run(tmp_path)


def _record_shown(monkeypatch: pytest.MonkeyPatch) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The grids (and object indices) the loop shows mode single, step by step."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    plain = SingleMode.prepare

    def record(
        self: Any, model: Any, x: torch.Tensor, g: torch.Tensor, idx: torch.Tensor, epoch: int
    ) -> Prepared:
        seen.append((x.clone(), idx.clone()))
        return plain(self, model, x, g, idx, epoch)

    monkeypatch.setattr(SingleMode, "prepare", record)
    return seen


def test_turned_back_is_the_two_resamplings_on_the_picked_rows_only() -> None:
    from orient3d.geometry import so3
    from orient3d.training.loop import turned_back

    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(5, 12, 12, 12, generator=gen) < 0.3).float()
    R = so3.random_rotations(5, gen)
    pick = torch.tensor([True, False, True, False, True])
    got = turned_back(x, pick, R)
    for i in range(5):
        if pick[i]:  # the obvious one-row version
            shown = (so3.resample(x[i : i + 1], R[i : i + 1]) > 0.5).float()
            want = so3.resample(shown, R[i : i + 1].transpose(-1, -2))[0]
            assert torch.allclose(got[i], want.clamp(0, 1))
            assert not torch.equal(got[i], x[i])  # a generic turn leaves artifacts
        else:
            assert torch.equal(got[i], x[i])
    # a quarter turn lands on voxel centres: no artifact, the grid comes back exactly
    quarter = groups.cube_group().matrices[1].float()[None].expand(5, 3, 3)
    assert torch.allclose(turned_back(x, pick, quarter), x, atol=1e-5)
    assert turned_back(x, torch.zeros(5, dtype=torch.bool), R) is x


def test_resample_frac_shows_that_share_of_samples_turned_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orient3d.data import split_validation

    seen = _record_shown(monkeypatch)
    cfg = tiny_config("train.resample_frac=0.5", "train.epochs=3")
    train_set, test_set = tiny_data(cfg)
    fit(cfg, train_set, test_set, tmp_path / "run")
    objects = split_validation(train_set, cfg.data.n_val, cfg.seed)[0].voxels.float()
    same = turned = 0
    for x, idx in seen:
        for grid, i in zip(x, idx.tolist()):
            if torch.equal(grid, objects[i]):
                same += 1
                continue
            turned += 1
            assert float(grid.min()) >= 0 and float(grid.max()) <= 1
            # the object in its stored pose, give or take the voxels the turns blur
            inter = ((grid > 0.5) & (objects[i] > 0)).sum()
            union = ((grid > 0.5) | (objects[i] > 0)).sum()
            assert float(inter / union) > 0.3
    assert 0.3 < turned / (same + turned) < 0.7
    first = json.loads((tmp_path / "run" / "results.json").read_text())
    # seeded: the same config draws the same turns
    fit(cfg, train_set, test_set, tmp_path / "again")
    assert (
        json.loads((tmp_path / "again" / "results.json").read_text())["test_neg_elbo"]
        == (first["test_neg_elbo"])
    )
    with pytest.raises(ConfigError, match="train.resample_frac"):
        tiny_config("train.resample_frac=1.5")
    bad = tiny_config("train.resample_frac=0.5", "train.mode=continuous")
    refused = "train.resample_frac=0.5 cannot be used with mode continuous"
    with pytest.raises(ConfigError, match=refused):
        fit(bad, train_set, test_set, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()


def test_shift_augments_training_grids_only_by_offsets_in_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from orient3d.data import split_validation
    from orient3d.geometry.transforms import shift

    seen = _record_shown(monkeypatch)
    cfg = tiny_config("train.shift=2")
    train_set, test_set = tiny_data(cfg)
    fit(cfg, train_set, test_set, tmp_path / "run")
    objects = split_validation(train_set, cfg.data.n_val, cfg.seed)[0].voxels
    offsets = [(a, b, c) for a in range(-2, 3) for b in range(-2, 3) for c in range(-2, 3)]
    used = set()
    for x, idx in seen:
        for grid, i in zip(x, idx.tolist()):
            source = objects[i : i + 1]
            match = [
                t for t in offsets if torch.equal(shift(source, torch.tensor([t]))[0].float(), grid)
            ]
            assert match, "a training grid is no shift of its object within [-2, 2]^3"
            used.update(match)
    assert len(used) > 10  # offsets are drawn, not one fixed shift
    with pytest.raises(ConfigError, match="train.shift=8"):
        fit(tiny_config("train.shift=8"), train_set, test_set, tmp_path / "bad")
    assert not (tmp_path / "bad").exists()  # refused before the run folder is made
    with pytest.raises(ConfigError, match="train.shift"):
        tiny_config("train.shift=-1")
