"""One writer per folder: an advisory ``flock`` on ``FOLDER/.lock``.

A process that writes a run or experiment folder first takes the folder's lock
(:func:`hold`) and keeps it until it ends or releases it; a second process is
refused with a :class:`~orient3d.errors.RunError` naming the holder's PID and
command. The kernel drops a ``flock`` when its holder dies (even by ``kill -9``),
so a lock left by a dead process is simply taken over; the PID written in the
file serves the error message only. A clean release (or exit) removes the
file while still holding the lock; a process that locked the removed file
notices (another inode at the path) and locks the new one.

Within one process the lock of a folder is taken once and shared (``hold`` is
idempotent); :func:`scope` releases what was taken inside a block, which is how
a worker process that trains several runs one after another lets each go.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from orient3d.errors import RunError

__all__ = ["LOCK_NAME", "held", "hold", "holder", "release", "scope"]

LOCK_NAME = ".lock"

_HELD: dict[Path, int] = {}  # resolved folder -> the open, locked file descriptor


def _key(folder: str | Path) -> Path:
    return Path(folder).resolve()


def file_mode() -> int:
    """``0o666`` less this process's umask (what ``open`` would give a new file)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return 0o666 & ~int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # (no /proc: read it by setting it, then put it back)
    os.umask(mask)
    return 0o666 & ~mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(folder: str | Path) -> str:
    """Who the lock file says holds ``folder``: ``"process PID (command) since TIME"``."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(errors="replace").splitlines()
    except OSError:
        return "another process"
    fields = dict(line.split("=", 1) for line in text if "=" in line)
    pid = fields.get("pid", "?")
    what = f"process {pid}"
    if fields.get("command"):
        what += f" ({fields['command']})"
    if fields.get("since"):
        what += f" since {fields['since']}"
    if pid.isdigit() and not _alive(int(pid)):
        what += ", now ended (a child process it started still holds the lock)"
    return what


def _open(folder: Path) -> int:
    if folder.exists() and not folder.is_dir():
        raise RunError(f"{folder}: exists and is not a folder")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        return os.open(folder / LOCK_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, file_mode())
    except PermissionError:
        raise RunError(f"{folder}: cannot write here (permission denied)") from None
    except OSError as err:
        raise RunError(f"{folder}: cannot write here ({err.strerror})") from None


def hold(folder: str | Path, command: str | None = None) -> None:
    """Take ``folder``'s lock for this process (creating the folder); RunError if taken.

    Idempotent within a process. The lock lasts until :func:`release`, the end of
    an enclosing :func:`scope`, or the end of the process.
    """
    key = _key(folder)
    if key in _HELD:
        return
    for _ in range(20):
        fd = _open(key)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            os.close(fd)
            if err.errno not in (errno.EWOULDBLOCK, errno.EACCES, errno.EAGAIN):
                raise RunError(f"{folder}: cannot lock {LOCK_NAME}: {err.strerror}") from None
            raise RunError(
                f"{folder}: in use by {holder(key)}; wait for it to finish or stop it"
            ) from None
        if _same_file(fd, key / LOCK_NAME):
            break
        os.close(fd)  # its holder released (and removed) it meanwhile: take the new one
    else:
        raise RunError(f"{folder}: cannot lock {LOCK_NAME}: it keeps being replaced")
    cmd = command if command is not None else " ".join(sys.argv)
    since = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid={os.getpid()}\nsince={since}\ncommand={cmd}\n".encode(), 0)
    _HELD[key] = fd


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def held(folder: str | Path) -> bool:
    """Whether this process holds ``folder``'s lock."""
    return _key(folder) in _HELD


def release(folder: str | Path) -> None:
    """Let ``folder``'s lock go (nothing if this process does not hold it)."""
    key = _key(folder)
    fd = _HELD.pop(key, None)
    if fd is not None:
        with contextlib.suppress(OSError):  # removed while still locked (see hold)
            os.unlink(key / LOCK_NAME)
        os.close(fd)  # closing the only descriptor drops the flock


@atexit.register
def _release_all() -> None:
    for key in list(_HELD):
        release(key)


@contextlib.contextmanager
def scope() -> Iterator[None]:
    """Release, on exit, every lock taken inside the block (those held before stay)."""
    before = set(_HELD)
    try:
        yield
    finally:
        for key in [k for k in _HELD if k not in before]:
            release(key)
