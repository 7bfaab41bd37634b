"""Recovery with the orientation head's proposals: only K rows scored per object."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from orient3d.config import Config, ModelConfig, apply_overrides
from orient3d.data import VoxelSet
from orient3d.errors import ConfigError
from orient3d.evaluation import recovery
from orient3d.geometry.groups import cube_group, rotate, same_voxels
from orient3d.model import VAE
from orient3d.search.discrete import score_orientations
from test_cli_messages import _error
from test_search_discrete import make_objects

O = cube_group()
N = 10  # rotated objects per recovery


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # tiny convs run faster that way on a shared machine


@pytest.fixture(scope="module")
def setup() -> tuple[VAE, VoxelSet]:
    torch.manual_seed(0)
    model = VAE(ModelConfig(latent=4, width=4, pose_head=True), 16).eval()
    return model, make_objects(5, seed=2)


def _recover(model: VAE, objs: VoxelSet, **kw: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """recover() on N objects; also what it judged: the shown grids and the predictions."""
    seen: dict[str, Any] = {}
    judge = recovery.recovery_accuracy

    def spy(pred: torch.Tensor, g: torch.Tensor, *args: Any, **kws: Any) -> dict[str, Any]:
        seen["pred"], seen["g"] = pred.clone(), g.clone()
        return judge(pred, g, *args, **kws)

    recovery.recovery_accuracy = spy  # type: ignore[assignment]
    try:
        res = recovery.recover(model, objs, N, generator=torch.Generator().manual_seed(1), **kw)
    finally:
        recovery.recovery_accuracy = judge  # type: ignore[assignment]
    seen["x"] = rotate(objs.voxels[torch.arange(N) % len(objs)], O, seen["g"])
    return res, seen


def _count_rows(model: VAE) -> list[int]:
    """Rows passed to the VAE's forward from now on (the instance's forward is wrapped)."""
    rows: list[int] = []
    forward = type(model).forward

    def counted(x: torch.Tensor, *a: Any, **kw: Any) -> Any:
        rows.append(x.shape[0])
        return forward(model, x, *a, **kw)

    model.forward = counted  # type: ignore[method-assign]
    return rows


SAME = ("accuracy", "n_correct", "errors_by_angle", "posterior_mass_on_truth")


def test_proposals_24_is_the_exhaustive_search(setup: tuple[VAE, VoxelSet]) -> None:
    model, objs = setup
    full, a = _recover(model, objs)
    k24, b = _recover(model, objs, proposals=24)
    assert torch.equal(a["pred"], b["pred"]) and all(full[k] == k24[k] for k in SAME)
    assert full["proposals"] == k24["proposals"] == 24
    scores = score_orientations(model, a["x"], O)
    assert torch.equal(a["pred"], scores.argmin(dim=1))
    stab = objs.stabilizers[torch.arange(N) % len(objs)]
    right = [bool(same_voxels(stab[i], O, int(a["pred"][i]), int(a["g"][i]))) for i in range(N)]
    assert full["wrong_views"] == [i for i in range(N) if not right[i]]


@pytest.mark.parametrize(("k", "views"), [(2, 1), (4, 1), (23, 1), (2, 4)])
def test_k_proposals_score_k_rows_and_pick_the_best_of_them(
    setup: tuple[VAE, VoxelSet], k: int, views: int
) -> None:
    model, objs = setup
    fresh = VAE(model.cfg, 16).eval()
    fresh.load_state_dict(model.state_dict())
    rows = _count_rows(fresh)
    res, seen = _recover(fresh, objs, proposals=k, views=views)
    assert sum(rows) == N * k and res["proposals"] == k and res["head_views"] == views
    top = _slow_log_probs(model, seen["x"], views).topk(k, dim=1).indices  # (N, k)
    full = score_orientations(model, seen["x"], O)  # (N, 24), scored apart
    best = top.gather(1, full.gather(1, top).argmin(dim=1, keepdim=True)).squeeze(1)
    assert torch.equal(seen["pred"], best)


def _slow_log_probs(model: VAE, x: torch.Tensor, views: int) -> torch.Tensor:
    """The head's log q(r | x) averaged over views q·x: view q says x = q⁻¹e·c."""
    total = torch.zeros(x.shape[0], 24)
    mats = O.matrices
    with torch.no_grad():
        for q in recovery.view_elements()[:views]:
            logp = torch.log_softmax(model.pose_logits(rotate(x, O, q)), dim=1)
            for r in range(24):
                total[:, r] += logp[:, O.index_of(mats[q] @ mats[r])]
    return total / views


