"""Device, precision, threads and allocator settings shared by training and evaluation."""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Callable

import torch

from orient3d.allocator import tune_allocator  # re-exported: orient3d.devices.tune_allocator
from orient3d.errors import ConfigError

__all__ = [
    "autocast",
    "bf16_matmul_speedup",
    "bf16_pays",
    "check_precision",
    "native_bf16",
    "resolve_device",
    "resolve_precision",
    "set_threads",
    "tune_allocator",
]

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


_AUTO: tuple[tuple[str, Callable[[], bool]], ...] = (
    ("cuda", torch.cuda.is_available),
    ("mps", _mps_available),
    ("cpu", lambda: True),
)


def resolve_device(name: str) -> torch.device:
    """``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    if name == "auto":
        return torch.device(next(dev for dev, ok in _AUTO if ok()))
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(
            f"train.device: {name!r} is not a device (auto, cpu, cuda, mps)"
        ) from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"train.device: {name!r} requested but CUDA is not available")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(
                f"train.device: {name!r} requested but only "
                f"{torch.cuda.device_count()} CUDA device(s) exist"
            )
    elif device.type == "mps" and not _mps_available():
        raise ConfigError(f"train.device: {name!r} requested but MPS is not available")
    elif device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"train.device: {name!r} is not supported (auto, cpu, cuda, mps)")
    return device


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` computes in bf16 natively (CUDA with bf16; a CPU with
    AVX512-BF16 or AMX). Without it, CPU bf16 autocast is emulated and slower."""
    if device.type == "cuda":
        return bool(torch.cuda.is_bf16_supported())
    if device.type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


# bf16 autocast pays on a CPU when its bf16 matmul runs at least this many times fp32's.
# Measured (BENCHMARKS.md, "## Precision by machine kind" and "## Training"): an AMD
# EPYC with AVX512-BF16 ran bf16 matmuls at about 4× fp32 and trained 1.2–1.8× faster in
# bf16, scored poses 1.4–1.7× faster; an Intel Xeon with AVX512-BF16 and no AMX ran
# them at 0.56× and trained at 0.90× fp32. The flags alone do not tell the two apart.
BF16_MIN_SPEEDUP = 2.0


@functools.cache
def bf16_matmul_speedup(n: int = 512, rounds: int = 8) -> float:
    """This CPU's bf16 matmul throughput over fp32's (``n``², interleaved, best of
    ``rounds`` each), measured once per process in ~50 ms.

    Measured on one thread whatever the process's setting: the ratio is a property of
    the cores' instructions, and one thread does not wait on a sibling that other jobs
    have descheduled. At 2 threads on an AMD EPYC with its other core busy the ratio
    read 3.4–4.1 (once 1.99, which flipped ``auto``), on one thread 4.0–4.2."""
    a32 = torch.randn(n, n, generator=torch.Generator().manual_seed(0))
    a16 = a32.to(torch.bfloat16)
    best = {torch.float32: float("inf"), torch.bfloat16: float("inf")}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(rounds + 1):  # the first round warms up
            for a in (a32, a16):
                t0 = time.perf_counter()
                a @ a
                best[a.dtype] = min(best[a.dtype], time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    return best[torch.float32] / max(best[torch.bfloat16], 1e-9)


def bf16_pays(device: torch.device) -> bool:
    """Whether ``auto`` should compute in bf16 on ``device``: CUDA with bf16; a CPU with
    native bf16 (:func:`native_bf16`) whose bf16 matmul runs at least
    ``BF16_MIN_SPEEDUP`` times fp32's (:func:`bf16_matmul_speedup`: measured yes on
    an AMD EPYC, no on an Intel Xeon without AMX, although both have AVX512-BF16)."""
    if device.type == "cuda":
        return native_bf16(device)
    if device.type == "cpu" and native_bf16(device):
        return bf16_matmul_speedup() >= BF16_MIN_SPEEDUP
    return False


def resolve_precision(device: torch.device, precision: str) -> str:
    """``auto`` is bf16 where :func:`bf16_pays`, else fp32; others are returned as is.

    The choice is recorded in each run's meta (``precision``)."""
    if precision == "auto":
        return "bf16" if bf16_pays(device) else "fp32"
    return precision


def check_precision(device: torch.device, precision: str) -> None:
    """fp16 needs a GradScaler and is only supported on CUDA."""
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(
            f"train.precision: fp16 is supported on CUDA only, not on {device.type}; "
            "use bf16 (CPUs with native bf16, recent GPUs) or fp32"
        )
    if precision not in ("auto", "fp32", *_DTYPES):
        raise ConfigError(f"train.precision: {precision!r} is not one of auto, fp32, bf16, fp16")


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """The autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    precision = resolve_precision(device, precision)
    if precision == "fp32":
        return contextlib.nullcontext()
    check_precision(device, precision)
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def set_threads(n: int) -> None:
    """Set torch's intra-op CPU threads (0 leaves them as they are)."""
    if n > 0 and torch.get_num_threads() != n:
        torch.set_num_threads(n)
