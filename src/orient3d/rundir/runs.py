"""Run-folder I/O: atomic writes, the metrics log, provenance and checkpoints.

A run folder (see ``train``) holds ``config.toml``, ``meta.json``,
``metrics.jsonl``, ``results.json``, ``checkpoints/{last,best}.pt`` and ``tb/``.
Every whole-file write here is atomic: a temporary file in the same folder,
flushed and fsynced, then ``os.replace``d over the target, so a run killed at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import datetime as _dt
import errno
import functools
import hashlib
import json
import logging
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orient3d import __version__
from orient3d.config import RUNTIME_KEYS, Config, config_differences, dumps, load_config
from orient3d.errors import RunError
from orient3d.rundir import lock
from orient3d.rundir.jsonio import (
    _atomic,
    append_jsonl,
    read_json,
    read_jsonl,
    truncate_jsonl,
    write_json,
    write_text,
)
from orient3d.rundir.runcheck import epoch_problems, file_sha256

if TYPE_CHECKING:  # torch is imported where a checkpoint is read or written
    import torch

log = logging.getLogger(__name__)

__all__ = [
    "CONFIG",
    "META",
    "METRICS",
    "RESULTS",
    "RUNTIME_KEYS",
    "Scalars",
    "append_jsonl",
    "check_data_fingerprint",
    "check_new_run",
    "check_same_config",
    "checkpoint_path",
    "checkpoint_source",
    "clear_run",
    "data_fingerprint",
    "git_info",
    "load_checkpoint",
    "lock_run",
    "make_meta",
    "note_resume",
    "prepare_new_run",
    "read_json",
    "read_jsonl",
    "read_run_config",
    "restore_metrics",
    "save_checkpoint",
    "truncate_jsonl",
    "write_json",
    "write_text",
]

CONFIG, META, METRICS, RESULTS = "config.toml", "meta.json", "metrics.jsonl", "results.json"
CHECKPOINTS = "checkpoints"
# What a run writes (and --force removes); other files in the folder are left alone.
RUN_FILES = (
    CONFIG,
    META,
    METRICS,
    RESULTS,
    "evaluate.json",
    "recover.json",
    "report.html",
    CHECKPOINTS,
    "tb",
    "figures",
)


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically; a full disk is a RunError.

    A failed write leaves the previous file at ``path`` as it was."""
    import torch

    p = Path(path)
    try:
        with _atomic(p, "wb") as f:
            torch.save(state, f)
    except (OSError, RuntimeError) as err:
        full = getattr(err, "errno", None) == errno.ENOSPC or "write failed" in str(err)
        if not full and not isinstance(err, OSError):
            raise
        why = "no space left on device" if full else (getattr(err, "strerror", None) or str(err))
        try:
            free = f" ({shutil.disk_usage(p.parent).free / 2**20:.0f} MiB free)"
        except OSError:
            free = ""
        kept = "; the previous checkpoint there is kept" if p.exists() else ""
        raise RunError(f"{p}: cannot write the checkpoint: {why}{free}{kept}") from None


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    import torch

    p = Path(path)
    if not p.exists():
        raise RunError(f"{p}: checkpoint not found")
    try:
        state = torch.load(p, map_location=device, weights_only=False)
    except Exception as err:  # a corrupt file: name it
        raise RunError(f"{p}: cannot read checkpoint: {err}") from err
    return dict(state)


def checkpoint_path(run: str | Path, which: str = "last") -> Path:
    return Path(run) / CHECKPOINTS / f"{which}.pt"


def check_same_config(saved: Config, cfg: Config) -> None:
    """Refuse to resume a run with a config that changes its numbers (a RunError naming keys)."""
    diff = config_differences(saved, cfg)
    if diff:
        raise RunError(f"cannot resume with a different config; changed: {', '.join(diff)}")


def read_run_config(run: str | Path) -> Config:
    """The resolved config a run was started with (``RUN/config.toml``)."""
    p = Path(run) / CONFIG
    if not p.exists():
        raise RunError(f"{run}: not a run folder (no {CONFIG})")
    return load_config(p)


