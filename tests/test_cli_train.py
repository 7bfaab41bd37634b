"""`orient3d train` and `orient3d evaluate` end to end on tiny procedural data."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest

from orient3d import runs
from orient3d.cli import main
from orient3d.cli.train import TqdmProgress
from orient3d.config import load_config
from train_helpers import metric_values

TINY = [
    "--data.res=16",
    "--data.n_train=48",
    "--data.n_test=8",
    "--model.width=4",
    "--model.latent=4",
    "--train.batch_size=16",
    "--train.threads=1",
]


def test_train_then_evaluate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text('seed = 3\n[train]\nmode = "augmented"\nepochs = 1\n')
    run = tmp_path / "run"
    cache = f"--data.cache_dir={tmp_path / 'cache'}"
    assert main(["train", str(cfg), "--out", str(run), *TINY, cache]) == 0
    assert "test_mse" in capsys.readouterr().out
    saved = runs.read_run_config(run)
    assert saved.seed == 3 and saved.train.mode == "augmented" and saved.model.width == 4
    assert runs.read_json(run / "meta.json")["command"].startswith("orient3d train")
    assert main(["evaluate", str(run)]) == 0
    out = capsys.readouterr().out
    assert "as_stored" in out and "rotated" in out
    ev = runs.read_json(run / "evaluate.json")
    assert set(ev) == {"as_stored", "rotated", "source"}
    assert ev["source"]["checkpoint"] == "best" and ev["source"]["sha256"].startswith("sha256:")
    assert ev["rotated"]["test_mse"] == pytest.approx(
        runs.read_json(run / "results.json")["test_mse"]
    )
    assert main(["evaluate", str(run), "--protocol", "rotated+search"]) == 2
    assert "search" in capsys.readouterr().err
    # Refused: a non-empty folder, an unknown key; allowed with --force.
    assert main(["train", "--out", str(run), *TINY, cache]) == 2
    assert "not empty" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "x"), "--train.epoch=2"]) == 2
    assert "unknown config key train.epoch" in capsys.readouterr().err
    assert main(["train", str(cfg), "--out", str(run), "--force", *TINY, cache]) == 0


def test_train_needs_out_and_unknown_args_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train"]) == 2
    assert "--out" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["evaluate", "somewhere", "--train.epochs=3"])


def test_progress_bar_closes_each_epoch(capsys: pytest.CaptureFixture[str]) -> None:
    bar = TqdmProgress()
    for epoch in (1, 2):
        for step in (1, 2, 3):
            bar(epoch, step, 3, 100.0 / step, 50.0)
    assert bar.bar is None
    bar(3, 1, 3, 1.0, 1.0)
    bar.close()
    assert bar.bar is None


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "orient3d", "-q", "train", *args]


def test_sigkill_then_resume_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    common = [*TINY, "--data.n_train=64", "--train.epochs=3", f"--data.cache_dir={tmp_path}/c"]
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_cli("--out", str(killed), *common))
    last = killed / "checkpoints" / "last.pt"
    deadline = time.monotonic() + 120
    while not last.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = runs.load_checkpoint(last)["epoch"]
    assert done < 3, "the run ended before it could be killed"
    subprocess.run(_cli("--resume", str(killed)), check=True, timeout=300)
    full = tmp_path / "full"  # uninterrupted, in this process (same threads, same data)
    assert main(["train", "--out", str(full), *common]) == 0
    assert metric_values(killed) == metric_values(full)
    assert len(metric_values(full)) == 3
    resumed = runs.read_json(killed / "meta.json").get("resumed", [])
    assert resumed and resumed[0]["epoch"] == done
    a, b = runs.read_json(killed / "results.json"), runs.read_json(full / "results.json")
    assert a["per_object"] == b["per_object"]


def test_shipped_configs_differ_only_in_mode_and_epochs() -> None:
    # augmented trains twice as long: all 24 poses take longer to learn (RESULTS.md)
    root = Path(__file__).resolve().parents[1] / "configs"
    single, augmented = (load_config(root / f"{m}.toml") for m in ("single", "augmented"))
    assert single.train.mode == "single" and augmented.train.mode == "augmented"
    assert single.data.res == 16
    assert augmented.train.epochs == 2 * single.train.epochs
    as_single = replace(augmented.train, mode="single", epochs=single.train.epochs)
    assert replace(augmented, train=as_single) == single
    for path in (root / "single.toml", root / "augmented.toml"):
        for line in path.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                assert "#" in line, f"{path.name}: no comment on {line!r}"
