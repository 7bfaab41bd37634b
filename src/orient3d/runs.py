"""Run-folder I/O: atomic writes, the metrics log, provenance and checkpoints.

A run folder (see ``train``) holds ``config.toml``, ``meta.json``,
``metrics.jsonl``, ``results.json``, ``checkpoints/{last,best}.pt`` and ``tb/``.
Every whole-file write here is atomic: a temporary file in the same folder,
flushed and fsynced, then ``os.replace``d over the target, so a run killed at any
moment leaves either the old file or the new one, never half of one.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import torch

from orient3d import __version__
from orient3d.config import Config, dumps, load_config, to_dict
from orient3d.errors import RunError

__all__ = [
    "CONFIG",
    "META",
    "METRICS",
    "RESULTS",
    "RUNTIME_KEYS",
    "Scalars",
    "append_jsonl",
    "check_same_config",
    "checkpoint_path",
    "clear_run",
    "git_info",
    "load_checkpoint",
    "make_meta",
    "prepare_new_run",
    "read_json",
    "read_jsonl",
    "read_run_config",
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


@contextlib.contextmanager
def _atomic(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with _atomic(Path(path)) as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def read_json(path: str | Path) -> Any:
    p = Path(path)
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise RunError(f"{p}: not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise RunError(f"{p}: not valid JSON: {err}") from None


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file; a torn last line (a killed write) is dropped."""
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_text().splitlines()
    out = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            if i == len(lines) - 1:
                break
            raise RunError(f"{p}: line {i + 1} is not valid JSON") from None
    return out


def truncate_jsonl(path: str | Path, epoch: int) -> list[dict[str, Any]]:
    """Keep the records with ``record["epoch"] <= epoch`` (atomically); return them."""
    kept = [r for r in read_jsonl(path) if int(r["epoch"]) <= epoch]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """``torch.save`` ``state`` to ``path`` atomically."""
    with _atomic(Path(path), "wb") as f:
        torch.save(state, f)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
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


# Keys that may differ between a run's config.toml and a resume of it (they
# change how fast a run goes, not its numbers; train.device: a parallel sweep may
# resume a run on another card, cuda:1 instead of cuda:0).
RUNTIME_KEYS = ("train.threads", "train.progress", "train.eval_batch_size", "train.device")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def check_same_config(saved: Config, cfg: Config) -> None:
    """Refuse to resume a run with a config that changes its numbers (a RunError naming keys)."""
    a, b = _flat(to_dict(saved)), _flat(to_dict(cfg))
    diff = sorted(k for k in a.keys() | b.keys() if k not in RUNTIME_KEYS and a.get(k) != b.get(k))
    if diff:
        raise RunError(f"cannot resume with a different config; changed: {', '.join(diff)}")


def read_run_config(run: str | Path) -> Config:
    """The resolved config a run was started with (``RUN/config.toml``)."""
    p = Path(run) / CONFIG
    if not p.exists():
        raise RunError(f"{run}: not a run folder (no {CONFIG})")
    return load_config(p)


class Scalars:
    """TensorBoard events in ``RUN/tb`` (a no-op when tensorboard is not installed).

    Steps after ``start_epoch`` are purged, so a resumed run does not show the
    epochs it redoes twice.
    """

    def __init__(self, run: str | Path, start_epoch: int = 0, enabled: bool = True) -> None:
        self.writer: Any = None
        if not enabled:  # (the ranks other than 0 of a distributed run)
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
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


def prepare_new_run(out: str | Path, cfg: Config, meta: dict[str, Any], force: bool) -> None:
    """Create ``out`` for a fresh run and write its config and meta.

    A non-empty ``out`` is refused (it may hold a run) unless ``force``, which
    first removes the files a run writes.
    """
    p = Path(out)
    if p.exists() and not p.is_dir():
        raise RunError(f"{p}: exists and is not a folder")
    if p.is_dir() and any(p.iterdir()):
        if not force:
            raise RunError(
                f"{p}: folder is not empty; resume it with --resume, pick another --out, "
                "or pass --force to overwrite"
            )
        clear_run(p)
    (p / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    write_text(p / CONFIG, dumps(cfg))
    write_json(p / META, meta)