@functools.cache
def _warn_no_tensorboard() -> None:
    """Say once per process that the TensorBoard events are not written, and the fix."""
    log.warning(
        "tensorboard is not installed: no TensorBoard events in RUN/tb (metrics.jsonl "
        "has every number). Install it with: pip install -e '.[tensorboard]'"
    )


class Scalars:
    """TensorBoard events in ``RUN/tb``.

    Without the tensorboard package it writes nothing and says so once per process
    (a warning naming what to install). Steps after ``start_epoch`` are purged, so a
    resumed run does not show the epochs it redoes twice.
    """

    def __init__(self, run: str | Path, start_epoch: int = 0, enabled: bool = True) -> None:
        self.writer: Any = None
        if not enabled:  # (the ranks other than 0 of a distributed run)
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            _warn_no_tensorboard()
            return
        self.writer = SummaryWriter(log_dir=str(Path(run) / "tb"), purge_step=start_epoch + 1)

    def add(self, record: dict[str, Any]) -> None:
        """Every numeric value of one metrics.jsonl record, at step ``record["epoch"]``."""
        if self.writer is None:
            return
        for key, value in record.items():
            if key != "epoch" and isinstance(value, int | float) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, record["epoch"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


# ----------------------------------------------------------------------------
# Provenance


def _git(cwd: Path, *args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def git_info(where: str | Path | None = None) -> tuple[str, bool | None]:
    """``(commit, dirty)`` of the orient3d checkout holding this package, or ``("unknown", None)``.

    A checkout counts only if its top level has orient3d's pyproject.toml, so an
    installed copy inside some other repository (a venv in a project) is not
    credited with that project's commit. ``dirty``: tracked files have changes.
    """
    cwd = Path(where) if where is not None else Path(__file__).resolve().parent
    top = _git(cwd, "rev-parse", "--show-toplevel")
    pyproject = Path(top or ".") / "pyproject.toml"
    if top is None or not pyproject.is_file() or 'name = "orient3d"' not in pyproject.read_text():
        return "unknown", None
    commit = _git(cwd, "rev-parse", "HEAD")
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return commit or "unknown", None if status is None else bool(status)


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def make_meta(command: str | None, device: str) -> dict[str, Any]:
    """The provenance written to ``RUN/meta.json``."""
    import torch

    commit, dirty = git_info()
    return {
        "version": __version__,
        "git_commit": commit,
        "git_dirty": dirty,
        "time": now(),
        "command": command if command is not None else " ".join(sys.argv),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host": platform.node(),
        "device": device,
    }


# ----------------------------------------------------------------------------
# Starting a run folder


def clear_run(out: str | Path) -> None:
    """Remove what a run writes (``RUN_FILES``) from ``out``; leave anything else."""
    for name in RUN_FILES:
        p = Path(out) / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()


def check_new_run(out: str | Path, force: bool) -> bool:
    """Whether ``out`` holds files to clear for a new run; RunError if it may not be used.

    A non-empty folder is refused unless ``force``; an experiment folder always."""
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise RunError(f"{p}: exists and is not a folder")
    if not p.is_dir() or all(f.name == lock.LOCK_NAME for f in p.iterdir()):
        return False
    if (p / "experiment.json").exists():
        raise RunError(f"{p}: holds an experiment, not a run; pick another --out")
    if not force:
        raise RunError(
            f"{p}: folder is not empty; resume it with --resume, pick another --out, "
            "or pass --force to overwrite"
        )
    return True


def prepare_new_run(out: str | Path, cfg: Config, meta: dict[str, Any], force: bool) -> None:
    """Create ``out`` for a fresh run and write its config and meta.

    A non-empty ``out`` is refused (it may hold a run) unless ``force``, which
    first removes the files a run writes.
    """
    p = Path(out)
    if check_new_run(p, force):
        clear_run(p)
    (p / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    write_text(p / CONFIG, dumps(cfg))
    write_json(p / META, meta)


# ----------------------------------------------------------------------------
# One writer, the same data, a complete log


def lock_run(out: str | Path, command: str | None = None, create: bool = True) -> None:
    """Take ``out``'s writer lock for this process (:func:`orient3d.rundir.lock.hold`).

    ``create=False`` (a resume): a missing ``out`` is a RunError, not a new folder."""
    if not create and not Path(out).is_dir():
        raise RunError(f"{out}: not a run folder (no such folder)")
    lock.hold(out, command)


def data_fingerprint(*sets: Any) -> str:
    """``sha256:`` of the uint8 grids and labels of ``sets`` (VoxelSets), in order."""
    import torch

    h = hashlib.sha256()
    for vs in sets:
        vox = vs.voxels.to(torch.uint8).contiguous().cpu()
        h.update(f"{tuple(vox.shape)}|".encode())
        h.update(vox.numpy().tobytes())
        h.update(vs.labels.to(torch.int64).contiguous().cpu().numpy().tobytes())
    return "sha256:" + h.hexdigest()


def check_data_fingerprint(out: str | Path, fingerprint: str, allow_change: bool) -> bool:
    """Whether the data of a resume differs from the run's (``meta.json``); refuse unless allowed.

    A run without a recorded fingerprint (older versions) is taken as is.
    """
    saved = read_json(Path(out) / META).get("data_fingerprint")
    if not saved or not fingerprint or saved == fingerprint:
        return False
    if not allow_change:
        raise RunError(
            f"{out}: the training/test data differ from those the run started with "
            f"(fingerprint {saved[:19]}…, now {fingerprint[:19]}…); resuming would mix "
            "them. Restore the data, or pass --allow-data-change to continue anyway"
        )
    log.warning("%s: the data changed since the run started; continuing on the new data", out)
    return True


def note_resume(
    out: str | Path,
    epoch: int,
    command: str | None,
    fingerprint: str = "",
    world: int | None = None,
) -> None:
    """Append this resume to ``meta.json``: a data change, with the new fingerprint, and
    a change of the number of processes ``world`` (``world_size_changed_from``)."""
    meta = read_json(Path(out) / META)
    entry: dict[str, Any] = {"time": now(), "epoch": epoch, "command": command}
    old_world = meta.get("world_size")
    if world is not None and old_world is not None and old_world != world:
        entry["world_size_changed_from"] = old_world
        meta["world_size"] = world
    old = meta.get("data_fingerprint")
    if fingerprint and old != fingerprint:
        if old:
            entry["data_changed_from"] = old
        meta["data_fingerprint"] = fingerprint
    meta.setdefault("resumed", []).append(entry)
    write_json(Path(out) / META, meta)


def restore_metrics(
    path: str | Path, epoch: int, saved: list[dict[str, Any]] | None
) -> list[dict[str, Any]]:
    """Make the log hold exactly epochs ``1..epoch``, once each (a resume from ``epoch``).

    Later epochs are dropped. ``saved``: the records kept in the checkpoint; when
    given, a log with gaps or repeats is rewritten from them exactly; without
    them such a log is a RunError (its lost lines cannot be rebuilt). Returns
    the records kept.
    """
    kept = [r for r in read_jsonl(path) if int(r["epoch"]) <= epoch]
    want = [r for r in (saved or []) if int(r["epoch"]) <= epoch]
    problems = epoch_problems(kept)
    if [int(r["epoch"]) for r in kept] != list(range(1, epoch + 1)) and not problems:
        problems = [f"epochs not in order 1..{epoch}"]
    if problems and len(want) == epoch and not epoch_problems(want):
        log.warning("%s: %s; rewritten from the checkpoint", path, "; ".join(problems))
        kept = want
    elif problems:
        raise RunError(
            f"{path}: {'; '.join(problems)}, and the checkpoint holds no copy of the log "
            "(made by an older version); restore the file or start again with --force"
        )
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def checkpoint_source(run: str | Path) -> dict[str, Any]:
    """The checkpoint ``evaluate``/``recover`` use (best, else last): name, epoch, sha256.

    Logs a warning when the run has not finished (no results.json)."""
    for which in ("best", "last"):
        p = checkpoint_path(run, which)
        if p.exists():
            epoch = load_checkpoint(p).get("epoch")
            if not (Path(run) / RESULTS).exists():
                log.warning(
                    "%s: the run has not finished (no %s); using its %s checkpoint of "
                    "epoch %s. Finish it with: orient3d train --resume %s",
                    run,
                    RESULTS,
                    which,
                    epoch,
                    run,
                )
            return {"checkpoint": which, "epoch": epoch, "sha256": file_sha256(p)}
    return {}
