"""The demo end to end, tiny: three experiments, their summaries and one report."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from orient3d.cli import main
from orient3d.experiments.demo import DEMO_ORDER


@pytest.fixture
def one_thread() -> object:
    """One torch thread: on a shared 2-core machine, oversubscribed threads cost 5x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_tiny_demo_end_to_end(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], one_thread: object
) -> None:
    out = tmp_path / "demo"
    assert main(["demo", "--tiny", "--workers", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'report.html'}" in printed
    html = (out / "report.html").read_text()
    for name in DEMO_ORDER:
        summary = json.loads((out / name / "summary.json").read_text())
        (answer,) = summary["answers"]
        sentence = answer["answer"]
        assert sentence.endswith(".") and re.search(r"\d", sentence), sentence
        assert sentence in printed
        assert summary["sections"] and name in html
        for fig in (out / name / "figures").glob("*.png"):
            assert fig.stat().st_size > 1000
    # recover reused the single runs of single_vs_all instead of training its own
    assert not (out / "recover" / "runs").exists()
    assert (
        out / "single_vs_all" / "runs" / "latent-2_mode-single_seed-0" / "recover.json"
    ).is_file()
    # a second call finds everything done and trains nothing
    mtime = (out / "single_vs_all" / "runs" / "latent-2_mode-single_seed-0" / "results.json").stat()
    assert main(["demo", "--tiny", "--workers", "1", "--out", str(out)]) == 0
    again = (out / "single_vs_all" / "runs" / "latent-2_mode-single_seed-0" / "results.json").stat()
    assert again.st_mtime_ns == mtime.st_mtime_ns


def test_question_2s_augmented_baseline_trains_longer_on_the_same_test_objects() -> None:
    from orient3d.config import config_differences
    from orient3d.experiments import expand_runs
    from orient3d.experiments.demo import demo_specs

    runs = {r.name: r.config for r in expand_runs(demo_specs()["search_modes"])}
    oracle, augmented = runs["oracle_seed-0"], runs["augmented_seed-0"]
    assert set(config_differences(augmented, oracle)) == {
        "train.mode",
        "data.n_train",
        "model.width",
        "train.batch_size",
        "train.lr",
    }
    assert augmented.data.n_train > oracle.data.n_train  # more objects, ...
    # ... the same test objects: the pose measurements compare object by object
    for key in ("source", "res", "n_test"):
        assert getattr(augmented.data, key) == getattr(oracle.data, key)
    assert augmented.seed == oracle.seed
    # the search models differ from the oracle in the mode and the search settings only
    for name in ("search-hard_seed-0", "search-soft_seed-0"):
        assert {k.split(".")[0] for k in config_differences(runs[name], oracle)} <= {
            "train",
            "search",
        }
        assert [k for k in config_differences(runs[name], oracle) if k.startswith("train.")] == [
            "train.mode"
        ]
