"""Keeping glibc's allocator from handing memory back to the kernel after every step.

A training step allocates and frees the same few-megabyte tensors thousands of times. glibc
serves blocks that large with mmap and gives them back with munmap (and trims the heap top
after frees), so every step faults its pages in again: on the 2-core reference machine that
was 2.8 million page faults and ~13 % of the wall time of one `digits` epoch (45.3 s against
39.5 s with the thresholds raised). Raising the mmap and trim thresholds keeps the freed
blocks for reuse. Peak memory is unchanged; the process just stops returning it early.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

M_TRIM_THRESHOLD = -1  # from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_MAX = 32 * 2**20  # the largest value glibc accepts on 64-bit machines
TRIM_THRESHOLD = 1 * 2**30


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process. Returns whether they were set:
    False off glibc, or when the user tunes malloc through the environment (theirs wins)."""
    if not sys.platform.startswith("linux") or any(k.startswith("MALLOC_") or k == "GLIBC_TUNABLES" for k in os.environ):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
