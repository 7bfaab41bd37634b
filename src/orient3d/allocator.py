"""glibc allocator settings, applied at start-up before any large tensor exists.

Kept apart from :mod:`orient3d.devices` so that the command line can apply them
without importing torch (``orient3d --help`` stays fast).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

__all__ = ["tune_allocator"]

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def tune_allocator() -> bool:
    """Keep freed memory in glibc's heap instead of unmapping it.

    The same as starting with ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647``:
    large tensors stop being mapped and unmapped on every step (millions of page
    faults at 32³). Returns whether it was applied (glibc on Linux only).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    ok = bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2147483647))
    log.debug("allocator tuning %s", "applied" if ok else "failed")
    return ok
