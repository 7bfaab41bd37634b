"""Every kind summarizes per cell: runs that differ in seed alone are the only replicates.

Each test fakes a grid of 2 values × 2 seeds (no training) and checks that the
summary has 2 cells of n = 2 (never one of n = 4), and that its tables show the
grid key as a column.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from orient3d.config import Config
from orient3d.errors import ConfigError
from orient3d.experiments import expand_runs, run_experiment, spec_from_dict
from orient3d.experiments.cells import cells, one_key_levers, prop_cell
from orient3d.experiments.common import load_record
from orient3d.report_parts.html import cell as html_cell
from test_experiments import BASE, fake_run
from test_experiments_kinds import canonical_json

LATENTS = [4, 32]
SEEDS = [0, 1]


def _spec(kind: str, grid: dict[str, Any], variants: dict[str, Any] | None = None, **more: Any):
    d: dict[str, Any] = {"name": kind, "kind": kind, "seeds": SEEDS, "base": BASE, "grid": grid}
    if variants:
        d["variants"] = variants
    d.update(more)
    return spec_from_dict(d)


def _table(summary: dict[str, Any], title: str) -> tuple[list[str], list[list[Any]]]:
    sec = next(s for s in summary["sections"] if s["title"] == title)
    return sec["table"]["columns"], sec["table"]["rows"]


def _col(columns: list[str], rows: list[list[Any]], name: str) -> list[Any]:
    return [r[columns.index(name)] for r in rows]


def _results(latent: int, seed: int, **more: Any) -> dict[str, Any]:
    iou = 0.6 if latent == 4 else 0.9
    return {
        "test_mse": 0.01 * latent + 0.001 * seed,
        "test_iou": iou + 0.01 * seed,
        "test_iou_per_class": {"chair": iou, "table": iou - 0.05},
        "n_test": 4,
        **more,
    }


def _two_cells_of_two(summary: dict[str, Any], n_cells: int) -> None:
    assert len(summary["cells"]) == n_cells
    assert all(c["n"] == 2 for c in summary["cells"])
    assert sorted({c["grid"]["model.latent"] for c in summary["cells"]}) == LATENTS


def test_cells_group_by_everything_but_the_seed(tmp_path: Path) -> None:
    spec = _spec("search_modes", {"model.latent": LATENTS}, {"a": ["train.mode=augmented"]})
    records = []
    for run in expand_runs(spec):
        fake_run(tmp_path / run.name, run.config, {"test_iou": 0.7})
        records.append(load_record(tmp_path / run.name, run.params, tmp_path))
    got = cells(records)
    assert [(c.values, c.n) for c in got] == [
        ({"variant": "a", "model.latent": 4}, 2),
        ({"variant": "a", "model.latent": 32}, 2),
    ]
    assert got[0].label(["model.latent"]) == "latent=4"
    assert [c.n for c in cells(records, ignore=("model.latent",))] == [4]


def test_single_vs_all_rows_per_cell(tmp_path: Path) -> None:
    grid = {"model.beta": [1.0, 4.0], "model.latent": [8], "train.mode": ["single", "augmented"]}
    spec = _spec("single_vs_all", grid)
    for run in expand_runs(spec):
        beta, s = run.params["model.beta"], run.params["seed"]
        mse = 0.01 * beta + (0.02 if run.params["train.mode"] == "augmented" else 0) + 0.001 * s
        fake_run(tmp_path / "runs" / run.name, run.config, {"test_mse": mse, "test_iou": 0.8})
    summary = run_experiment(spec, tmp_path)
    columns, rows = _table(summary, "Test error against latent size")
    assert columns[:2] == ["beta", "latent"] and _col(columns, rows, "beta") == [1.0, 4.0]
    singles = _col(columns, rows, "single test MSE")
    assert [c["n"] for c in singles] == [2, 2]
    assert [c["mean"] for c in singles] == pytest.approx([0.0105, 0.0405])  # not pooled
    assert set(summary["verdicts"]) == {"beta=1.0, latent=8", "beta=4.0, latent=8"}
    assert summary["answers"][0]["answer"].startswith("At beta=1.0: ")
    assert len(summary["cells"]) == 4 and all(c["n"] == 2 for c in summary["cells"])


def test_recover_rows_per_cell(tmp_path: Path) -> None:
    spec = _spec("recover", {"model.latent": LATENTS, "train.mode": ["single"]})
    acc = {4: 0.3, 32: 0.9}
    for run in expand_runs(spec):
        lat, s = run.params["model.latent"], run.params["seed"]
        fake_run(
            tmp_path / "runs" / run.name,
            run.config,
            _results(lat, s),
            extra={"recover.json": {"accuracy": acc[lat], "chance": 1 / 24, "n": 10}},
        )
    summary = run_experiment(spec, tmp_path)
    _two_cells_of_two(summary, 2)
    columns, rows = _table(summary, "Recovery accuracy against latent size")
    assert _col(columns, rows, "latent") == LATENTS
    accs = _col(columns, rows, "accuracy")
    assert [a["n"] for a in accs] == [2, 2] and [a["mean"] for a in accs] == pytest.approx(
        [0.3, 0.9]
    )
    assert _col(columns, rows, "objects") == [20, 20]
    assert [c["mean"] for c in _col(columns, rows, "test IoU")] == pytest.approx([0.605, 0.905])
    assert (tmp_path / "figures" / "recover.png").stat().st_size > 1000
    pcols, prow = _table(summary, "Test IoU per class")
    assert "latent" in pcols and prow[0][pcols.index("chair")]["mean"] == pytest.approx(0.6)


def _search_modes(tmp_path: Path, iou_of: dict[str, float] | None = None) -> dict[str, Any]:
    variants = {
        "augmented": ["train.mode=augmented"],
        "search-hard": ["train.mode=search", "search.choice=hard"],
    }
    spec = _spec("search_modes", {"model.latent": LATENTS}, variants)
    glob = {("augmented", 4): 0.05, ("augmented", 32): 0.05, ("search-hard", 4): 0.9}
    for run in expand_runs(spec):
        v, lat, s = run.params["variant"], run.params["model.latent"], run.params["seed"]
        res = _results(lat, s, protocol="rotated")
        res["test_iou"] = (iou_of or {}).get(run.name, res["test_iou"])
        g = glob.get((v, lat), 0.3)
        fake_run(
            tmp_path / "runs" / run.name,
            run.config,
            res,
            extra={"canonical.json": canonical_json(3, g) | {"n_objects": 32}},
        )
    return run_experiment(spec, tmp_path)


def test_search_modes_per_cell_verdicts_and_lever_figure(tmp_path: Path) -> None:
    summary = _search_modes(tmp_path)
    _two_cells_of_two(summary, 4)
    columns, rows = _table(summary, "Canonical poses: consistency and usage")
    assert columns[:2] == ["variant", "latent"]
    assert [r[:2] for r in rows] == [  # per grid cell, its variants
        ["augmented", 4],
        ["search-hard", 4],
        ["augmented", 32],
        ["search-hard", 32],
    ]
    glob = _col(columns, rows, "global")
    assert [g["n"] for g in glob] == [2, 2, 2, 2] and [g["objects"] for g in glob] == [64] * 4
    assert glob[1]["mean"] == pytest.approx(0.9) and glob[3]["mean"] == pytest.approx(0.3)
    assert all(0 <= g["lo"] <= g["hi"] <= 1 for g in glob)
    mcols, mrows = _table(summary, "Test MSE per mode")
    assert "latent" in mcols and all(r[mcols.index("test IoU")]["n"] == 2 for r in mrows)
    assert summary["verdicts"] == {"latent=4": "yes", "latent=32": "yes"}
    sentence = summary["answers"][0]["answer"]
    assert sentence.startswith("At latent=4: Yes: ") and " At latent=32: Yes: " in sentence
    assert "test IoU 0.905 [" in sentence
    assert (tmp_path / "figures" / "search_modes_lever.png").stat().st_size > 1000
    assert "figures/search_modes_lever.png" in json.dumps(summary["sections"])


def test_search_modes_refuses_a_verdict_below_the_iou_floor(tmp_path: Path) -> None:
    summary = _search_modes(tmp_path, {"augmented_latent-4_seed-1": 0.31})
    assert summary["verdicts"] == {"latent=4": "refused", "latent=32": "yes"}
    sentence = summary["answers"][0]["answer"]
    assert "At latent=4: Refused: " in sentence
    assert "fell short: augmented_latent-4_seed-1 (0.31)" in sentence


def _canonical(tmp_path: Path, low_iou: str = "") -> dict[str, Any]:
    variants = {
        "uniform-hard": ["train.mode=search", "search.prior=uniform"],
        "learned-strong": ["train.mode=search", "search.prior=learned", "search.prior_weight=32"],
    }
    spec = _spec("canonical", {"model.latent": LATENTS}, variants)
    for run in expand_runs(spec):
        v, lat, s = run.params["variant"], run.params["model.latent"], run.params["seed"]
        g = 0.95 if (v, lat) == ("learned-strong", 32) else 0.2
        record = {
            "n_objects": 64,
            "global_consistency": g,
            "class_consistency": g,
            "n_used": 3,
            "entropy_normalized": 0.5,
            "upright": 0.3,
            "upright_chance": 1 / 6,
            "up_consistency": 0.5,
            "pose_counts": [1.0] * 24,
        }
        res = _results(lat, s, protocol="rotated+search")
        if run.name == low_iou:
            res["test_iou"] = 0.2
        path = tmp_path / "runs" / run.name
        fake_run(path, run.config, res, extra={"canonical_pose.json": record})
    return run_experiment(spec, tmp_path)


def test_canonical_per_cell(tmp_path: Path) -> None:
    summary = _canonical(tmp_path)
    _two_cells_of_two(summary, 4)
    columns, rows = _table(summary, "Canonical pose per setting")
    assert columns[:2] == ["setting", "latent"] and _col(columns, rows, "latent") == [4, 4, 32, 32]
    glob = _col(columns, rows, "global consistency")
    assert [g["n"] for g in glob] == [2] * 4
    assert [g["mean"] for g in glob] == pytest.approx([0.2, 0.2, 0.2, 0.95])
    assert [c["n"] for c in _col(columns, rows, "test IoU")] == [2] * 4
    assert summary["verdicts"] == {"latent=4": "not emerged", "latent=32": "emerged"}
    assert (
        "At latent=32: A single canonical pose emerged under learned-strong"
        in (summary["answers"][0]["answer"])
    )


def test_canonical_refuses_below_the_iou_floor(tmp_path: Path) -> None:
    summary = _canonical(tmp_path, low_iou="learned-strong_latent-32_seed-0")
    assert summary["verdicts"]["latent=32"] == "refused"
    assert "learned-strong_latent-32_seed-0 (0.2)" in summary["answers"][0]["answer"]


def test_the_iou_floor_reads_the_validation_iou_of_the_selected_epoch(tmp_path: Path) -> None:
    spec = _spec("canonical", {"model.latent": [32]}, {"search-hard": ["train.mode=search"]})
    record = {"n_objects": 4, "global_consistency": 0.5, "pose_counts": [1.0] * 24}
    val = {0: [0.2, 0.9, 0.3], 1: [0.95, 0.1, 0.1]}  # per epoch 1-3; best epoch 2 for both
    test = {0: 0.95, 1: 0.2}  # the test IoU must not decide
    for run in expand_runs(spec):
        s = run.params["seed"]
        res = _results(32, s, protocol="rotated+search") | {"best_epoch": 2, "test_iou": test[s]}
        rows = [{"epoch": e + 1, "val_iou": v} for e, v in enumerate(val[s])]
        fake_run(tmp_path / "runs" / run.name, run.config, res, metrics=rows,
                 extra={"canonical_pose.json": record})  # fmt: skip
    summary = run_experiment(spec, tmp_path)
    assert list(summary["verdicts"].values()) == ["refused"]
    sentence = summary["answers"][0]["answer"]
    assert "(validation IoU of the selected epoch at least 0.5)" in sentence
    assert "1 run(s) fell short: search-hard_latent-32_seed-1 (0.1)." in sentence, sentence


def test_variants_that_change_one_key_are_drawn_as_levers(tmp_path: Path) -> None:
    """No grid key: variants that each differ from a plain cell in one numeric key give
    one "lever on x" figure per key, the plain cell at its default value."""
    variants = {
        "plain": ["train.mode=search"],
        "beta-0.25": ["train.mode=search", "model.beta=0.25"],
        "beta-4": ["train.mode=search", "model.beta=4.0"],
        "width-8": ["train.mode=search", "model.width=8"],
        "soft": ["train.mode=search", "search.choice=soft"],  # not numeric: no figure
    }
    spec = spec_from_dict(
        {"name": "c", "kind": "canonical", "seeds": SEEDS, "base": BASE, "variants": variants}
    )
    glob = {"plain": 0.2, "beta-0.25": 0.1, "beta-4": 0.4, "width-8": 0.3, "soft": 0.2}
    for run in expand_runs(spec):
        v, s = run.params["variant"], run.params["seed"]
        record = {"n_objects": 64, "global_consistency": glob[v], "upright": 0.3}
        record |= {"upright_chance": 1 / 6, "pose_counts": [1.0] * 24}
        fake_run(tmp_path / "runs" / run.name, run.config, _results(32, s, protocol="stored"),
                 extra={"canonical_pose.json": record})  # fmt: skip
    records = [
        load_record(tmp_path / "runs" / r.name, r.params, tmp_path) for r in expand_runs(spec)
    ]
    levers = one_key_levers(cells(records))
    assert set(levers) == {"model.beta", "model.width"}
    beta = levers["model.beta"]
    assert [c.values for c in beta] == [{"model.beta": b} for b in (0.25, 1.0, 4.0)]
    assert [c.runs[0].params["variant"] for c in beta] == ["beta-0.25", "plain", "beta-4"]
    assert [c.n for c in beta] == [2, 2, 2]
    width = levers["model.width"]
    assert [(c.values["model.width"], c.runs[0].params["variant"]) for c in width] == [
        (8, "width-8"),
        (Config().model.width, "plain"),
    ]
    summary = run_experiment(spec, tmp_path)
    figs = json.dumps(summary["sections"])
    for name in ("canonical_lever_beta", "canonical_lever_upright_width"):
        assert f"figures/{name}.png" in figs
        assert (tmp_path / "figures" / f"{name}.png").stat().st_size > 1000
    assert "canonical_lever_choice" not in figs


def test_continuous_per_cell(tmp_path: Path) -> None:
    variants = {"single": ["train.mode=single"], "continuous": ["train.mode=continuous"]}
    spec = _spec("continuous", {"model.latent": LATENTS}, variants)
    for run in expand_runs(spec):
        v, lat, s = run.params["variant"], run.params["model.latent"], run.params["seed"]
        rate = 0.2 if lat == 4 else 0.8
        so3 = {"gradient": {"success_rate": rate, "median_error_deg": 5.0, "forward_passes": 61}}
        extra = (
            {"mode": "single", "so3": {m: d | {"n": 10} for m, d in so3.items()}}
            if v == "single"
            else {"mode": "continuous", "consistency": {"consistency": rate}, "n_objects": 4}
        )
        fake_run(
            tmp_path / "runs" / run.name,
            run.config,
            _results(lat, s, protocol="so3+search"),
            extra={"continuous.json": extra},
        )
    summary = run_experiment(spec, tmp_path)
    _two_cells_of_two(summary, 4)
    columns, rows = _table(summary, "Pose error against method")
    assert "latent" in columns and _col(columns, rows, "latent") == LATENTS
    success = _col(columns, rows, "success rate")
    assert [c["n"] for c in success] == [2, 2]
    assert [c["mean"] for c in success] == pytest.approx([0.2, 0.8])
    ccols, crows = _table(summary, "Continuous search training")
    assert _col(ccols, crows, "latent") == LATENTS
    assert [c["objects"] for c in _col(ccols, crows, "consistency")] == [8, 8]
    assert summary["answers"][0]["answer"].startswith("At latent=4: gradient recovered 20%")
    lever = tmp_path / "figures" / "continuous_lever.png"
    assert _png_width(lever) == 600  # one panel: the method is a line, not a panel


@pytest.mark.parametrize(
    ("kind", "grid"),
    [
        ("single_vs_all", {"train.mode": ["single", "search"]}),
        ("recover", {"train.mode": ["single", "augmented"]}),
        ("continuous", {"train.mode": ["single", "augmented"]}),
    ],
)
def test_a_grid_a_kind_cannot_show_is_refused_before_training(
    tmp_path: Path, kind: str, grid: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError, match=r"train\.mode"):
        run_experiment(_spec(kind, grid), tmp_path)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "experiment.json").exists()


def test_single_vs_all_refuses_two_variants_of_one_mode(tmp_path: Path) -> None:
    variants = {"a": ["train.mode=single"], "b": ["train.mode=single", "model.beta=2.0"]}
    with pytest.raises(ConfigError, match="'a' and 'b' both train mode single"):
        run_experiment(_spec("single_vs_all", {"model.latent": [4]}, variants), tmp_path)


def test_an_undefined_interval_reads_n_a(tmp_path: Path) -> None:
    one = {"mean": 0.219, "lo": None, "hi": None, "n": 1}
    assert html_cell(one)[0] == "0.219 [n/a] (n=1)"
    assert prop_cell([0.5], [None])["lo"] is None  # objects not counted: no interval
    spec = _spec("search_modes", {"model.latent": [4]}, {"s": ["train.mode=search"]}, seeds=[0])
    for run in expand_runs(spec):
        fake_run(
            tmp_path / "runs" / run.name,
            run.config,
            {"test_mse": 0.03, "test_iou": 0.7, "protocol": "rotated+search"},
            extra={"canonical.json": canonical_json(3, 0.5)},
        )
    summary = run_experiment(spec, tmp_path)
    assert "(test IoU 0.7 [n/a])" in summary["answers"][0]["answer"]
    columns, rows = _table(summary, "Test MSE per mode")
    assert rows[0][columns.index("test MSE")]["lo"] is None  # JSON keeps null
    html = (tmp_path / "report.html").read_text()
    assert "0.03 [n/a] (n=1)" in html


def _png_width(path: Path) -> int:
    from PIL import Image

    return Image.open(path).size[0]


def test_lever_figure_splits_other_grid_keys_into_panels(tmp_path: Path) -> None:
    from orient3d.experiments.cells import Cell, lever_figure

    grid = [
        Cell({"variant": v, "model.latent": lat, "model.beta": b}, ())
        for v in ("a", "b")
        for b in (1.0, 4.0)
        for lat in LATENTS
    ]

    def stat(c: Cell) -> dict[str, Any]:
        return {"mean": c.values["model.latent"] / 64, "lo": None, "hi": None}

    kw: dict[str, Any] = {"series": lambda c: c.values["variant"], "ylabel": "y", "title": "t"}
    two = lever_figure(tmp_path, "two", grid, "model.latent", stat, **kw)
    one = lever_figure(tmp_path, "one", grid[:2], "model.latent", stat, **kw)
    assert (two, one) == ("figures/two.png", "figures/one.png")
    assert _png_width(tmp_path / "figures/two.png") > _png_width(tmp_path / "figures/one.png")
    assert lever_figure(tmp_path, "none", grid, "model.width", stat, **kw) is None
