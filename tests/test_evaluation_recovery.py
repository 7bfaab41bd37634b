"""Orientation recovery: a model trained on one pose finds the rotation applied to it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from orient3d.config import Config, ModelConfig, apply_overrides
from orient3d.data import VoxelSet
from orient3d.groups import cube_group, rotate
from orient3d.model import VAE
from orient3d.recover import recover, recovery_table
from test_search_discrete import make_objects
from train_helpers import fit_stored_pose


def _train_single(objs: VoxelSet, steps: int = 80) -> VAE:
    """A tiny VAE fitted to the objects in their stored pose only (1 thread: tiny convs
    run faster that way on a shared machine)."""
    return fit_stored_pose(ModelConfig(latent=8, width=8), objs.res, objs.voxels, steps).eval()


@pytest.fixture(scope="module")
def trained() -> tuple[VAE, VoxelSet]:
    objs = make_objects(6, seed=3)
    return _train_single(objs), objs


def test_single_pose_model_recovers_the_rotation(trained: tuple[VAE, VoxelSet]) -> None:
    model, objs = trained
    res = recover(model, objs, 48, generator=torch.Generator().manual_seed(0), choice="soft")
    assert res["n"] == 48
    assert res["accuracy"] >= 0.9, res
    assert res["posterior_mass_on_truth"] >= 0.8
    assert sum(res["errors_by_angle"].values()) == 48 - res["n_correct"]
    assert set(res["errors_by_angle"]) >= {"90", "120", "180"}
    assert res["objects_per_s"] == pytest.approx(res["n"] / res["seconds"])
    json.dumps(res)  # JSON-ready
    assert "accuracy" in recovery_table(res)


def test_symmetric_objects_count_right_modulo_symmetry(trained: tuple[VAE, VoxelSet]) -> None:
    """A cube-symmetric object: every prediction gives the same voxels, so all are right."""
    model = trained[0]
    cube = torch.zeros(1, 16, 16, 16, dtype=torch.uint8)
    cube[:, 4:12, 4:12, 4:12] = 1
    sym = VoxelSet(
        voxels=cube,
        labels=torch.zeros(1, dtype=torch.long),
        class_names=("cube",),
        ids=("c",),
        stabilizers=torch.ones(1, 24, dtype=torch.bool),
    )
    res = recover(model, sym, 10, generator=torch.Generator().manual_seed(0))
    assert res["accuracy"] == 1.0
    assert res["posterior_mass_on_truth"] == pytest.approx(1.0)


def test_an_untrained_model_is_near_chance() -> None:
    torch.manual_seed(1)
    model = VAE(ModelConfig(latent=4, width=4), 16).eval()
    res = recover(model, make_objects(4), 24, generator=torch.Generator().manual_seed(0))
    assert res["accuracy"] < 0.5


def _tiny_run(tmp_path: Path, *overrides: str) -> str:
    """A one-epoch run on 6 small objects (3 of them as the test split); its folder."""
    from orient3d.train import fit

    cfg = apply_overrides(
        Config(),
        [
            "data.res=16",
            f"data.cache_dir={tmp_path / 'cache'}",
            "model.latent=4",
            "model.width=4",
            "train.epochs=1",
            "train.progress=false",
            *overrides,
        ],
    )
    objs = make_objects(6)
    fit(cfg, objs, objs.subset([0, 1, 2]), tmp_path / "run")
    return str(tmp_path / "run")


def test_recover_cli_writes_recover_json(tmp_path: Path) -> None:
    from orient3d.cli import main

    _tiny_run(tmp_path, "data.n_train=6", "data.n_test=3")
    assert main(["recover", str(tmp_path / "run"), "--n", "5", "--choice", "soft"]) == 0
    out = json.loads((tmp_path / "run" / "recover.json").read_text())
    assert out["n"] == 5 and 0 <= out["accuracy"] <= 1
    assert {"errors_by_angle", "posterior_mass_on_truth", "objects_per_s", "protocol"} <= set(out)


def test_rotation_convention_of_the_shown_object() -> None:
    """recover shows g·c: the model's frame r⁻¹·(g·c) is c exactly when r == g."""
    o = cube_group()
    c = make_objects(1).voxels
    for g in range(24):
        assert torch.equal(rotate(rotate(c, o, g), o, int(o.inverse[g])), c)


def test_recover_data_file_uses_every_object_of_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user who names a file means all of it: no seeded test split of it."""
    import numpy as np

    from orient3d.cli import main

    run = _tiny_run(tmp_path, "data.n_val=0")
    extra = make_objects(7)
    np.savez(tmp_path / "objs.npz", voxels=extra.voxels.numpy())
    assert main(["recover", run, "--data", str(tmp_path / "objs.npz")]) == 0
    out = json.loads((tmp_path / "run" / "recover.json").read_text())
    assert out["n"] == 7 and out["protocol"]["objects_available"] == 7
    assert "recovering 7 of 7 objects: every object of" in capsys.readouterr().out
    assert main(["recover", run, "--data", str(tmp_path / "objs.npz"), "--n", "3"]) == 0
    assert json.loads((tmp_path / "run" / "recover.json").read_text())["n"] == 3