def test_the_views_are_the_turns_about_up_first_and_average_the_head(
    setup: tuple[VAE, VoxelSet],
) -> None:
    model, objs = setup
    first = recovery.view_elements()[:4]
    assert sorted(recovery.view_elements()) == list(range(24)) and first[0] == 0
    for q in first[1:]:  # turns about z: z stays put
        assert O.matrices[q][2].tolist() == [0, 0, 1]
    x = objs.voxels[:3]
    for v in (1, 3, 24):
        torch.testing.assert_close(
            recovery.head_log_probs(model, x, v), _slow_log_probs(model, x, v)
        )
    # all 24 views: an equivariant head, q(r | g·x) = q(g⁻¹r | x)
    full = recovery.head_log_probs(model, x, 24)
    for g in (1, 5, 17):
        turned = recovery.head_log_probs(model, rotate(x, O, g), 24)
        torch.testing.assert_close(turned[:, O.table[g]], full, rtol=1e-4, atol=1e-4)
    with pytest.raises(ConfigError, match="views"):
        recovery.head_log_probs(model, x, 25)


def test_one_proposal_is_the_heads_argmax_with_no_scoring(setup: tuple[VAE, VoxelSet]) -> None:
    model, objs = setup
    fresh = VAE(model.cfg, 16).eval()
    fresh.load_state_dict(model.state_dict())
    rows = _count_rows(fresh)
    res, seen = _recover(fresh, objs, proposals=1)
    assert rows == [] and res["proposals"] == 1
    with torch.no_grad():
        assert torch.equal(seen["pred"], model.pose_logits(seen["x"]).argmax(dim=1))
    assert "argmax" in res["protocol"]["score"] and res["objects_per_s"] > 0
    assert "elements considered" in recovery.recovery_table(res)


def test_a_model_without_a_head_refuses_proposals() -> None:
    model = VAE(ModelConfig(latent=4, width=4), 16).eval()
    for k in (1, 4, 23):
        with pytest.raises(ConfigError, match=r"--model\.pose_head=true"):
            recovery.recover(model, make_objects(2), 2, generator=torch.Generator(), proposals=k)
    for k in (-1, 25):
        with pytest.raises(ConfigError, match="proposals"):
            recovery.recover(model, make_objects(2), 2, generator=torch.Generator(), proposals=k)
    res = recovery.recover(model, make_objects(2), 2, generator=torch.Generator(), proposals=24)
    assert res["proposals"] == 24 and res["head_views"] == 0
    with pytest.raises(ConfigError, match="views=2 needs proposals"):
        recovery.recover(model, make_objects(2), 2, generator=torch.Generator(), views=2)


def _run(tmp_path: Path, *overrides: str) -> str:
    from orient3d.train import fit

    cfg = apply_overrides(
        Config(),
        ["data.res=16", "model.latent=4", "model.width=4", "train.epochs=1", "data.n_val=0",
         "train.progress=false", *overrides],
    )  # fmt: skip
    objs = make_objects(6)
    fit(cfg, objs, objs.subset([0, 1, 2]), tmp_path / "run")
    return str(tmp_path / "run")


