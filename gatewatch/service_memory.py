"""Memory of a long-running ``serve``: its allocator tuned so freed memory goes back.

glibc's allocator kept freed memory: its mmap threshold rises to the largest
block freed (up to 32 MiB; a checkpoint's encoded state is ~20 MiB), after which
such blocks come from the heap, whose free space it trims only past twice that.
Free-but-kept heap grew from 35 to 100 MiB over 8 minutes in the soak bench
(bench/README.md). :func:`tune_malloc` fixes the threshold (blocks of 1 MiB and
more are mapped and unmapped on their own), trims past 4 MiB and caps the arenas
at 2 (threads hold the GIL anyway): free-but-kept heap stayed at 8-15 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os

# mallopt(3) parameters, each with the environment variable glibc reads for it: an operator's
# value there wins over ours.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MALLOC_SETTINGS: dict[str, tuple[int, int]] = {
    "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, 1 << 20),
    "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, 4 << 20),
    "MALLOC_ARENA_MAX": (_M_ARENA_MAX, 2),
}


def tune_malloc() -> dict[str, int]:
    """Apply :data:`MALLOC_SETTINGS` through glibc's ``mallopt``; the ones applied (none off glibc).

    Call it early, before the threads start: the arena cap binds arenas created after it.
    """
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl, macOS): their allocators behave otherwise
        return {}
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    applied: dict[str, int] = {}
    for variable, (param, value) in MALLOC_SETTINGS.items():
        if variable not in os.environ and mallopt(param, value) == 1:
            applied[variable] = value
    return applied
