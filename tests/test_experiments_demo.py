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
