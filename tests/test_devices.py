"""Device and precision choice, and the allocator tuning (glibc mallopt)."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import orient3d
from orient3d import allocator
from orient3d.devices import (
    bf16_matmul_speedup,
    bf16_pays,
    native_bf16,
    resolve_device,
    resolve_precision,
    tune_allocator,
)
from orient3d.errors import ConfigError


def test_device_and_precision_resolution() -> None:
    cpu = torch.device("cpu")
    assert resolve_device("cpu") == cpu
    mps = getattr(torch.backends, "mps", None)
    want = "cuda" if torch.cuda.is_available() else "mps" if mps and mps.is_available() else "cpu"
    assert resolve_device("auto").type == want
    for bad in ("tpu", "meta"):
        with pytest.raises(ConfigError, match="train.device"):
            resolve_device(bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda:0")
    assert resolve_precision(cpu, "auto") == ("bf16" if bf16_pays(cpu) else "fp32")
    assert resolve_precision(cpu, "bf16") == "bf16"


class _FakeMallopt:
    """Records ``mallopt(param, value)`` calls and returns ``ret`` (glibc: 1 is success)."""

    def __init__(self, ret: int) -> None:
        self.ret = ret
        self.calls: list[tuple[int, int]] = []

    def __call__(self, param: int, value: int) -> int:
        self.calls.append((param, value))
        return self.ret


class _FakeLibc:
    def __init__(self, ret: int) -> None:
        self.mallopt = _FakeMallopt(ret)


def _fake_cdll(monkeypatch: pytest.MonkeyPatch, libc: Any) -> None:
    def cdll(name: str) -> Any:
        if isinstance(libc, Exception):
            raise libc
        return libc

    monkeypatch.setattr(allocator.sys, "platform", "linux")
    monkeypatch.setattr(ctypes, "CDLL", cdll)


def test_tune_allocator_sets_the_two_mallopt_parameters(monkeypatch: pytest.MonkeyPatch) -> None:
    libc = _FakeLibc(ret=1)
    _fake_cdll(monkeypatch, libc)
    assert tune_allocator() is True
    # malloc.h: M_MMAP_MAX = -4 (no mmap'd chunks), M_TRIM_THRESHOLD = -1 (never trim)
    assert libc.mallopt.calls == [(-4, 0), (-1, 2147483647)]


def test_tune_allocator_reports_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    refused = _FakeLibc(ret=0)  # mallopt returns 0 on error
    _fake_cdll(monkeypatch, refused)
    assert tune_allocator() is False
    assert refused.mallopt.calls == [(-4, 0)]  # the second is not tried after a failure
    _fake_cdll(monkeypatch, OSError("no libc"))
    assert tune_allocator() is False
    _fake_cdll(monkeypatch, object())  # a C library without mallopt (not glibc)
    assert tune_allocator() is False


def test_tune_allocator_does_nothing_off_linux(monkeypatch: pytest.MonkeyPatch) -> None:
    def cdll(name: str) -> Any:
        raise AssertionError("loaded a C library off Linux")

    monkeypatch.setattr(allocator.sys, "platform", "darwin")
    monkeypatch.setattr(ctypes, "CDLL", cdll)
    assert tune_allocator() is False


# In a fresh process: glibc serves a 64 MiB malloc from its own mmap (above the largest
# dynamic mmap threshold, 32 MiB) unless M_MMAP_MAX is 0; mallinfo2().hblks counts them.
_PROBE = """
import ctypes, ctypes.util, sys
from orient3d.devices import tune_allocator

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
if not hasattr(libc, "mallinfo2"):
    print("no mallinfo2")
    sys.exit(0)

class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "arena ordblks smblks hblks hblkhd usmblks "
                "fsmblks uordblks fordblks keepcost".split()]

libc.mallinfo2.restype = Info
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, [ctypes.c_size_t]
libc.free.argtypes = [ctypes.c_void_p]

def mapped_by_a_large_malloc():
    before = libc.mallinfo2().hblks
    p = libc.malloc(64 << 20)
    n = libc.mallinfo2().hblks - before
    libc.free(p)
    return n

print(mapped_by_a_large_malloc(), tune_allocator(), mapped_by_a_large_malloc())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux only")
def test_tune_allocator_keeps_large_allocations_in_the_heap() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    src = str(Path(orient3d.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    if proc.stdout.strip() == "no mallinfo2":
        pytest.skip("the C library has no mallinfo2 (not glibc >= 2.33)")
    assert proc.stdout.split() == ["1", "True", "0"]


def test_bf16_pays_only_where_native_and_its_matmul_is_twice_fp32s(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from orient3d import devices

    cpu = torch.device("cpu")
    bf16_matmul_speedup.cache_clear()
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        speed = bf16_matmul_speedup()  # on one thread, and the setting is restored
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    assert 0 < speed < float("inf") and bf16_matmul_speedup() == speed  # measured once
    assert bf16_pays(cpu) == (native_bf16(cpu) and speed >= devices.BF16_MIN_SPEEDUP)
    for native, ratio, want in [(True, 4.1, True), (True, 0.56, False), (False, 9.0, False)]:
        monkeypatch.setattr(devices, "native_bf16", lambda device, n=native: n)
        monkeypatch.setattr(devices, "bf16_matmul_speedup", lambda r=ratio: r)
        assert bf16_pays(cpu) is want
    assert not bf16_pays(torch.device("meta"))
