"""What a benchmark ran on: the CPU, its SIMD flags that matter to torch, the load."""

from __future__ import annotations

import os
import platform
import re
from pathlib import Path

_SIMD = re.compile(r"^(avx2|avx512f|avx512_bf16|amx_bf16|amx_tile|amx_int8|avx_vnni)$")


def cpu_flags(wanted: re.Pattern[str] = _SIMD) -> tuple[str, str]:
    """The CPU's model name and its flags that match ``wanted`` (default: avx2, avx512f,
    avx512_bf16, amx_*, avx_vnni), from /proc/cpuinfo."""
    model, flags = platform.processor() or platform.machine(), set[str]()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    except OSError:
        pass
    return model, " ".join(sorted(f for f in flags if wanted.match(f))) or "none of those"


def load_average() -> float:
    """The 1-minute load average (nan where the system does not say)."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def machine_line() -> str:
    """One line: CPU, flags, CPUs and load; every benchmark prints it and writes it."""
    model, flags = cpu_flags()
    return (
        f"{model} ({platform.machine()}), flags: {flags}; {os.cpu_count()} CPUs, "
        f"load average {load_average():.1f}"
    )
