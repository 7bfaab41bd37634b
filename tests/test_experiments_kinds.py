"""The recover and search_modes kinds, figures and workers, on fake run folders."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from orient3d.experiments import expand_runs, run_experiment, spec_from_dict
from orient3d.experiments import search_modes as SM
from orient3d.experiments.runner import parallel_map
from orient3d.figures import Curve, plot_curves, plot_pose_histograms
from test_experiments import BASE, fake_run

VARIANTS = {
    "oracle": ["train.mode=single"],
    "augmented": ["train.mode=augmented"],
    "search-hard": ["train.mode=search", "search.choice=hard"],
}


def canonical_json(n_used: float, glob: float) -> dict[str, Any]:
    hist = np.zeros(24)
    hist[: int(n_used)] = 1
    return {
        "n_objects": 4,
        "n_views": 24,
        "instance_consistency": 1.0,
        "mean_distinct": 1.0,
        "global_consistency": glob,
        "global_chance": 1 / 24,
        "pose_counts": hist.tolist(),
        "class_consistency": glob + 0.05,
        "class_chance": 1 / 24,
        "n_used": n_used,
        "entropy_normalized": math.log(n_used) / math.log(24),
        "usage_hist": hist.tolist(),
        "common_test_mse": 0.03,
    }


def test_search_modes_summary(tmp_path: Path) -> None:
    spec = spec_from_dict(
        {
            "name": "sm",
            "kind": "search_modes",
            "seeds": [0, 1, 2],
            "base": BASE,
            "variants": VARIANTS,
        }
    )
    shapes = {"oracle": (1, 0.05), "augmented": (24, 0.05), "search-hard": (3, 0.6)}
    for run in expand_runs(spec):
        v, s = run.params["variant"], run.params["seed"]
        used, glob = shapes[v]
        proto = {"oracle": "as_stored", "augmented": "rotated"}.get(v, "rotated+search")
        metrics = [{"epoch": e, "test_mse": 0.1 / e + 0.001 * s, "val_iou": 0.7} for e in (1, 2, 3)]
        fake_run(
            tmp_path / "runs" / run.name,
            run.config,
            {"test_mse": 0.03 + 0.001 * s, "test_iou": 0.7, "protocol": proto},
            metrics=metrics,
            extra={"canonical.json": canonical_json(used, glob + 0.01 * s)},
        )
        if s == 0:
            figs = tmp_path / "runs" / run.name / "figures"
            plot_curves(figs / "poses.png", [], xlabel="x", ylabel="y")
    summary = run_experiment(spec, tmp_path)
    sentence = summary["answers"][0]["answer"]
    assert sentence.startswith("Yes: the search-hard VAE used 3 of 24 canonical poses"), sentence
    assert "augmented VAE used 24 of 24" in sentence
    secs = {s["title"]: s for s in summary["sections"]}
    mse = secs["Test MSE per mode"]["table"]["rows"]
    assert [r[0] for r in mse] == ["oracle", "augmented", "search-hard"]
    assert mse[2][1] == "rotated+search"
    poses = secs["Canonical poses: consistency and usage"]["table"]["rows"]
    assert poses[2][5]["mean"] == 3 and poses[2][2]["lo"] > 1 / 24
    for fig in ("search_modes_mse.png", "pose_usage.png", "poses_search-hard.png"):
        assert (tmp_path / "figures" / fig).stat().st_size > 1000
    curves = SM.curves([])
    assert curves == []


def test_search_modes_not_shown_when_at_chance(tmp_path: Path) -> None:
    spec = spec_from_dict(
        {"name": "sm", "kind": "search_modes", "seeds": [0, 1], "base": BASE, "variants": VARIANTS}
    )
    for run in expand_runs(spec):
        fake_run(
            tmp_path / "runs" / run.name,
            run.config,
            {"test_mse": 0.03, "test_iou": 0.7, "protocol": "rotated"},
            extra={"canonical.json": canonical_json(24, 1 / 24 + 0.001 * run.config.seed)},
        )
    sentence = run_experiment(spec, tmp_path)["answers"][0]["answer"]
    assert sentence.startswith("Not shown:"), sentence


def test_recover_summary_reuses_runs(tmp_path: Path) -> None:
    grid = {"model.latent": [2, 8], "train.mode": ["single"]}
    spec = spec_from_dict(
        {
            "name": "rec",
            "kind": "recover",
            "seeds": [0, 1, 2],
            "base": BASE,
            "grid": grid,
            "reuse": ["../first"],
        }
    )
    acc = {2: [0.3, 0.35, 0.32], 8: [0.8, 0.85, 0.9]}
    for run in expand_runs(spec):
        lat, s = run.params["model.latent"], run.params["seed"]
        rec = {"accuracy": acc[lat][s], "chance": 1 / 24, "n": 10}
        fake_run(
            tmp_path / "first" / "runs" / run.name,
            run.config,
            {"test_mse": 0.02, "test_iou": 0.8, "protocol": "as_stored"},
            extra={"recover.json": rec},
        )
    summary = run_experiment(spec, tmp_path / "second")
    assert not (tmp_path / "second" / "runs").exists()  # every run was reused
    exp = json.loads((tmp_path / "second" / "experiment.json").read_text())
    assert exp["runs"][0]["run"].startswith("../first/runs/")
    sentence = summary["answers"][0]["answer"]
    # Wilson on 25.5 of 30 pooled objects (3 seeds × n = 10)
    assert "85% [68.4, 93.7] of rotated test objects at latent size 8 (the best)" in sentence
    assert "above chance in 2 of 2 cells" in sentence and "test IoU of the models 0.8" in sentence
    assert (tmp_path / "second" / "figures" / "recover.png").stat().st_size > 1000


def test_figures_write_pngs(tmp_path: Path) -> None:
    c = Curve("a", [2, 4, 8], [1.0, 0.5, 0.2], [0.9, float("nan"), 0.1], [1.1, float("nan"), 0.3])
    p = plot_curves(tmp_path / "c.png", [c], xlabel="Z", ylabel="mse", logx=True, hline=(0.3, "x"))
    h = plot_pose_histograms(tmp_path / "h.png", [("a", [1] * 24), ("b", range(24))])
    for f in (p, h):
        assert f.read_bytes()[:4] == b"\x89PNG" and f.stat().st_size > 1000


@pytest.mark.slow  # spawns two processes that import torch
def test_parallel_map_keeps_order_in_workers() -> None:
    seen: list[tuple[str, int, int]] = []
    out = parallel_map(
        math.sqrt, [4.0, 9.0, 16.0], workers=2, progress=lambda m, d, t: seen.append((m, d, t))
    )
    assert out == [2.0, 3.0, 4.0]
    assert sorted(d for _, d, _ in seen) == [1, 2, 3]


@pytest.mark.slow  # trains four tiny runs, two of them in spawned workers
def test_workers_give_the_numbers_of_a_run_alone(tmp_path: Path) -> None:
    import torch

    from orient3d.experiments import spec_from_dict as make

    spec = make(
        {
            "name": "w",
            "kind": "single_vs_all",
            "seeds": [0],
            "base": {
                "data": {"n_train": 16, "n_test": 4},
                "model": {"width": 4},
                "train": {"epochs": 1, "batch_size": 8, "progress": False},
            },
            "grid": {"model.latent": [4], "train.mode": ["single", "augmented"]},
        }
    )
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # what each worker uses
    try:
        run_experiment(spec, tmp_path / "alone", workers=1)
    finally:
        torch.set_num_threads(before)
    run_experiment(spec, tmp_path / "pool", workers=2)
    for run in expand_runs(spec):
        a, b = (
            json.loads((tmp_path / d / "runs" / run.name / "results.json").read_text())
            for d in ("alone", "pool")
        )
        assert a["per_object"] == b["per_object"]


@pytest.mark.slow  # spawns two processes that import torch
def test_shared_pool_is_reused_and_raises_failures() -> None:
    from orient3d.experiments.runner import _SHARED, shared_pool

    with shared_pool(2):
        pool = _SHARED[2]
        assert parallel_map(math.sqrt, [1.0, 4.0], workers=2) == [1.0, 2.0]
        with pytest.raises(ValueError):
            parallel_map(math.sqrt, [1.0, -1.0], workers=2)
        assert _SHARED[2] is pool
        assert parallel_map(abs, [-3, 2], workers=2) == [3, 2]
    assert 2 not in _SHARED
