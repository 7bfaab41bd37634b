"""Running an experiment's training runs: resume, reuse, and parallel workers.

Each run lives in ``DIR/runs/<name>``. Before training, a run folder is in one of
three states (:func:`run_state`):

- ``done``: ``results.json`` exists: skipped, its results are read back;
- ``resume``: a checkpoint exists but no results: ``train(..., resume=True)``;
- ``new``: nothing usable yet: ``train(..., resume=False)``.

A finished or interrupted run whose ``config.toml`` differs from the one asked for
is an error naming the differing keys (never silently mixed). A run may instead be
taken from another experiment folder (``reuse``) when it has finished there with
the same name and config. With ``workers > 1`` independent runs train side by side
in spawned processes with one torch thread each (on CPUs two one-thread
processes beat one two-thread process); every run draws only from its own seed,
so its numbers are those of the same run trained alone with one torch thread
(``train.threads=1``; other thread counts change float sums in the last bits).
Workers end with the process that started them (even after ``kill -9``), and
each run's folder is locked while it trains (:mod:`orient3d.rundir.lock`).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import TypeVar

from orient3d.config import RUNTIME_KEYS, Config, config_differences
from orient3d.errors import RunError

log = logging.getLogger(__name__)

__all__ = [
    "Progress",
    "config_differences",
    "parallel_map",
    "reusable_run",
    "run_state",
    "shared_pool",
]

Progress = Callable[[str, int, int], None]  # (message, done, total)
T = TypeVar("T")
R = TypeVar("R")

# Keys that change how fast a run goes, not what it computes (one list: config.RUNTIME_KEYS).
IGNORED_KEYS = frozenset(RUNTIME_KEYS)


def _stored_config(path: Path) -> Config | None:
    from orient3d.rundir.runs import read_run_config

    if not (path / "config.toml").is_file():
        return None
    return read_run_config(path)


def run_state(path: Path, cfg: Config) -> str:
    """``"done"``, ``"resume"`` or ``"new"`` (see the module docstring)."""
    done = (path / "results.json").is_file()
    ckpt = (path / "checkpoints" / "last.pt").is_file()
    stored = _stored_config(path)
    if stored is not None and (done or ckpt):
        diff = config_differences(stored, cfg)
        if diff:
            raise RunError(
                f"{path}: this run was made with a different config ({', '.join(diff)}); "
                "pick another --out or remove the run folder"
            )
    if done:
        return "done"
    return "resume" if ckpt and stored is not None else "new"


def reusable_run(name: str, cfg: Config, folders: Sequence[Path]) -> Path | None:
    """A finished run ``<folder>/runs/<name>`` with the same config, if any folder has one."""
    for folder in folders:
        path = Path(folder) / "runs" / name
        if not (path / "results.json").is_file():
            continue
        stored = _stored_config(path)
        if stored is not None and not config_differences(stored, cfg):
            return path
        log.info("not reusing %s: its config differs", path)
    return None


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """End this process when ``parent`` ends, even by ``kill -9`` (no orphan keeps training).

    On Linux the kernel sends SIGKILL when the parent dies (``PR_SET_PDEATHSIG``);
    a watchdog thread also checks every second that the parent is still ours
    (other systems, and a parent that died before the prctl took effect).
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()


def _init_worker(threads: int, parent: int | None = None) -> None:
    if parent is not None:
        _die_with_parent(parent)
    import torch

    torch.set_num_threads(threads)


def _in_scope(fn: Callable[[T], R], item: T) -> R:
    """``fn(item)``, then let go of the folder locks it took (a worker trains runs in turn)."""
    from orient3d.rundir import lock

    with lock.scope():
        return fn(item)


_SHARED: dict[int, ProcessPoolExecutor] = {}  # workers -> the pool of a shared_pool block


def _new_pool(workers: int) -> ProcessPoolExecutor:
    """``workers`` spawned one-thread processes with the tuned allocator."""
    env = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "2147483647"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update({k: os.environ.get(k, v) for k, v in env.items()})  # children inherit
    try:
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_init_worker, initargs=(1, os.getpid())
        )
        for fut in [pool.submit(int) for _ in range(workers)]:  # start them all while the
            fut.result()  # environment is set (spawned processes start on demand)
        return pool
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def shared_pool(workers: int) -> Iterator[None]:
    """Within the block, :func:`parallel_map` with these ``workers`` reuses one pool.

    Starting processes that import torch costs seconds; a sweep of several
    experiments (the demo) pays it once.
    """
    if workers <= 1 or workers in _SHARED:
        yield
        return
    _SHARED[workers] = pool = _new_pool(workers)
    try:
        yield
    finally:
        del _SHARED[workers]
        pool.shutdown(wait=True, cancel_futures=True)


def parallel_map(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    workers: int = 1,
    labels: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> list[R]:
    """``[fn(x) for x in items]``, in spawned processes when ``workers > 1``.

    ``fn`` must be a module-level function (picklable). Results keep the order of
    ``items``. The first failure cancels the pending items and is raised.
    """
    labels = list(labels) if labels is not None else [str(i) for i in range(len(items))]
    total = len(items)
    if workers <= 1 or total <= 1:
        out = []
        for i, item in enumerate(items):
            try:
                out.append(_in_scope(fn, item))
            except Exception as err:
                log.error("%s failed: %s", labels[i], err)
                raise
            if progress is not None:
                progress(labels[i], i + 1, total)
        return out
    if workers in _SHARED:
        return _pool_map(_SHARED[workers], fn, items, labels, progress)
    pool = _new_pool(min(workers, total))
    try:
        return _pool_map(pool, fn, items, labels, progress)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _pool_map(
    pool: ProcessPoolExecutor,
    fn: Callable[[T], R],
    items: Sequence[T],
    labels: list[str],
    progress: Progress | None,
) -> list[R]:
    results: dict[int, R] = {}
    futures: dict[Future[R], int] = {pool.submit(_in_scope, fn, x): i for i, x in enumerate(items)}
    pending = set(futures)
    while pending:
        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
        for fut in finished:
            i = futures[fut]
            err = fut.exception()
            if err is not None:
                log.error("%s failed: %s", labels[i], err)
                for p in pending:
                    p.cancel()
                wait(pending)  # let the running ones finish before raising
                raise err
            results[i] = fut.result()
            if progress is not None:
                progress(labels[i], len(results), len(items))
    return [results[i] for i in range(len(items))]
