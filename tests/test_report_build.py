"""The HTML report and ``compare`` on fake run and experiment folders written by hand."""

from __future__ import annotations

import argparse
import io
import json
import re
import shutil
import subprocess
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from orient3d.cli import compare as compare_cli
from orient3d.cli import report as report_cli
from orient3d.errors import RunError
from orient3d.report import build_report, write_report
from orient3d.report_parts.html import page
from orient3d.report_parts.rundata import load_run

CONFIG = """seed = {seed}

[data]
source = "procedural"
res = 16
n_train = 512
n_test = 128

[model]
latent = {latent}
beta = 1.0

[train]
mode = "{mode}"
epochs = {epochs}
batch_size = 32
lr = 0.001
device = "cpu"

[search]
choice = "hard"
warmup_epochs = 1
"""


def _png(path: Path, seed: int) -> None:
    fig = Figure(figsize=(2, 1.5))
    FigureCanvasAgg(fig)
    fig.add_subplot().imshow(np.random.default_rng(seed).random((8, 8)))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=50)


def make_run(
    root: Path,
    name: str,
    *,
    latent: int = 8,
    mode: str = "search",
    seed: int = 0,
    epochs: int = 4,
    results: bool = True,
    figures: bool = True,
) -> Path:
    run = root / name
    run.mkdir(parents=True)
    (run / "config.toml").write_text(
        CONFIG.format(seed=seed, latent=latent, mode=mode, epochs=epochs)
    )
    meta = {
        "version": "0.1.0",
        "git_commit": "a4b2562",
        "time": "2026-11-27T21:00:00Z",
        "command": f"orient3d train configs/demo.toml --out {run}",
    }
    (run / "meta.json").write_text(json.dumps(meta))
    rng = np.random.default_rng(seed + latent)
    lines = []
    for e in range(epochs):
        row = {
            "epoch": e,
            "train_loss": 300.0 / (e + 1),
            "test_mse": 0.05 / (e + 1) + 0.001 * seed,
            "test_iou": 0.5 + 0.1 * e,
            "seconds": 1.5,
        }
        if mode == "search":
            hist = rng.multinomial(128, np.full(24, 1 / 24)).tolist()
            row.update(pose_hist=hist, pose_entropy=2.9, poses_used=int(np.count_nonzero(hist)))
        lines.append(json.dumps(row))
    (run / "metrics.jsonl").write_text("\n".join(lines) + "\n")
    if results:
        res = {
            "test_mse": 0.0125,
            "test_iou": 0.8,
            "test_bce": 0.04,
            "test_neg_elbo": 95.3,
            "per_object": {"mse": [0.01, 0.015]},
        }
        (run / "results.json").write_text(json.dumps(res))
    if figures:
        _png(run / "figures" / "reconstructions.png", seed)
    return run


def make_experiment(root: Path) -> Path:
    exp = root / "exp"
    runs = []
    for mode in ("single", "augmented"):
        for s in range(2):
            make_run(exp / "runs", f"{mode}-s{s}", mode=mode, seed=s, figures=False)
            runs.append({"run": f"runs/{mode}-s{s}", "params": {"train.mode": mode, "seed": s}})
    spec = {
        "name": "easier-one-pose",
        "questions": ["Is one pose easier to encode than 24?"],
        "runs": runs,
    }
    (exp / "experiment.json").write_text(json.dumps(spec))
    summary = {
        "answers": [
            {
                "question": "Is one pose easier to encode than 24?",
                "answer": "Yes: test MSE 0.0125 [0.011, 0.014] (single) vs 0.02 (augmented).",
            }
        ],
        "tables": [
            {
                "title": "Test MSE by mode",
                "columns": ["mode", "test_mse"],
                "rows": [
                    ["single", {"mean": 0.0125, "lo": 0.011, "hi": 0.014, "n": 2}],
                    ["augmented", {"mean": 0.02, "lo": 0.018, "hi": 0.022, "n": 2}],
                ],
            }
        ],
        "sections": [
            {
                "title": "Probe section",
                "text": "Written by the experiment.\n\nTwo.",
                "table": {"columns": ["run", "acc"], "rows": [["single-s0", 0.91]]},
                "figures": ["figures/mse_by_mode.png"],
            }
        ],
        "verdict_numbers": {"p_value": 0.003},
    }
    (exp / "summary.json").write_text(json.dumps(summary))
    _png(exp / "figures" / "mse_by_mode.png", 7)
    _png(exp / "figures" / "overview.png", 8)
    return exp


def _check_self_contained(text: str) -> None:
    srcs = re.findall(r'src="([^"]*)"', text)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(href|src)="(https?:)?//', text)
    assert "<link" not in text and "@import" not in text and "url(" not in text


def test_report_of_runs(tmp_path: Path) -> None:
    a = make_run(tmp_path, "latent8", latent=8)
    b = make_run(tmp_path, "latent16", latent=16, results=False)  # metrics.jsonl only
    out = write_report([a, b], tmp_path / "out" / "report.html")
    text = out.read_text()
    for heading in (
        "Setup",
        "Final metrics",
        "Training curves",
        "Orientation usage",
        "Figures of latent8",
    ):
        assert f">{heading}</h" in text, heading
    assert "model.latent" in text and "a4b2562" in text
    assert "metrics.jsonl (last epoch)" in text and "results.json" in text
    assert "0.0125 [" in text and "(n=2)" in text  # per-object interval of run a
    assert text.count("<img ") == 4  # curves, pose histograms, one figure per run
    _check_self_contained(text)
    assert [p.name for p in out.parent.iterdir()] == ["report.html"]  # no temporary left


