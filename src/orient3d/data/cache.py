"""An on-disk cache of datasets, keyed by the parameters that made them.

Files live in :func:`default_cache_dir` (``$ORIENT3D_CACHE``, else
``~/.cache/orient3d``) unless a folder is given. Each entry is one ``.npz``
written atomically (a temporary file in the same folder, flushed and fsynced,
then ``os.replace``), so a crash never leaves a half-written entry under the
real name. An entry that cannot be read back (truncated, corrupt, wrong format
version) is logged, deleted and rebuilt, never crashed on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from orient3d.data.voxelset import VoxelSet

__all__ = ["FORMAT", "cache_path", "cached", "default_cache_dir", "read_entry", "write_entry"]

log = logging.getLogger(__name__)

FORMAT = 1  # bump when the entry layout or any generator's output changes


def default_cache_dir() -> Path:
    """``$ORIENT3D_CACHE`` if set, else ``~/.cache/orient3d``."""
    env = os.environ.get("ORIENT3D_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "orient3d"


def cache_path(params: dict[str, Any], cache_dir: str | Path | None = None) -> Path:
    """The entry file for ``params`` (a JSON-serializable dict)."""
    text = json.dumps({"format": FORMAT, **params}, sort_keys=True, default=str)
    key = hashlib.sha256(text.encode()).hexdigest()[:20]
    kind = str(params.get("kind", "data"))
    return Path(cache_dir or default_cache_dir()) / f"{kind}-{key}.npz"


def write_entry(vs: VoxelSet, path: Path) -> None:
    """Write ``vs`` to ``path`` atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    vox = vs.voxels.numpy()
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez(
                fh,
                format=np.array(FORMAT),
                shape=np.array(vox.shape),
                packed=np.packbits(vox.reshape(-1)),
                labels=vs.labels.numpy(),
                class_names=np.array(vs.class_names, dtype=str),
                ids=np.array(vs.ids, dtype=str),
                stabilizers=vs.stabilizers.numpy(),
                source=np.array(vs.source),
            )
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_entry(path: Path) -> VoxelSet:
    """Read an entry; raises on anything wrong with it."""
    with np.load(path, allow_pickle=False) as z:
        if int(z["format"]) != FORMAT:
            raise ValueError(f"format {int(z['format'])} != {FORMAT}")
        shape = tuple(int(s) for s in z["shape"])
        count = int(np.prod(shape))
        vox = np.unpackbits(z["packed"], count=count).reshape(shape)
        return VoxelSet(
            voxels=torch.from_numpy(vox),
            labels=torch.from_numpy(z["labels"].astype(np.int64)),
            class_names=tuple(str(c) for c in z["class_names"]),
            ids=tuple(str(i) for i in z["ids"]),
            stabilizers=torch.from_numpy(z["stabilizers"].astype(bool)),
            source=str(z["source"]),
        )


def cached(
    params: dict[str, Any], build: Callable[[], VoxelSet], cache_dir: str | Path | None = None
) -> VoxelSet:
    """The VoxelSet for ``params`` from the cache, or ``build()`` and store it.

    ``build`` runs to completion before anything is written, so a failing build
    leaves no entry behind.
    """
    path = cache_path(params, cache_dir)
    if path.is_file():
        try:
            vs = read_entry(path)
            log.debug("cache hit %s", path)
            return vs
        except Exception as err:  # any damage means: rebuild
            log.warning("cache entry %s is unreadable (%s); rebuilding it", path, err)
            path.unlink(missing_ok=True)
    vs = build()
    try:
        write_entry(vs, path)
        log.debug("cached %s", path)
    except OSError as err:
        log.warning("could not write cache entry %s (%s)", path, err)
    return vs
