"""JSON and JSON-lines files of a run folder: atomic writes, and the one reader of each.

Writes go to a temporary file that is fsynced and renamed over the target, so a
reader never sees half a file; JSON-lines records are appended and fsynced one by
one, and a reader skips an unfinished last line.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from orient3d.errors import RunError
from orient3d.rundir import lock

__all__ = [
    "append_jsonl",
    "atomic_open",
    "read_json",
    "read_jsonl",
    "truncate_jsonl",
    "write_json",
    "write_text",
]

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _atomic(path: Path, mode: str = "w") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; on success fsync and rename it over ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, lock.file_mode())  # mkstemp makes 0600; a run's files follow the umask
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


atomic_open = _atomic  # (a public name for writers outside run folders)


def write_text(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with _atomic(Path(path)) as f:
        f.write(text)


def write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def read_json(path: str | Path) -> Any:
    """The JSON document in ``path``; a RunError names the file and what is wrong."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RunError(f"{p}: not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(f"{p}: cannot read: {err}") from err
    except json.JSONDecodeError as err:
        raise RunError(f"{p}: invalid JSON at line {err.lineno}: {err.msg}") from None


def append_jsonl(path: str | Path, record: dict[str, Any]) -> None:
    """Append one JSON line and fsync it."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records (JSON objects, one per line) of a JSON-lines file; a missing file has none.

    An unfinished last line (a run still writing, or a write killed half-way) is
    skipped with a warning; any other broken line is a RunError naming its line.
    """
    p = Path(path)
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return []
    except (OSError, UnicodeDecodeError) as err:
        raise RunError(f"{p}: cannot read: {err}") from err
    rows: list[dict[str, Any]] = []
    numbered = [(i + 1, s) for i, s in enumerate(lines) if s.strip()]
    for k, (lineno, line) in enumerate(numbered):
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if k == len(numbered) - 1:
                log.warning("%s:%d: skipping an unfinished last line", p, lineno)
                continue
            raise RunError(f"{p}:{lineno}: invalid JSON (line {lineno}): {err.msg}") from None
        if not isinstance(row, dict):
            raise RunError(f"{p}:{lineno}: expected a JSON object per line")
        rows.append(row)
    return rows


def truncate_jsonl(path: str | Path, epoch: int) -> list[dict[str, Any]]:
    """Keep the records with ``record["epoch"] <= epoch`` (atomically); return them."""
    kept = [r for r in read_jsonl(path) if int(r["epoch"]) <= epoch]
    write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
    return kept