def test_report_of_experiment(tmp_path: Path) -> None:
    exp = make_experiment(tmp_path)
    rep = build_report([exp])
    rep.section("Extra", "<p>added by another module</p>")
    text = rep.write(tmp_path / "r.html").read_text()
    assert "Is one pose easier to encode than 24?" in text
    assert "Yes: test MSE 0.0125 [0.011, 0.014] (single) vs 0.02 (augmented)." in text
    assert "0.0125 [0.011, 0.014] (n=2)" in text  # a CI cell
    assert ">Probe section</h3>" in text and "<p>Written by the experiment.</p>" in text
    assert "figures/mse_by_mode.png" in text and ">Extra</h2>" in text
    assert text.count("<figcaption>figures/overview.png</figcaption>") == 1  # not twice
    assert text.count("<figcaption>figures/mse_by_mode.png</figcaption>") == 1
    assert "p_value" in text  # unknown summary keys are shown raw
    assert "train.mode" in text and "augmented-s1" in text
    _check_self_contained(text)


def test_missing_and_broken_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(RunError, match="no such run folder"):
        write_report([tmp_path / "nope"], tmp_path / "r.html")
    (tmp_path / "empty").mkdir()
    with pytest.raises(RunError, match=r"empty: not a run folder: config.toml is missing"):
        load_run(tmp_path / "empty")
    run = make_run(tmp_path, "broken", results=False)
    (run / "metrics.jsonl").write_text('{"epoch": 0}\n{"epoch": 1, "test_\n{"epoch": 2}\n')
    with pytest.raises(RunError, match=r"metrics.jsonl:2: invalid JSON"):
        load_run(run)
    (run / "metrics.jsonl").write_text('{"epoch": 0, "test_mse": 0.1}\n{"epoch": 1, "te')
    assert len(load_run(run).metrics) == 1  # a run still writing its last line
    (run / "metrics.jsonl").unlink()
    with pytest.raises(RunError, match="neither results.json nor metrics.jsonl"):
        load_run(run)
    (run / "config.toml").write_text("seed = [")
    with pytest.raises(RunError, match="config.toml: invalid TOML"):
        load_run(run)
    assert not (tmp_path / "r.html").exists()


def _cli(module: object, argv: list[str]) -> str:
    parser = argparse.ArgumentParser()
    module.add_args(parser)  # type: ignore[attr-defined]
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert module.main(parser.parse_args(argv)) == 0  # type: ignore[attr-defined]
    return buf.getvalue()


def test_cli_report_and_compare(tmp_path: Path) -> None:
    a = make_run(tmp_path, "a", latent=8, mode="single", figures=False)
    b = make_run(tmp_path, "b", latent=16, figures=False, results=False)
    out = tmp_path / "cmp.html"
    assert _cli(report_cli, [str(a), str(b), "--out", str(out)]).strip() == str(out)
    assert out.is_file()
    _cli(report_cli, [str(a)])
    assert (a / "report.html").is_file()
    table = _cli(compare_cli, [str(a), str(b)]).splitlines()
    assert table[0].split()[:4] == ["run", "model.latent", "train.mode", "source"]
    assert table[2].split()[:3] == ["a", "8", "single"] and "0.0125" in table[2]
    col = table[0].index("model.latent")  # aligned columns
    assert table[2][col:].startswith("8 ") and table[3][col:].startswith("16 ")
    rows = json.loads(_cli(compare_cli, [str(a), str(b), "--json"]))
    assert rows[1]["config"] == {"model.latent": 16, "train.mode": "search"}
    assert rows[1]["source"] == "metrics.jsonl (last epoch)"
    assert rows[1]["metrics"]["test_iou"] == pytest.approx(0.8)


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def _chrome_args(exe: str, tmp_path: Path) -> list[str]:
    return [
        exe,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
    ]


def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    exe = _chromium()
    if exe is None:
        pytest.skip("chromium not installed (e.g. apt-get install chromium); not installing here")
    exp = make_experiment(tmp_path)
    run = make_run(tmp_path, "plain")
    out = write_report([exp, run], tmp_path / "report.html")
    n_img = out.read_text().count("<img ")
    base = _chrome_args(exe, tmp_path)
    shot = tmp_path / "shot.png"
    # One browser start does both: the DOM after load (with the image check) and a screenshot.
    dom = subprocess.run(
        [
            *base,
            "--virtual-time-budget=5000",
            "--dump-dom",
            f"--screenshot={shot}",
            "--window-size=1200,2000",
            out.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert f'data-images="ok {n_img}"' in dom.stdout, dom.stderr[-2000:]
    if not shot.exists():  # a Chromium that does one action per start
        subprocess.run(
            [*base, f"--screenshot={shot}", "--window-size=1200,2000", out.as_uri()],
            capture_output=True,
            timeout=60,
            check=False,
        )
    # The check itself can fail: a page with an undecodable image reports it.
    bad = tmp_path / "bad.html"
    bad.write_text(page("bad", '<img src="data:image/png;base64,iVBORw0KGgoAAAA=">'))
    dom = subprocess.run(
        [*base, "--virtual-time-budget=3000", "--dump-dom", bad.as_uri()],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert 'data-images="broken 1"' in dom.stdout, dom.stderr[-2000:]
    import matplotlib.image

    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[:2] == (2000, 1200) and float(pixels[..., :3].var()) > 1e-3
