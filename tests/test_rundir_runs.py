"""Run-folder I/O: atomic writes, the metrics log, provenance, starting a run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from orient3d import runs
from orient3d.config import Config, apply_overrides
from orient3d.errors import RunError


def test_atomic_json_replaces_and_leaves_no_temp(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    runs.write_json(p, {"x": 1})
    runs.write_json(p, {"x": 2, "nan": float("nan")})
    assert runs.read_json(p)["x"] == 2
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]


def test_failed_write_keeps_the_old_file(tmp_path: Path) -> None:
    p = tmp_path / "a.json"
    runs.write_json(p, {"x": 1})
    with pytest.raises(TypeError):
        runs.write_json(p, {"x": object()})
    assert runs.read_json(p) == {"x": 1}
    assert [f.name for f in tmp_path.iterdir()] == ["a.json"]


def test_jsonl_append_truncate_and_torn_last_line(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    for e in (1, 2, 3):
        runs.append_jsonl(p, {"epoch": e, "v": e * 1.5})
    with open(p, "a") as f:
        f.write('{"epoch": 4, "v"')  # a write killed half-way
    assert [r["epoch"] for r in runs.read_jsonl(p)] == [1, 2, 3]
    kept = runs.truncate_jsonl(p, 2)
    assert kept == [{"epoch": 1, "v": 1.5}, {"epoch": 2, "v": 3.0}]
    assert runs.read_jsonl(p) == kept
    assert runs.read_jsonl(tmp_path / "missing.jsonl") == []


def test_corrupt_middle_line_is_an_error(tmp_path: Path) -> None:
    p = tmp_path / "m.jsonl"
    p.write_text('{"epoch": 1}\nnot json\n{"epoch": 3}\n')
    with pytest.raises(RunError, match="line 2"):
        runs.read_jsonl(p)


def test_checkpoint_roundtrip_and_errors(tmp_path: Path) -> None:
    p = tmp_path / "c" / "last.pt"
    runs.save_checkpoint(p, {"w": torch.arange(3), "epoch": 2})
    state = runs.load_checkpoint(p)
    assert state["epoch"] == 2 and torch.equal(state["w"], torch.arange(3))
    with pytest.raises(RunError, match="not found"):
        runs.load_checkpoint(tmp_path / "nope.pt")
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(RunError, match=r"bad\.pt"):
        runs.load_checkpoint(tmp_path / "bad.pt")


def test_meta_has_the_contract_keys() -> None:
    meta = runs.make_meta("orient3d train x", "cpu")
    want = {"version", "git_commit", "git_dirty", "time", "command", "python", "torch", "host"}
    assert want | {"device"} <= set(meta)
    assert meta["command"] == "orient3d train x" and meta["device"] == "cpu"
    json.dumps(meta)


def test_git_info_outside_a_repository(tmp_path: Path) -> None:
    assert runs.git_info(tmp_path) == ("unknown", None)


def test_prepare_new_run_refuses_non_empty_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "run"
    cfg = apply_overrides(Config(), ["train.epochs=3"])
    runs.prepare_new_run(out, cfg, {"time": "t"}, force=False)
    assert runs.read_run_config(out) == cfg
    assert (out / runs.CHECKPOINTS).is_dir()
    (out / "notes.txt").write_text("mine")
    runs.write_json(out / runs.RESULTS, {})
    with pytest.raises(RunError, match="not empty"):
        runs.prepare_new_run(out, Config(), {}, force=False)
    runs.prepare_new_run(out, Config(), {}, force=True)
    assert runs.read_run_config(out) == Config()
    assert not (out / runs.RESULTS).exists()
    assert (out / "notes.txt").read_text() == "mine"  # not a run file: kept


def test_read_run_config_of_a_non_run(tmp_path: Path) -> None:
    with pytest.raises(RunError, match="not a run folder"):
        runs.read_run_config(tmp_path)


def test_scalars_without_tensorboard_warn_once_naming_the_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    runs._warn_no_tensorboard.cache_clear()
    with caplog.at_level("WARNING", logger="orient3d.rundir.runs"):
        first = runs.Scalars(tmp_path / "a")
        runs.Scalars(tmp_path / "b")  # a second run in the same process: no repeat
        runs.Scalars(tmp_path / "c", enabled=False)  # not asked for: nothing to say
    runs._warn_no_tensorboard.cache_clear()
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "pip install -e '.[tensorboard]'" in warnings[0]
    first.add({"epoch": 1, "train_loss": 1.0})  # writes nothing, raises nothing
    first.close()
    assert first.writer is None and not (tmp_path / "a" / "tb").exists()


def test_scalars_with_tensorboard_write_events(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pytest.importorskip("tensorboard")
    with caplog.at_level("WARNING", logger="orient3d.rundir.runs"):
        s = runs.Scalars(tmp_path)
    s.add({"epoch": 1, "train_loss": 1.0, "search_active": True})
    s.close()
    assert not caplog.records and list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_note_resume_records_data_and_world_size_changes(tmp_path: Path) -> None:
    runs.write_json(tmp_path / "meta.json", {"world_size": 1, "data_fingerprint": "sha256:a"})
    runs.note_resume(tmp_path, 2, "same", "sha256:a", world=1)
    runs.note_resume(tmp_path, 3, "two processes", "sha256:b", world=2)
    runs.note_resume(tmp_path, 4, "unknown world", "sha256:b")
    meta = runs.read_json(tmp_path / "meta.json")
    first, second, third = meta["resumed"]
    assert "world_size_changed_from" not in first and "data_changed_from" not in first
    assert second["world_size_changed_from"] == 1 and second["data_changed_from"] == "sha256:a"
    assert "world_size_changed_from" not in third
    assert meta["world_size"] == 2 and meta["data_fingerprint"] == "sha256:b"
