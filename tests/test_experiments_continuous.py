"""The continuous experiment kind: summary from fake runs, and a tiny run end to end."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from orient3d.errors import ConfigError
from orient3d.experiments import continuous as EC
from orient3d.experiments import expand_runs, run_experiment, spec_from_dict
from test_experiments import BASE, fake_run

VARIANTS = {"single": ["train.mode=single"], "continuous": ["train.mode=continuous"]}
SUCCESS = {"gradient": [0.05, 0.1, 0.08], "grid-refine": [0.6, 0.7, 0.65]}


def _so3(seed: int) -> dict[str, dict[str, float]]:  # as pose.recover_continuous
    return {
        m: {
            "success_rate": v[seed],
            "median_error_deg": 100 * (1 - v[seed]),
            "scored_at_most_truth": min(1.0, v[seed] + 0.25),
            "forward_passes": p,
            "n": 20,
        }
        for (m, v), p in zip(SUCCESS.items(), (61, 1021))
    }


def _fake_runs(
    spec: Any, out: Path, so3: Callable[[str, int], dict[str, dict[str, float]]]
) -> None:
    """Finished runs of ``spec`` under ``out``: every variant but ``continuous`` is a
    single-orientation run measured as ``so3(variant, seed)``; continuous runs put
    0.5 + 0.1·seed of the objects in one pose."""
    for run in expand_runs(spec):
        v, s = run.params["variant"], run.params["seed"]
        extra = (
            {"mode": "single", "so3": so3(v, s)}
            if v != "continuous"
            else {"mode": "continuous", "consistency": {"consistency": 0.5 + 0.1 * s}}
        )
        fake_run(
            out / "runs" / run.name,
            run.config,
            {"test_mse": 0.03, "test_iou": 0.7, "protocol": "so3+search"},
            metrics=[{"epoch": 1, "test_mse": 0.1, "pose_change_median_deg": 3.0}],
            extra={"continuous.json": extra},
        )


def test_summary_from_fake_runs(tmp_path: Path) -> None:
    spec = spec_from_dict(
        {"name": "c", "kind": "continuous", "seeds": [0, 1, 2], "base": BASE, "variants": VARIANTS}
    )
    _fake_runs(spec, tmp_path, lambda variant, seed: _so3(seed))
    summary = run_experiment(spec, tmp_path)
    sentence = summary["answers"][0]["answer"]
    assert sentence.startswith("grid-refine recovered 65% (95% CI"), sentence
    assert (
        "at 1.02e+03 forward passes per object (a rotation scoring at least as well as the "
        "truth for 90%), against gradient 7.67%"
    ) in sentence
    assert "continuous search training put 60% (95% CI" in sentence
    secs = {s["title"]: s for s in summary["sections"]}
    rows = secs["Pose error against method"]["table"]["rows"]
    cols = secs["Pose error against method"]["table"]["columns"]
    assert [r[0] for r in rows] == ["gradient", "grid-refine"]
    assert [r[1] for r in rows] == ["single", "single"]  # the variant column
    success = rows[1][cols.index("success rate")]
    assert success["mean"] == pytest.approx(0.65) and success["interval"] == "wilson"
    found = rows[1][cols.index("found ≤ truth")]  # 0.85, 0.95, 0.9 of 20 objects each
    assert found["mean"] == pytest.approx(0.9) and found["interval"] == "wilson"
    table = secs["Continuous search training"]["table"]
    (row,) = table["rows"]
    cont = dict(zip(table["columns"], row))
    assert cont["consistency"]["mean"] == pytest.approx(0.6)  # 0.5, 0.6, 0.7 of 4 objects
    assert cont["pose change (°)"]["n"] == 3 and cont["test IoU"]["mean"] == pytest.approx(0.7)
    json.dumps(summary)


def test_two_single_variants_get_one_sentence_each_never_pooled(tmp_path: Path) -> None:
    variants = {**VARIANTS, "turned": ["train.mode=single", "train.resample_frac=0.5"]}
    spec = spec_from_dict(
        {"name": "c", "kind": "continuous", "seeds": [0, 1, 2], "base": BASE, "variants": variants}
    )

    def so3(variant: str, seed: int) -> dict[str, dict[str, float]]:
        out = _so3(seed)
        if variant == "turned":  # grid-refine succeeds 20 points more often with these models
            out["grid-refine"]["success_rate"] += 0.2
        return out

    _fake_runs(spec, tmp_path, so3)
    sentence = run_experiment(spec, tmp_path)["answers"][0]["answer"]
    assert "single: grid-refine recovered 65% (95% CI" in sentence, sentence
    assert "turned: grid-refine recovered 85% (95% CI" in sentence, sentence
    assert "75%" not in sentence  # the two variants' pool
    assert "continuous: continuous search training put 60% (95% CI" in sentence


def test_success_per_class_and_raw_lists_are_per_variant(tmp_path: Path) -> None:
    variants = {**VARIANTS, "turned": ["train.mode=single", "train.resample_frac=0.5"]}
    spec = spec_from_dict(
        {"name": "c", "kind": "continuous", "seeds": [0, 1], "base": BASE, "variants": variants}
    )

    def so3(variant: str, seed: int) -> dict[str, Any]:
        out: dict[str, Any] = _so3(seed)
        # chairs: 9 of 10 right for single, 4 of 10 for turned; cubes 1 of 10 with either
        chair = 0.9 if variant == "single" else 0.4
        for v in out.values():
            v["by_class"] = {
                "chair": {"n": 10, "success_rate": chair, "scored_at_most_truth": 1.0},
                "cube": {"n": 10, "success_rate": 0.1, "scored_at_most_truth": 1.0},
            }
        return out

    _fake_runs(spec, tmp_path, so3)
    summary = run_experiment(spec, tmp_path)
    table = {s["title"]: s for s in summary["sections"]}["Pose success per class"]["table"]
    assert table["columns"] == ["method", "variant", "chair", "cube"]
    rows = {(r[0], r[1]): dict(zip(table["columns"], r)) for r in table["rows"]}
    assert set(rows) == {(m, v) for m in SUCCESS for v in ("single", "turned")}
    single, turned = rows["grid-refine", "single"], rows["grid-refine", "turned"]
    assert single["chair"]["mean"] == pytest.approx(0.9) and single["chair"]["objects"] == 20
    assert turned["chair"]["mean"] == pytest.approx(0.4)  # never the pool's 0.65
    assert turned["cube"]["lo"] < 0.1 < turned["cube"]["hi"]
    raw = {c["cell"].get("variant"): c for c in summary["methods"]}
    assert set(raw) == {"single", "turned", "continuous"}
    grid_refine = {v: next(r for r in c["rows"] if r["method"] == "grid-refine")
                   for v, c in raw.items() if c["rows"]}  # fmt: skip
    assert grid_refine["single"]["success"] == grid_refine["turned"]["success"] == [0.6, 0.7]
    assert len(grid_refine["single"]["n"]) == 2  # its two seeds, not four runs


def test_answer_without_runs() -> None:
    assert "No run" in EC.answer([], {"consistency": []})
    assert "No run" in EC.answers([])


@pytest.mark.slow
def test_tiny_experiment_end_to_end(tmp_path: Path) -> None:
    base = {
        "data": {"res": 16, "n_train": 16, "n_test": 4, "cache_dir": str(tmp_path / "cache")},
        "model": {"width": 4, "latent": 4},
        "train": {"epochs": 2, "batch_size": 8, "threads": 1, "progress": False},
        "continuous": {"warmup_epochs": 1, "grid_level": 0, "levels": 0, "precision": "fp32"},
    }
    spec = spec_from_dict(
        {
            "name": "c",
            "kind": "continuous",
            "seeds": [0],
            "base": base,
            "variants": VARIANTS,
            "options": {
                "n": 2, "steps": 1, "top_k": 2, "levels": 1, "head_epochs": 2, "head_views": 2,
                "methods": ["gradient", "cube-start", "grid-refine", "head-refine"],
            },
        }
    )  # fmt: skip
    summary = run_experiment(spec, tmp_path)
    single = json.loads((tmp_path / "runs" / "single_seed-0" / "continuous.json").read_text())
    assert set(single["so3"]) == {"gradient", "cube-start", "grid-refine", "head-refine"}
    assert single["so3_head"]["epochs"] == 2
    # 2 head views, its 2 cells, one round of 2 × 27, 1 step + 1; then 4 cube turns again
    head = single["so3"]["head-refine"]
    assert head["forward_passes"] == (2 + 2 + 2 * 27 + 2) + (24 + 4 * 27 + 2)
    assert sum(c["n"] for c in head["by_class"].values()) == 2
    cont = json.loads((tmp_path / "runs" / "continuous_seed-0" / "continuous.json").read_text())
    assert 0 < cont["consistency"]["consistency"] <= 1
    assert "forward passes per object" in summary["answers"][0]["answer"]


def test_shipped_config_loads() -> None:
    from orient3d.experiments import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "configs" / "continuous.toml")
    runs = {r.name: r.config.train.mode for r in expand_runs(spec)}
    assert spec.kind == "continuous" and set(runs.values()) == {"single", "continuous"}
    frac = {r.params["variant"]: r.config.train.resample_frac for r in expand_runs(spec)}
    assert frac == {"single": 0.0, "single_turned": 0.5, "continuous": 0.0}


@pytest.mark.parametrize(
    ("option", "message"),
    [
        ({"cosets": 25}, "options.cosets: 25 is invalid, must be in 0..24"),
        ({"top_k": 0}, "options.top_k: 0 is invalid, must be >= 1"),
        ({"methods": ["grid"]}, "options.methods: 'grid' is not one of gradient, cube-start"),
        ({"head_views": 0}, "options.head_views: 0 is invalid, must be in 1..24"),
    ],
)
def test_pose_search_options_are_refused_before_training(
    tmp_path: Path, option: dict[str, Any], message: str
) -> None:
    base = {"data": {"res": 16, "n_train": 16, "n_test": 4}, "model": {"width": 4, "latent": 4}}
    spec = spec_from_dict(
        {"name": "c", "kind": "continuous", "seeds": [0], "base": base, "variants": VARIANTS,
         "options": option}
    )  # fmt: skip
    with pytest.raises(ConfigError, match=message):
        run_experiment(spec, tmp_path)
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written
