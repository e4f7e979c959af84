"""glibc's malloc, told to keep the memory a training step frees instead of handing it back to the kernel.

A training step allocates its activations (many tensors of 0.1-30 MB at the cpu scale) in the forward pass and
frees them in the backward. With glibc's defaults the freed top of the heap is returned to the kernel once it
exceeds the trim threshold (at most 64 MB, adapted at run time), so the next step faults every page in again:
~15,000 minor page faults and ~30 ms of system time a step, ~10% of the step's CPU time (float32, AVX2). A fixed
mmap threshold at glibc's 64-bit ceiling (32 MB) and a trim threshold of 2 GB keep those pages in the process:
no fault in the step. The process keeps its peak memory, which a training process reaches anyway every step.

glibc reads its tunables from the environment at start-up, too late for an entry point; ``mallopt`` sets the same
values at run time, for every allocation after it. Results do not change (only where memory comes from). The
pip-installable alternatives (jemalloc, tcmalloc via LD_PRELOAD) need the process restarted and a binary of the
platform's; this needs neither.

Skipped where the C library is not glibc (macOS, musl), where the user set glibc's own tunables
(``MALLOC_TRIM_THRESHOLD_``, ``MALLOC_MMAP_THRESHOLD_``, ``GLIBC_TUNABLES``), or with ``BAGOF_MALLOC=default``."""

from __future__ import annotations

import ctypes
import os
import sys

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
MMAP_THRESHOLD = 32 * 1024 * 1024  # glibc's ceiling on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX); a larger value is refused
TRIM_THRESHOLD = 2**31 - 1  # mallopt takes an int: 2 GB
_done: bool | None = None


def keep_freed_memory() -> bool:
    """Sets the thresholds once per process; whether they are set."""
    global _done
    if _done is not None:
        return _done
    _done = False
    if not sys.platform.startswith("linux") or os.environ.get("BAGOF_MALLOC") == "default":
        return False
    if any(
        os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_")
    ) or "malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False  # the user's own tuning wins
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    _done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    return _done
