"""Peak memory of this process, and the CPU cores it may run on."""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import resource
import sys
from pathlib import Path


def release_freed_memory() -> None:
    """Hand the heap's freed memory back to the system (glibc's ``malloc_trim``; nothing
    elsewhere): what building a model allocated and freed stays resident otherwise, and later
    allocations reuse it without raising the resident size, hiding their growth from a peak."""
    with contextlib.suppress(OSError, AttributeError):  # AttributeError: not glibc
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim(0)


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process to what it holds in use now (freed
    memory released first, ``release_freed_memory``); Linux, False where unsupported."""
    release_freed_memory()
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_mib() -> float:
    """Peak resident set size in MiB (since the last reset on Linux, else since start)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity; all of the machine's where the
    system does not say)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1