def test_the_cli_names_the_run_without_a_head(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run = _run(tmp_path)
    err = _error(capsys, ["recover", run, "--proposals", "2"])
    assert run in err and "--model.pose_head=true" in err
    assert "0..24" in _error(capsys, ["recover", run, "--proposals", "30"])
    assert "--head-views needs --proposals" in _error(capsys, ["recover", run, "--head-views", "4"])


def test_the_cli_recovers_with_proposals(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orient3d.cli import main

    run = _run(tmp_path, "model.pose_head=true")
    assert json.loads((Path(run) / "pose_head.json").read_text())["objects"] == 6
    assert main(["recover", run, "--n", "6", "--proposals", "2", "--head-views", "4"]) == 0
    out = json.loads((Path(run) / "recover.json").read_text())
    assert out["n"] == 6 and out["proposals"] == 2 and out["head_views"] == 4
    assert "top 2" in out["protocol"]["score"] and "4 views" in out["protocol"]["score"]
    assert main(["recover", run, "--n", "6"]) == 0
    assert json.loads((Path(run) / "recover.json").read_text())["proposals"] == 24
    (Path(run) / "pose_head.json").unlink()  # as if it stopped before the head's fit
    assert "never fitted" in _error(capsys, ["recover", run, "--proposals", "2"])


def test_mass_sizes_keep_the_fewest_best_elements_that_reach_the_mass() -> None:
    probs = torch.tensor(
        [
            [0.70, 0.20, 0.06] + [0.04 / 21] * 21,  # confident
            [0.30, 0.25, 0.20, 0.15] + [0.10 / 20] * 20,  # spread
        ]
    )
    logp = probs.log()
    assert recovery.mass_sizes(logp, 4, 0.6).tolist() == [1, 3]  # 0.70; 0.30 + 0.25 + 0.20
    assert recovery.mass_sizes(logp, 4, 0.85).tolist() == [2, 4]  # 0.90; 0.90 at the 4th
    assert recovery.mass_sizes(logp, 3, 0.95).tolist() == [3, 3]  # capped at k
    assert recovery.mass_sizes(logp, 4, 1.0).tolist() == [4, 4]


def test_head_mass_scores_each_object_on_its_own_set(setup: tuple[VAE, VoxelSet]) -> None:
    model, objs = setup
    sharp = VAE(model.cfg, 16).eval()
    sharp.load_state_dict(model.state_dict())
    assert sharp.pose_head is not None
    with torch.no_grad():  # a confident head for some objects, a hesitant one for others
        sharp.pose_head[3].weight.mul_(40.0)
    k, mass = 4, 0.9
    rows = _count_rows(sharp)
    res, seen = _recover(sharp, objs, proposals=k, head_mass=mass)
    logp = _slow_log_probs(sharp, seen["x"], 1)
    order = logp.argsort(dim=1, descending=True)
    sizes = []
    for i in range(N):  # the slow version: add the next best until the mass is reached
        total, size = 0.0, 0
        while size < k and total < mass:
            total += float(logp[i, order[i, size]].exp())
            size += 1
        sizes.append(size)
    assert 1 in sizes and any(s > 1 for s in sizes), sizes  # both paths are exercised
    full = score_orientations(model, seen["x"], O)  # (N, 24), scored apart
    for i, size in enumerate(sizes):
        cand = order[i, :size]
        want = cand[0] if size == 1 else cand[full[i, cand].argmin()]
        assert int(seen["pred"][i]) == int(want), i
    scored = sum(s for s in sizes if s > 1)
    assert sum(rows) == scored and res["vae_rows_per_object"] == pytest.approx(scored / N)
    assert res["head_mass"] == mass and "sums to 0.9" in res["protocol"]["score"]
    plain, _ = _recover(sharp, objs, proposals=k)  # mass 1: every object scores K
    assert plain["vae_rows_per_object"] == k and plain["head_mass"] == 1.0


def test_head_mass_is_checked(setup: tuple[VAE, VoxelSet]) -> None:
    model, objs = setup
    for mass in (0.0, 1.5):
        with pytest.raises(ConfigError, match="head_mass"):
            recovery.recover(
                model, objs, 2, generator=torch.Generator(), proposals=4, head_mass=mass
            )
    for k in (0, 1, 24):  # all 24, or the argmax alone: nothing to cut
        with pytest.raises(ConfigError, match="needs proposals K in 2..23"):
            recovery.recover(
                model, objs, 2, generator=torch.Generator(), proposals=k, head_mass=0.9
            )


def test_the_cli_cuts_proposals_by_the_heads_mass(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from orient3d.cli import main

    run = _run(tmp_path, "model.pose_head=true")
    assert "--head-mass needs --proposals" in _error(capsys, ["recover", run, "--head-mass", "0.9"])
    assert "(0, 1]" in _error(capsys, ["recover", run, "--proposals", "3", "--head-mass", "2"])
    assert main(["recover", run, "--n", "6", "--proposals", "3", "--head-mass", "0.5"]) == 0
    out = json.loads((Path(run) / "recover.json").read_text())
    assert out["head_mass"] == 0.5 and 0 <= out["vae_rows_per_object"] <= 3
    assert "elements scored" in capsys.readouterr().out
