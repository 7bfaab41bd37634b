"""The canonical experiment kind: per-run measurements and the summary, on fake runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from orient3d import groups
from orient3d.errors import ConfigError
from orient3d.experiments import canonical as K
from orient3d.experiments import canonical_verdict, expand_runs, spec_from_dict
from orient3d.experiments.canonical_pose import picture
from orient3d.experiments.common import load_record
from orient3d.experiments.spec import ExperimentSpec
from test_experiments import BASE, fake_run

O = groups.cube_group()
VARIANTS = {
    "uniform-hard": ["train.mode=search", "search.prior=uniform"],
    "learned-anneal": ["train.mode=search", "search.prior=learned", "search.choice=soft"],
    "learned-strong": ["train.mode=search", "search.prior=learned", "search.prior_weight=32"],
}


def _asymmetric(n: int) -> np.ndarray:
    stab = np.zeros((n, 24), dtype=bool)
    stab[:, 0] = True
    return stab


def _element(matrix: list[list[int]]) -> int:
    """The index in O of the rotation with this matrix (acting on column vectors)."""
    return O.index_of(np.array(matrix))


# The identity; a quarter turn about x sending up (e_z) to +y; a quarter turn about z
# (keeps up up). Found by their matrices, not by their place in the group's list.
IDENTITY = _element([[1, 0, 0], [0, 1, 0], [0, 0, 1]])
UP_TO_Y = _element([[1, 0, 0], [0, 0, 1], [0, -1, 0]])
ABOUT_Z = _element([[0, -1, 0], [1, 0, 0], [0, 0, 1]])


def test_pose_record_known_answers() -> None:
    assert O.matrices[UP_TO_Y].numpy() @ np.array([0, 0, 1]) == pytest.approx([0, 1, 0])
    # class a: all in the identity; class b: two send up to +y, one turns about z
    h = np.array([IDENTITY, IDENTITY, IDENTITY, UP_TO_Y, UP_TO_Y, ABOUT_Z])
    labels = np.array([0, 0, 0, 1, 1, 1])
    rec = K.pose_record(h, _asymmetric(6), labels, ("a", "b"), min_frac=0.0)
    assert rec["global_consistency"] == pytest.approx(0.5)
    assert rec["class_consistency"] == pytest.approx((1 + 2 / 3) / 2)
    a = dict(rec["per_class"]["a"])
    np.testing.assert_allclose(a.pop("up_counts"), [0, 0, 0, 0, 3, 0])  # all three up at +z
    np.testing.assert_allclose(a.pop("pose_counts"), 3 * np.eye(24)[IDENTITY])
    b_poses = rec["per_class"]["b"]["pose_counts"]
    np.testing.assert_allclose(b_poses, 2 * np.eye(24)[UP_TO_Y] + np.eye(24)[ABOUT_Z])
    assert a == {"consistency": 1.0, "modal_pose": IDENTITY, "n": 3, "upright": 1.0}
    assert rec["per_class"]["b"]["modal_pose"] == UP_TO_Y
    assert rec["per_class"]["b"]["upright"] == pytest.approx(1 / 3)
    np.testing.assert_allclose(rec["per_class"]["b"]["up_counts"], [0, 0, 2, 0, 1, 0])
    assert rec["n_used"] == 3 and rec["upright"] == pytest.approx(4 / 6)
    assert rec["upright_chance"] == pytest.approx(1 / 6)


def _spec() -> ExperimentSpec:
    return spec_from_dict(
        {"name": "c", "kind": "canonical", "seeds": [0, 1, 2], "base": BASE, "variants": VARIANTS}
    )


def _fake(
    tmp_path: Path, glob: dict[str, float], spec: ExperimentSpec | None = None, key: str = "variant"
) -> list[Any]:
    """Fake finished runs of ``spec``: global consistency ``glob[params[key]]`` + 0.01·seed."""
    spec = spec or _spec()
    records = []
    for run in expand_runs(spec):
        v, s = run.params[key], run.params["seed"]
        g = glob[v] + 0.01 * s
        metrics = [
            {
                "epoch": 1,
                "test_mse": 0.05,
                "changed_frac": None,
                "score_gap_median": 5.0,
                "pose_hist": [3, 1],
            },
            {
                "epoch": 2,
                "test_mse": 0.04,
                "changed_frac": 0.1,
                "score_gap_median": 30.0,
                "cache_stale_probe": 0.25 if s == 0 else 0.0,
                "val_iou": 0.5,
            },
            {"epoch": 3, "cache_stale_probe": 0.03},
        ]
        if v not in ("uniform-hard", "oracle") and key == "variant":
            for m in metrics:
                m.update(prior_entropy=2.5, prior_changed_frac=0.02)
        record = {
            "n_objects": 64,
            "global_consistency": g,
            "class_consistency": g + 0.05,
            "n_used": 10,
            "entropy_normalized": 0.7,
            "upright": 0.3,
            "upright_chance": 1 / 6,
            "class_random_max": 0.3,
            "up_consistency": 0.5,
            "pose_counts": [1.0] * 24,
        }
        path = tmp_path / "runs" / run.name
        fake_run(
            path,
            run.config,
            {"test_mse": 0.04, "test_iou": 0.5, "protocol": "rotated+search", "seconds_total": 9},
            metrics=metrics,
            extra={"canonical_pose.json": record},
        )
        records.append(load_record(path, run.params, tmp_path, K.KIND.extra_files))
    return records


def test_summary_says_emerged_only_above_half_and_the_uniform_interval(tmp_path: Path) -> None:
    records = _fake(tmp_path, {"uniform-hard": 0.2, "learned-anneal": 0.25, "learned-strong": 0.9})
    summary = K.summarize(records, _spec(), K.Options(), tmp_path)
    sentence = summary["answers"][0]["answer"]
    # Wilson intervals on the pooled objects: 0.91 of 3 × 64 objects, k = 174.72
    assert sentence.startswith(
        "A single canonical pose emerged under learned-strong: global "
        "consistency 0.91 [0.861, 0.943] over 64 test objects per seed"
    ), sentence
    assert "against 0.21 [0.158, 0.273] with the uniform prior (uniform-hard)" in sentence
    assert sentence.endswith(
        "per class, consistency 0.96 [0.922, 0.98] (random: 0.3); upright agreement 0.3 "
        "[0.24, 0.368] (chance 0.17; 0.3 [0.24, 0.368] with uniform-hard); test IoU 0.5 "
        "[0.5, 0.5] under learned-strong."
    )
    rows = summary["sections"][0]["table"]["rows"]
    assert [r[:3] for r in rows] == [
        ["uniform-hard", "uniform", "off (hard)"],
        # the former name shows as the new one; soft at T 1 throughout: not annealed
        ["learned-anneal", "stored_frame", "off (soft, T 1)"],
        ["learned-strong", "stored_frame ×32", "off (hard)"],
    ]
    cols = summary["sections"][0]["table"]["columns"]
    assert rows[0][cols.index("changed (last epoch)")]["mean"] == pytest.approx(0.1)
    assert rows[0][cols.index("prior overruled")]["n"] == 0
    assert rows[0][cols.index("train modal share")]["mean"] == pytest.approx(0.75)
    assert rows[1][cols.index("prior overruled")]["mean"] == pytest.approx(0.02)
    # per seed: median of the probes (0.25, 0.03) or (0, 0.03); above max_stale 0.05: 1, 0, 0
    probe = rows[0][cols.index("stale cache (probe, median)")]
    assert probe["mean"] == pytest.approx((0.14 + 0.015 + 0.015) / 3)
    assert rows[0][cols.index("epochs re-searched (probe)")]["mean"] == pytest.approx(1 / 3)


def test_summary_says_not_emerged_below_half(tmp_path: Path) -> None:
    records = _fake(tmp_path, {"uniform-hard": 0.2, "learned-anneal": 0.45, "learned-strong": 0.3})
    sentence = K.answer(records)
    assert sentence.startswith(
        "No single canonical pose emerged; the most consistent setting "
        "was learned-anneal: global consistency 0.46"
    ), sentence


def test_oracle_and_augmented_rows_are_shown_but_not_judged(tmp_path: Path) -> None:
    variants = {**VARIANTS, "oracle": ["train.mode=single"]}
    spec = spec_from_dict(
        {"name": "c", "kind": "canonical", "seeds": [0, 1, 2], "base": BASE, "variants": variants}
    )
    glob = {"uniform-hard": 0.2, "learned-anneal": 0.25, "learned-strong": 0.3, "oracle": 0.95}
    records = _fake(tmp_path, glob, spec)
    summary = K.summarize(records, spec, K.Options(), tmp_path)
    sentence = summary["answers"][0]["answer"]
    # the oracle is far more consistent, but the verdict compares search settings only
    assert sentence.startswith(
        "No single canonical pose emerged; the most consistent setting was learned-strong"
    ), sentence
    rows = summary["sections"][0]["table"]["rows"]
    assert rows[-1][:3] == ["oracle", "— (single)", "—"]
    assert K.KIND.wants_analysis(expand_runs(spec)[-1], K.Options())


def _lever_spec() -> ExperimentSpec:
    base = {**BASE, "train": {**BASE["train"], "mode": "search"}}
    base["search"] = {**base.get("search", {}), "template": "voxels"}
    return spec_from_dict(
        {
            "name": "lever",
            "kind": "canonical",
            "seeds": [0, 1, 2],
            "base": base,
            "grid": {"search.template_weight": [0.0, 0.5, 1.0]},
        }
    )


def test_a_baseline_cell_judges_every_other_cell(tmp_path: Path) -> None:
    spec = _lever_spec()
    records = _fake(tmp_path, {0.0: 0.2, 0.5: 0.3, 1.0: 0.9}, spec, key="search.template_weight")
    opts = K.Options(baseline=("search.template_weight=0",))
    summary = K.summarize(records, spec, opts, tmp_path)
    assert summary["verdicts"] == {
        "template_weight=0.5": "not emerged",
        "template_weight=1.0": "emerged",
    }
    sentence = summary["answers"][0]["answer"]
    assert "At template_weight=1.0: A single canonical pose emerged" in sentence
    # a cell over other keys names its setting by the mode and the choice
    assert (
        "At template_weight=0.5: No single canonical pose emerged; the most consistent "
        "setting was search-hard:" in sentence
    )
    # 0.21 pooled over the seeds of the baseline cell
    assert "against 0.21 [0.158, 0.273] with the baseline (template_weight=0.0)" in sentence
    rows = summary["sections"][0]["table"]["rows"]
    assert {r[2] for r in rows} == {
        "uniform",  # a zero-weight template changes nothing
        "uniform, template ×0.5",
        "uniform, template ×1",
    }
    assert (tmp_path / "figures" / "canonical_lever.png").is_file()
    assert (tmp_path / "figures" / "canonical_lever_upright.png").is_file()
    with pytest.raises(ConfigError, match="matches 0 grid cells"):
        K.answer(records, baseline=("search.template_weight=2",))
    with pytest.raises(ConfigError, match="key=value"):
        K.answer(records, baseline=("search.template_weight",))


def test_picture_has_one_row_per_class(tmp_path: Path) -> None:
    from orient3d.data import VoxelSet

    vox = torch.zeros(5, 8, 8, 8, dtype=torch.uint8)
    vox[:, 2:6, 2:6, 0:3] = 1
    test = VoxelSet(
        voxels=vox,
        labels=torch.tensor([0, 0, 1, 1, 1]),
        class_names=("a", "b"),
        ids=tuple(str(i) for i in range(5)),
        stabilizers=groups.stabilizer_mask(vox, O),
    )
    picture(test, torch.zeros(5, dtype=torch.long), 3, tmp_path / "p.png")
    from PIL import Image

    w, h = Image.open(tmp_path / "p.png").size
    assert (w, h) == (3 * 98, 2 * 98)  # 2 classes by 3 columns of 96-pixel tiles, 2 apart


def test_kind_is_registered() -> None:
    from orient3d.experiments import get_kind

    assert get_kind("canonical") is K.KIND


@pytest.mark.slow
def test_kind_runs_on_finished_runs(tmp_path: Path) -> None:
    from orient3d.experiments import run_experiment

    _fake(tmp_path, {"uniform-hard": 0.2, "learned-anneal": 0.25, "learned-strong": 0.3})
    summary = run_experiment(_spec(), tmp_path)
    assert summary["answers"][0]["answer"].startswith("No single canonical pose emerged")
    assert [s["title"] for s in summary["sections"]] == [
        "Canonical pose per setting",
        "One canonical pose per class?",
    ]


def test_canonical_toml_expands_to_the_grid() -> None:
    from orient3d.experiments import load_spec

    spec = load_spec(Path(__file__).resolve().parents[1] / "configs" / "canonical.toml")
    runs = expand_runs(spec)
    assert spec.kind == "canonical" and len(runs) == 9 * 3
    plain = [r for r in runs if not r.config.data.random_frames]
    priors = {(r.config.search.prior, r.config.search.choice) for r in plain}
    want = {(p, c) for p in ("uniform", "stored_frame", "class") for c in ("hard", "soft")}
    assert priors == want
    control = {r.config.search.prior for r in runs if r.config.data.random_frames}
    assert control == {"uniform", "stored_frame"}  # the stored-frame prior and its baseline


@pytest.mark.parametrize("name", ["template", "anneal", "capacity"])
def test_lever_configs_name_one_baseline_cell(name: str) -> None:
    from orient3d.config_schema import from_dict
    from orient3d.experiments import load_spec
    from orient3d.experiments.cells import Cell

    path = Path(__file__).resolve().parents[1] / "configs" / "reference" / "levers"
    spec = load_spec(path / f"{name}.toml")
    runs = expand_runs(spec)
    assert len(spec.seeds) >= 3 and all(r.config.train.mode == "search" for r in runs)
    opts = from_dict(K.Options, spec.options, "options.")
    values = {tuple(sorted((k, repr(v)) for k, v in r.params.items() if k != "seed")) for r in runs}
    grid = [Cell({k: r.params[k] for k in r.params if k != "seed"}, ()) for r in runs]
    grid = list(
        {tuple(sorted((k, repr(v)) for k, v in c.values.items())): c for c in grid}.values()
    )
    assert len(grid) == len(values) > 1
    base = canonical_verdict.baseline_cell(grid, opts.baseline)
    assert base is not None and opts.iou_floor >= 0.7
    # no ground truth in training: a uniform prior, the stored frames as they are
    assert {r.config.search.prior for r in runs} == {"uniform"}


def test_template_on_modelnet_reuses_the_canonical_references_search_runs() -> None:
    from orient3d.config import config_differences
    from orient3d.experiments import load_spec

    root = Path(__file__).resolve().parents[1] / "configs" / "reference"
    lever = {r.name: r for r in expand_runs(load_spec(root / "levers" / "template_modelnet.toml"))}
    ref = {r.name: r for r in expand_runs(load_spec(root / "canonical_modelnet.toml"))}
    plain = [n for n in lever if n.startswith("search-hard_seed-")]
    assert len(plain) >= 3 and len(lever) == 2 * len(plain)
    for name in plain:  # same name, same config: the finished runs are taken over
        assert config_differences(ref[name].config, lever[name].config) == []
    with_template = [r.config for n, r in lever.items() if n not in plain]
    assert {(c.search.template, c.search.template_weight) for c in with_template} == {
        ("voxels", 4.0)
    }
    assert {c.search.prior for c in with_template} == {"uniform"}  # no ground truth


def test_latent_template_lever_can_take_over_the_template_levers_plain_runs() -> None:
    from orient3d.config import config_differences
    from orient3d.experiments import load_spec

    levers = Path(__file__).resolve().parents[1] / "configs" / "reference" / "levers"
    latent = {r.name: r for r in expand_runs(load_spec(levers / "template_latent.toml"))}
    plain = {r.name: r for r in expand_runs(load_spec(levers / "template.toml"))}
    seeds = [n.rsplit("-", 1)[1] for n in latent if n.startswith("search-hard_seed-")]
    assert len(seeds) >= 3 and len(latent) == 3 * len(seeds)
    for s in seeds:  # the documented copy keeps the config: a resume accepts it
        ours, theirs = latent[f"search-hard_seed-{s}"], plain[f"template_weight-0.0_seed-{s}"]
        assert config_differences(theirs.config, ours.config) == []
    other = [r.config.search for n, r in latent.items() if not n.startswith("search-hard_")]
    assert {(c.template, c.template_weight, c.prior) for c in other} == {
        ("latent", 4.0, "uniform"),
        ("latent", 32.0, "uniform"),
    }


def test_beta_and_width_lever_reuses_the_latent_levers_plain_runs() -> None:
    from orient3d.config import config_differences
    from orient3d.experiments import load_spec

    levers = Path(__file__).resolve().parents[1] / "configs" / "reference" / "levers"
    spec = load_spec(levers / "capacity_beta_width.toml")
    assert spec.reuse == ("../lever_latent",)
    ours = {r.name: r for r in expand_runs(spec)}
    latent = {r.name: r for r in expand_runs(load_spec(levers / "template_latent.toml"))}
    plain = [n for n in ours if n.startswith("search-hard_seed-")]
    assert len(plain) >= 3 and len(ours) == 5 * len(plain)
    for name in plain:  # same name, same config: the finished runs are taken over
        assert config_differences(latent[name].config, ours[name].config) == []
    changed = {  # each other variant differs from plain search-hard in its lever alone
        n.rsplit("_seed-", 1)[0]: config_differences(ours[n].config, ours[plain[0]].config)
        for n in ours
        if n not in plain and n.endswith("_seed-0")
    }
    assert changed == {
        "beta-0.25": ["model.beta"],
        "beta-4": ["model.beta"],
        "width-8": ["model.width"],
        "width-16": ["model.width"],
    }, changed
    assert {r.config.search.prior for r in ours.values()} == {"uniform"}  # no ground truth


def test_canonical_modelnet32_compares_search_with_oracle_and_augmented_at_32() -> None:
    from orient3d.config import config_differences
    from orient3d.experiments import load_spec

    root = Path(__file__).resolve().parents[1] / "configs" / "reference"
    spec = load_spec(root / "canonical_modelnet32.toml")
    assert len(spec.seeds) >= 3
    ours = {r.name: r for r in expand_runs(spec)}
    by_variant = {n.rsplit("_seed-", 1)[0] for n in ours}
    assert by_variant == {"oracle", "augmented", "search-hard"}
    assert {r.config.data.res for r in ours.values()} == {32}
    assert {r.config.train.mode for n, r in ours.items() if n.startswith("oracle")} == {"single"}
    search = [r.config for n, r in ours.items() if n.startswith("search-hard")]
    assert len(search) == len(spec.seeds)
    assert {(c.train.mode, c.search.prior, c.search.template) for c in search} == {
        ("search", "uniform", "none")
    }  # no ground truth in training
    # fresh poses: the cache is probed each epoch and re-searched above 5% stale
    assert {(c.search.stale_probe > 0, c.search.max_stale) for c in search} == {(True, 0.05)}
    for seed in spec.seeds:  # the variants differ in the mode alone
        seeded = {n: r for n, r in ours.items() if n.endswith(f"_seed-{seed}")}
        base = seeded[f"oracle_seed-{seed}"].config
        assert {tuple(config_differences(r.config, base)) for r in seeded.values()} <= {
            (),
            ("train.mode",),
        }
    assert spec.options["iou_floor"] >= 0.5


def test_unseen_classes_are_reported_apart_from_the_trained_ones(tmp_path: Path) -> None:
    base = {**BASE, "data": {**BASE["data"], "unseen_classes": ["lamp"]}}
    spec = spec_from_dict(
        {
            "name": "u",
            "kind": "canonical",
            "seeds": [0, 1],
            "base": base,
            "variants": {"search-hard": ["train.mode=search"]},
        }
    )
    records = []
    for run in expand_runs(spec):
        seed = run.params["seed"]
        up = np.eye(6)  # up counts over ±x, ±y, ±z; the trained classes' modal up: +y
        pose = np.eye(24)  # pose counts; the trained classes' modal pose: 3 (25 against 15)
        per_class = {  # lamp: unseen; chair and bed: trained
            "lamp": {"consistency": 0.5, "modal_pose": 0, "n": 10, "upright": 0.2 + 0.2 * seed,
                     "up_counts": ((7 - seed) * up[2] + (3 + seed) * up[4]).tolist(),
                     "pose_counts": ((4 - seed) * pose[0] + (5 + seed) * pose[3]
                                     + pose[7]).tolist()},
            "chair": {"consistency": 1.0, "modal_pose": 0, "n": 10, "upright": 1.0,
                      "up_counts": (10 * up[4]).tolist(), "pose_counts": (10 * pose[0]).tolist()},
            "bed": {"consistency": 0.8, "modal_pose": 0, "n": 30, "upright": 0.6,
                    "up_counts": (30 * up[2]).tolist(),
                    "pose_counts": (25 * pose[3] + 5 * pose[0]).tolist()},
        }  # fmt: skip
        record = {
            "n_objects": 50,
            "global_consistency": 0.3,
            "per_class": per_class,
            "pose_counts": [1.0] * 24,
        }
        path = tmp_path / "runs" / run.name
        fake_run(
            path,
            run.config,
            {"test_mse": 0.04, "test_iou": 0.8},
            metrics=[],
            extra={"canonical_pose.json": record},
        )
        records.append(load_record(path, run.params, tmp_path, K.KIND.extra_files))
    summary = K.summarize(records, spec, K.Options(), tmp_path)
    sec = next(s for s in summary["sections"] if s["title"] == "Classes the model never saw")
    cols, (row,) = sec["table"]["columns"], sec["table"]["rows"]
    get = dict(zip(cols, row, strict=True))
    assert get["unseen classes"] == "lamp"
    assert get["upright, unseen"]["mean"] == pytest.approx((2 + 4) / 20)  # 0.2·10 + 0.4·10
    assert get["upright, trained"]["mean"] == pytest.approx(2 * (10 + 18) / 80)
    assert get["class consistency, trained"]["mean"] == pytest.approx(2 * (10 + 24) / 80)
    # Lamps whose up is the trained classes' modal up (+y, of 30 beds against 10 chairs):
    # 7 of 10, then 6 of 10; not +z, where the stored frame has it.
    assert get["up shared with trained, unseen"]["mean"] == pytest.approx(13 / 20)
    # In the stored frame (the identity): 4 then 3 of 10 lamps; 10 chairs and 5 beds a seed.
    assert get["recovered, unseen"]["mean"] == pytest.approx(7 / 20)
    assert get["recovered, trained"]["mean"] == pytest.approx(30 / 80)
    # In the trained classes' modal pose (3, not the identity): 5 then 6 of 10 lamps.
    assert get["pose shared with trained, unseen"]["mean"] == pytest.approx(11 / 20)
    lamp = get["upright: lamp"]  # 6 of 20 lamps upright over the 2 seeds
    assert lamp["mean"] == pytest.approx(0.3) and lamp["lo"] < 0.3 < lamp["hi"]


def test_runs_without_unseen_classes_have_no_such_section(tmp_path: Path) -> None:
    records = _fake(tmp_path, {"uniform-hard": 0.2, "learned-anneal": 0.25, "learned-strong": 0.3})
    titles = [s["title"] for s in K.summarize(records, _spec(), K.Options(), tmp_path)["sections"]]
    assert "Classes the model never saw" not in titles


def test_canonical_procedural_measures_question_2s_runs_without_training_them() -> None:
    from orient3d.config import config_differences
    from orient3d.experiments import load_spec

    root = Path(__file__).resolve().parents[1] / "configs" / "reference"
    spec = load_spec(root / "canonical_procedural.toml")
    assert spec.reuse == ("../q2",) and spec.kind == "canonical"
    ours = {r.name: r for r in expand_runs(spec)}
    q2 = {r.name: r for r in expand_runs(load_spec(root / "search_modes.toml"))}
    assert set(ours) == set(q2) and len(ours) == 12
    for name, run in ours.items():  # same name, same config: every run is taken over
        assert config_differences(q2[name].config, run.config) == [], name
    assert spec.options["iou_floor"] >= 0.7 and spec.options["n_objects"] == 0
    assert {r.config.search.prior for r in ours.values()} == {"uniform"}  # no ground truth
