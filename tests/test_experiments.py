"""Experiments without training: specs, resume logic, aggregation and figures on fake runs."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

from orient3d import config as C
from orient3d.errors import ConfigError, RunError
from orient3d.experiments import expand_runs, run_experiment, spec_from_dict
from orient3d.experiments import single_vs_all as S
from orient3d.experiments.runner import reusable_run, run_state
from orient3d.stats import compare_groups

BASE = {"data": {"res": 16, "n_train": 8, "n_test": 4}, "train": {"epochs": 2}}


def spec_dict(kind: str = "single_vs_all", **more: Any) -> dict[str, Any]:
    d: dict[str, Any] = {
        "name": "t",
        "kind": kind,
        "seeds": [0, 1, 2],
        "base": BASE,
        "grid": {"model.latent": [2, 8], "train.mode": ["single", "augmented"]},
    }
    d.update(more)
    return d


def fake_run(
    path: Path,
    cfg: C.Config,
    results: dict[str, Any] | None = None,
    *,
    metrics: list[dict[str, Any]] | None = None,
    extra: dict[str, Any] | None = None,
    checkpoint: bool = False,
) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.toml").write_text(C.dumps(cfg))
    if results is not None:
        (path / "results.json").write_text(json.dumps(results))
    default: dict[str, Any] = {"epoch": 1, "test_mse": 0.1}
    if results is not None and "test_iou" in results:  # validation as good as test, by default
        default["val_iou"] = results["test_iou"]
    lines = metrics if metrics is not None else [default]
    (path / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in lines))
    for name, obj in (extra or {}).items():
        (path / name).write_text(json.dumps(obj))
    if checkpoint:
        (path / "checkpoints").mkdir(exist_ok=True)
        (path / "checkpoints" / "last.pt").write_bytes(b"x")


MSE = {  # (latent, mode) -> per-seed test MSE: clearly apart at 2, overlapping at 8
    (2, "single"): [0.010, 0.011, 0.012],
    (2, "augmented"): [0.050, 0.052, 0.051],
    (8, "single"): [0.020, 0.030, 0.025],
    (8, "augmented"): [0.022, 0.031, 0.026],
}


def make_single_vs_all(out: Path) -> None:
    for run in expand_runs(spec_from_dict(spec_dict())):
        key = (run.params["model.latent"], run.params["train.mode"])
        mse = MSE[key][run.params["seed"]]
        proto = "as_stored" if key[1] == "single" else "rotated"
        fake_run(
            out / "runs" / run.name,
            run.config,
            {"test_mse": mse, "test_iou": 0.8, "protocol": proto},
        )


# ---------------------------------------------------------------------------- specs


def test_expand_runs_names_params_and_configs() -> None:
    runs = expand_runs(spec_from_dict(spec_dict()))
    assert len(runs) == 2 * 2 * 3
    r = runs[0]
    assert r.name == "latent-2_mode-single_seed-0"
    assert r.params == {"model.latent": 2, "train.mode": "single", "seed": 0}
    assert r.config.model.latent == 2 and r.config.seed == 0 and r.config.data.n_train == 8


def test_variants_as_lists_or_tables_and_overrides() -> None:
    variants = {
        "oracle": ["train.mode=single"],
        "search-soft": {"train.mode": "search", "search.choice": "soft"},
    }
    spec = spec_from_dict(
        spec_dict("search_modes", grid={}, variants=variants, seeds=[3]),
        overrides=["--data.n_test=5"],
    )
    runs = expand_runs(spec)
    assert [r.name for r in runs] == ["oracle_seed-3", "search-soft_seed-3"]
    assert runs[1].config.search.choice == "soft" and runs[1].config.train.mode == "search"
    assert all(r.config.data.n_test == 5 for r in runs)


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"colour": 1}, "colour"),
        ({"grid": {"model.latentt": [2]}}, "model.latentt"),
        ({"base": {"model": {"widht": 4}}}, "widht"),
        ({"variants": {"v": ["train.nope=1"]}}, "train.nope"),
        ({"seeds": []}, "seeds"),
        ({"grid": {"model.latent": [0]}}, "model.latent"),
    ],
)
def test_bad_specs_name_the_key(change: dict[str, Any], needle: str) -> None:
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        spec_from_dict(spec_dict(**change))


def test_unknown_kind_and_option(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="kind"):
        run_experiment(spec_from_dict(spec_dict("nope")), tmp_path)
    with pytest.raises(ConfigError, match="bogus"):
        run_experiment(spec_from_dict(spec_dict(options={"bogus": 1})), tmp_path)


# ---------------------------------------------------------------------------- resume


def test_run_state(tmp_path: Path) -> None:
    cfg = C.Config()
    assert run_state(tmp_path / "a", cfg) == "new"
    fake_run(tmp_path / "b", cfg, checkpoint=True)
    assert run_state(tmp_path / "b", cfg) == "resume"
    fake_run(tmp_path / "c", cfg, {"test_mse": 0.1})
    assert run_state(tmp_path / "c", cfg) == "done"
    other = C.apply_overrides(cfg, ["model.latent=3", "train.threads=1"])
    with pytest.raises(RunError, match=r"model\.latent"):
        run_state(tmp_path / "c", other)
    fast = C.apply_overrides(cfg, ["train.threads=1", "train.device=cpu"])
    assert run_state(tmp_path / "c", fast) == "done"  # speed-only keys do not matter
    moved = C.apply_overrides(cfg, [f"data.cache_dir={str(tmp_path / 'elsewhere')!r}"])
    assert run_state(tmp_path / "c", moved) == "done"  # nor where the data are cached
    assert reusable_run("c", cfg, [tmp_path / "nowhere", tmp_path.parent]) is None


def test_resume_trains_only_what_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import orient3d.train

    make_single_vs_all(tmp_path)
    runs = expand_runs(spec_from_dict(spec_dict()))
    interrupted, missing = runs[1], runs[2]
    (tmp_path / "runs" / interrupted.name / "results.json").unlink()
    (tmp_path / "runs" / interrupted.name / "checkpoints").mkdir()
    (tmp_path / "runs" / interrupted.name / "checkpoints" / "last.pt").write_bytes(b"x")
    for f in (tmp_path / "runs" / missing.name).iterdir():
        f.unlink()
    calls: list[tuple[str, bool]] = []

    def fake_train(cfg: C.Config, out: Path, *, resume: bool, force: bool, command: str) -> dict:
        calls.append((Path(out).name, resume))
        fake_run(Path(out), cfg, {"test_mse": 0.02, "test_iou": 0.8, "protocol": "as_stored"})
        return {}

    monkeypatch.setattr(orient3d.train, "train", fake_train)
    summary = run_experiment(spec_from_dict(spec_dict()), tmp_path)
    assert sorted(calls) == sorted([(interrupted.name, True), (missing.name, False)])
    calls.clear()
    run_experiment(spec_from_dict(spec_dict()), tmp_path)
    assert calls == []  # everything finished: nothing trains again
    assert summary["answers"][0]["answer"]


# ---------------------------------------------------------------------------- aggregation


def test_verdicts_from_intervals() -> None:
    apart = compare_groups([0.010, 0.011, 0.012], [0.050, 0.052, 0.051])
    assert S.verdict(apart) == S.LOWER_SINGLE
    assert S.verdict(compare_groups([0.05, 0.051, 0.052], [0.01, 0.011, 0.012])) == S.LOWER_ALL
    overlap = compare_groups([0.020, 0.030, 0.025], [0.022, 0.031, 0.026])
    assert S.verdict(overlap) == S.NOT_DISTINGUISHABLE
    assert S.verdict(compare_groups([0.01], [0.05])) == S.NO_INTERVAL


def test_single_vs_all_summary_from_fake_runs(tmp_path: Path) -> None:
    make_single_vs_all(tmp_path)
    summary = run_experiment(spec_from_dict(spec_dict()), tmp_path)
    assert summary["verdicts"] == {"2": S.LOWER_SINGLE, "8": S.NOT_DISTINGUISHABLE}
    row = summary["sections"][0]["table"]["rows"][0]
    m, lo, hi = row[1]["mean"], row[1]["lo"], row[1]["hi"]
    assert m == pytest.approx(0.011) and lo < m < hi
    assert hi - m == pytest.approx(4.302653 * 0.001 / math.sqrt(3), rel=1e-4)  # t(.975, 2) sd/√n
    sentence = summary["answers"][0]["answer"]
    assert sentence.startswith("Mostly yes") and "1 of 2" in sentence and sentence.endswith(".")
    assert "not distinguishable at 8" in sentence
    exp = json.loads((tmp_path / "experiment.json").read_text())
    assert exp["kind"] == "single_vs_all" and len(exp["runs"]) == 12
    assert exp["runs"][0]["run"].startswith("runs/") and exp["questions"]
    png = tmp_path / "figures" / "single_vs_all.png"
    assert png.read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "summary.json").is_file() and (tmp_path / "report.html").is_file()


def test_answer_sentences_follow_the_numbers() -> None:
    def row(latent: int, a: list[float], b: list[float]) -> S.LatentRow:
        cmp = compare_groups(a, b)
        return S.LatentRow(latent, a, b, cmp, S.verdict(cmp), {})

    low = [0.01, 0.011, 0.012]
    high = [0.05, 0.051, 0.052]
    assert S.answer([row(2, low, high), row(4, low, high)]).startswith("Yes: at every latent")
    assert S.answer([row(2, high, low)]).startswith("No: all 24")
    assert S.answer([row(2, low, [0.011, 0.012, 0.01])]).startswith("Not shown")
    assert "ratio 0.2" in S.answer([row(2, low, high)])


def test_recover_given_the_single_vs_all_folder_nests_and_reuses(tmp_path: Path) -> None:
    make_single_vs_all(tmp_path)
    run_experiment(spec_from_dict(spec_dict()), tmp_path)
    for run in (tmp_path / "runs").iterdir():
        (run / "recover.json").write_text(json.dumps({"accuracy": 0.5, "chance": 1 / 24}))
    grid = {"model.latent": [2, 8], "train.mode": ["single"]}
    rec = spec_from_dict(spec_dict("recover", name="rec", grid=grid))
    summary = run_experiment(rec, tmp_path)
    # recover.json without "n": the objects are not counted, so no interval
    assert "50% [n/a] of rotated test objects" in summary["answers"][0]["answer"]
    assert json.loads((tmp_path / "summary.json").read_text())["name"] == "t"  # kept
    exp = json.loads((tmp_path / "rec" / "experiment.json").read_text())
    assert exp["kind"] == "recover" and exp["runs"][0]["run"].startswith("../runs/")


def test_cli_experiment_passes_overrides_and_reports_mismatch(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import tomli_w

    from orient3d.cli import main

    out = tmp_path / "exp"
    make_single_vs_all(out)
    toml = tmp_path / "e.toml"
    toml.write_text(tomli_w.dumps(spec_dict()))
    assert main(["experiment", str(toml), "--out", str(out), "--data.n_test=4"]) == 0
    printed = capsys.readouterr().out
    assert "Mostly yes" in printed and "report: " in printed
    assert main(["experiment", str(toml), "--out", str(out), "--data.n_test=5"]) == 2
    assert "data.n_test" in capsys.readouterr().err


def test_runtime_keys_have_one_definition() -> None:
    """What a resume and an experiment's reuse of a run ignore is one list."""
    from orient3d.experiments import runner
    from orient3d.rundir import runs as rundir_runs

    assert frozenset(C.RUNTIME_KEYS) == runner.IGNORED_KEYS
    assert rundir_runs.RUNTIME_KEYS is C.RUNTIME_KEYS
    assert {"data.cache_dir", "train.device", "train.threads"} <= set(C.RUNTIME_KEYS)
