"""Run folders nobody can corrupt: one writer, workers that die with their parent,
the same data on resume, a complete log, files that follow the umask."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from orient3d import lock, runcheck, runs
from orient3d.cli import main
from orient3d.errors import RunError
from orient3d.model import VAE
from orient3d.recover import recover
from orient3d.stats import wilson_ci
from orient3d.train import fit
from train_helpers import random_polycubes, tiny_config, tiny_data

HOLD = """
import sys, time
from orient3d import lock
lock.hold(sys.argv[1], "orient3d train --out X")
print("held", flush=True)
time.sleep(120)
"""


def _holder(folder: Path) -> subprocess.Popen[str]:
    """A process that holds ``folder``'s lock until killed."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder)], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()


def test_a_second_writer_is_refused_and_a_dead_holders_lock_is_taken_over(
    tmp_path: Path,
) -> None:
    run = tmp_path / "run"
    proc = _holder(run)
    try:
        with pytest.raises(RunError, match=f"in use by process {proc.pid} \\(orient3d train"):
            lock.hold(run)
        assert not lock.held(run)
    finally:
        _kill(proc)
    with lock.scope():  # the kernel dropped the dead process's lock
        lock.hold(run)
        assert lock.held(run)
        assert f"pid={os.getpid()}" in (run / lock.LOCK_NAME).read_text()
    assert not lock.held(run)
    assert not (run / lock.LOCK_NAME).exists()  # a clean release leaves no lock file


def test_train_resume_and_force_into_a_running_folder_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_config("train.epochs=1")
    run = tmp_path / "run"
    fit(cfg, *tiny_data(cfg), run)
    lock.release(run)  # (this process finished the run; another one now writes it)
    before = (run / "metrics.jsonl").read_text()
    proc = _holder(run)
    try:
        assert main(["train", "--resume", str(run)]) == 2
        err = capsys.readouterr().err
        assert f"in use by process {proc.pid}" in err and "Traceback" not in err
        assert main(["train", "--out", str(run), "--force", "--seed=1"]) == 2
        assert f"in use by process {proc.pid}" in capsys.readouterr().err
    finally:
        _kill(proc)
    assert (run / "metrics.jsonl").read_text() == before
    assert (run / "results.json").is_file()


