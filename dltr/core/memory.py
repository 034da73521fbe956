"""Process memory settings for the workers that run forward passes.

glibc's malloc serves a block above its mmap threshold (128 KiB at start, raised as such blocks are freed) with
``mmap`` and hands memory at the top of a heap back to the system once more than its trim threshold is free. A
forward pass allocates and frees its activation buffers (megabytes each) on every call, so a freshly started process
faults them in again every time: about 1,000 minor page faults and 3-4 ms of system time per resnet10 forward of 8
volumes on a 32 x 32 x 16 grid (2026-12-03, 2 cores: 2.04-2.26 ms a volume, against 1.68-1.78 with the settings
below). A process whose heap has already grown (a benchmark's driver) does not pay it; a new Ray actor does.

:func:`retain_freed_memory` fixes both thresholds, so that freed buffers stay in the process and the next call
reuses them. The price is resident memory: it stays at the peak of the working set instead of shrinking between
calls. No arithmetic changes (the same kernels on the same values; where a buffer lies in memory is all that
moves)."""

from __future__ import annotations

import ctypes
import sys

M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest mmap threshold glibc accepts on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX)
TRIM_THRESHOLD = 2**30


def retain_freed_memory() -> bool:
    """Keep freed heap memory in this process (blocks up to 32 MiB from the heap, trimmed only above 1 GiB free).

    Returns whether glibc accepted both settings; elsewhere (macOS, musl) nothing changes and it returns False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) & bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
