"""Memory of a long-running ``serve``: known from the first minutes, and flat after them.

Two things made the detect process's RSS climb long after start in the soak bench
(bench/README.md), neither of them state:

- ``behaviour_outlier`` imports scikit-learn when it scores its first window, that
  is ``window_secs`` + ``allowed_lateness_secs`` into the stream (about 7 minutes by
  default): ~1.5 s of CPU and ~130 MiB of modules and shared libraries at once. A
  container memory limit sized on the first minutes would be crossed there.
  :func:`preload_detector_imports` imports them in a thread one minute after start:
  the stream does not wait (a detector that needs the module first waits on
  Python's import lock, as it would have imported it anyway), a restarted replica
  catches up on its backlog first, and a short-lived process (the tests start
  dozens) skips them. ``replay`` keeps the lazy import: a short run whose windows
  never close skips it.
- glibc's allocator kept freed memory: its mmap threshold rises to the largest
  block freed (up to 32 MiB; a checkpoint's encoded state is ~20 MiB), after which
  such blocks come from the heap, whose free space it trims only past twice that.
  Free-but-kept heap grew from 35 to 100 MiB over 8 minutes. :func:`tune_malloc`
  fixes the threshold (blocks of 1 MiB and more are mapped and unmapped on their
  own), trims past 4 MiB and caps the arenas at 2 (threads hold the GIL anyway):
  free-but-kept heap stayed at 8-15 MiB.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import importlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig

log = logging.getLogger(__name__)

# rule_id -> modules it imports on first use
HEAVY_IMPORTS: dict[str, tuple[str, ...]] = {"behaviour_outlier": ("sklearn.ensemble",)}
PRELOAD_DELAY_SECS = 60.0  # well before the first window can close (300 s + lateness by default)

# mallopt(3) parameters, each with the environment variable glibc reads for it: an operator's
# value there wins over ours.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8
MALLOC_SETTINGS: dict[str, tuple[int, int]] = {
    "MALLOC_MMAP_THRESHOLD_": (_M_MMAP_THRESHOLD, 1 << 20),
    "MALLOC_TRIM_THRESHOLD_": (_M_TRIM_THRESHOLD, 4 << 20),
    "MALLOC_ARENA_MAX": (_M_ARENA_MAX, 2),
}


def _import_all(modules: list[str], delay_secs: float) -> None:
    time.sleep(delay_secs)
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - the detector's own import reports it where it matters
            log.warning("event=preload_failed module=%s error=%r", module, str(error))


def preload_detector_imports(config: GatewatchConfig, delay_secs: float = PRELOAD_DELAY_SECS) -> threading.Thread | None:
    """Import what the enabled detectors import lazily, in a thread, after ``delay_secs``.

    Returns the thread, or None if there is nothing to import.
    """
    modules = [
        module
        for rule_id, wanted in HEAVY_IMPORTS.items()
        if getattr(config.detectors, rule_id).enabled
        for module in wanted
    ]
    if not modules:
        return None
    thread = threading.Thread(target=_import_all, args=(modules, delay_secs), name="preload-imports", daemon=True)
    thread.start()
    return thread


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