POOL = """
import sys, time
from orient3d.experiments.runner import _new_pool
pool = _new_pool(2)
print(*pool._processes, flush=True)
time.sleep(120)
"""


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")  # a zombie has ended


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_end_when_their_parent_is_killed() -> None:
    proc = subprocess.Popen([sys.executable, "-c", POOL], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    workers = [int(p) for p in proc.stdout.readline().split()]
    assert len(workers) == 2 and all(_running(p) for p in workers)
    _kill(proc)
    deadline = time.monotonic() + 10
    while any(_running(p) for p in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_running(p) for p in workers)


def test_resume_refuses_changed_data_unless_allowed(tmp_path: Path) -> None:
    cfg = tiny_config("train.epochs=1")
    train_set, test_set = tiny_data(cfg)
    fit(cfg, train_set, test_set, tmp_path)
    fingerprint = runs.read_json(tmp_path / "meta.json")["data_fingerprint"]
    assert fingerprint.startswith("sha256:")
    fit(cfg, train_set, test_set, tmp_path, resume=True)  # the same data: fine
    changed = train_set.voxels.clone()
    changed[0] = 1 - changed[0]
    other = dataclasses.replace(train_set, voxels=changed)
    with pytest.raises(RunError, match="--allow-data-change"):
        fit(cfg, other, test_set, tmp_path, resume=True)
    fit(cfg, other, test_set, tmp_path, resume=True, allow_data_change=True)
    meta = runs.read_json(tmp_path / "meta.json")
    assert meta["resumed"][-1]["data_changed_from"] == fingerprint
    assert meta["data_fingerprint"] not in (fingerprint, None)


def _lines(run: Path) -> list[str]:
    return (run / "metrics.jsonl").read_text().splitlines()


@pytest.mark.parametrize("damage", ["drop_last", "drop_middle", "repeat"])
def test_resume_rewrites_a_damaged_log_from_the_checkpoint(tmp_path: Path, damage: str) -> None:
    cfg = tiny_config("train.epochs=3", "train.checkpoint_every=1")
    data = tiny_data(cfg)
    fit(cfg, *data, tmp_path)
    good = _lines(tmp_path)
    bad = {
        "drop_last": good[:-1],
        "drop_middle": [good[0], good[2]],
        "repeat": [good[0], good[1], good[1], good[2]],
    }[damage]
    (tmp_path / "metrics.jsonl").write_text("\n".join(bad) + "\n")
    assert runcheck.epoch_problems([json.loads(x) for x in bad], last=3)
    fit(cfg, *data, tmp_path, resume=True)
    assert _lines(tmp_path) == good


def test_a_gap_without_a_copy_in_the_checkpoint_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "metrics.jsonl"
    log.write_text("".join(json.dumps({"epoch": e}) + "\n" for e in (1, 3)))
    with pytest.raises(RunError, match="missing epoch\\(s\\) 2"):
        runs.restore_metrics(log, 3, None)
    assert runs.restore_metrics(log, 1, None) == [{"epoch": 1}]  # later epochs just go


def test_compare_flags_gaps_and_repeated_epochs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_config("train.epochs=3")
    fit(cfg, *tiny_data(cfg), tmp_path)
    lines = _lines(tmp_path)
    (tmp_path / "metrics.jsonl").write_text("\n".join([lines[0], lines[2], lines[2]]) + "\n")
    assert main(["compare", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "missing epoch(s) 2" in out and "epoch(s) 3 logged more than once" in out
    (tmp_path / "metrics.jsonl").write_text("\n".join(lines[:2]) + "\n")  # the last line lost
    assert main(["compare", str(tmp_path)]) == 0
    assert "missing epoch(s) 3" in capsys.readouterr().out


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_run_files_follow_the_umask(tmp_path: Path, umask: int) -> None:
    old = os.umask(umask)
    try:
        runs.write_json(tmp_path / "a.json", {"x": 1})
        runs.save_checkpoint(tmp_path / "c.pt", {"x": 1})
    finally:
        os.umask(old)
    for name in ("a.json", "c.pt"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask


def test_a_full_disk_keeps_the_old_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "last.pt"
    runs.save_checkpoint(path, {"epoch": 1})

    def full(obj: object, f: object) -> None:
        raise RuntimeError(
            "[enforce fail at inline_container.cc:672] . PytorchStreamWriter failed "
            "writing file data/0: file write failed"
        )

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunError, match="no space left on device.*previous checkpoint"):
        runs.save_checkpoint(path, {"epoch": 2})
    assert runs.load_checkpoint(path)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]


def test_evaluate_records_its_checkpoint_warns_when_unfinished_and_goes_stale(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tiny_config("train.epochs=1", f"data.cache_dir={tmp_path / 'cache'}")
    run = tmp_path / "run"
    fit(cfg, *tiny_data(cfg), run)
    (run / "results.json").unlink()  # as if killed before the end
    with caplog.at_level("WARNING"):
        assert main(["evaluate", str(run), "--protocol", "as_stored"]) == 0
    assert "has not finished" in caplog.text
    source = runs.read_json(run / "evaluate.json")["source"]
    best = run / "checkpoints" / "best.pt"
    assert source == {"checkpoint": "best", "epoch": 1, "sha256": runcheck.file_sha256(best)}
    assert runcheck.run_warnings(run, runs.read_jsonl(run / "metrics.jsonl")) == []
    runs.save_checkpoint(best, {**runs.load_checkpoint(best), "epoch": 7})  # a newer model
    assert runcheck.run_warnings(run, []) == [
        "evaluate.json: computed from an older checkpoint (stale; run it again)"
    ]
    capsys.readouterr()
    assert main(["compare", str(run)]) == 0
    assert "evaluate.json: computed from an older checkpoint" in capsys.readouterr().out


def test_recovery_accuracy_has_a_wilson_interval() -> None:
    cfg = tiny_config()
    model = VAE(cfg.model, cfg.data.res).eval()
    test = random_polycubes(8, 16)
    result = recover(model, test, 8, generator=torch.Generator().manual_seed(0))
    lo, hi = result["accuracy_ci"]
    k = result["n_correct"]
    assert (lo, hi) == pytest.approx(wilson_ci(k, 8)[1:])
    assert hi - lo > 0.2  # 8 objects can never give a zero-width 95% interval
    assert wilson_ci(8, 8)[1] < 0.7  # "1.000 [1.000, 1.000]" was the Student t answer


def test_fit_lets_the_folder_go_when_it_returns(tmp_path: Path) -> None:
    """A notebook or test that trains in-process must not keep the run locked: a
    resume by another process (torchrun, the CLI) would be refused."""
    cfg = tiny_config("train.epochs=1")
    fit(cfg, *tiny_data(cfg), tmp_path / "run")
    assert not lock.held(tmp_path / "run")
    assert not (tmp_path / "run" / lock.LOCK_NAME).exists()
    # a lock the caller took before stays with the caller
    lock.hold(tmp_path / "mine")
    try:
        fit(cfg, *tiny_data(cfg), tmp_path / "mine", force=True)
        assert lock.held(tmp_path / "mine")
    finally:
        lock.release(tmp_path / "mine")
