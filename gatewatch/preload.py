"""Imports that a long-running ``serve`` pays at start rather than in the middle of the stream.

``behaviour_outlier`` imports scikit-learn when it scores its first window, that
is ``window_secs`` + ``allowed_lateness_secs`` into the stream (about 7 minutes by
default): ~1.5 s of CPU and ~130 MiB of resident memory (scikit-learn's and
SciPy's modules and shared libraries) arriving at once. The soak bench showed it
as an unexplained step of the detect process's RSS at minute 7 (bench/README.md);
a container memory limit sized on the first minutes would be crossed there.
``serve`` starts these imports in a thread at start: its memory is known from the
first minute, and the stream does not wait for them (a detector that needs the
module first waits on Python's import lock, as it would have imported it anyway).
``replay`` keeps the lazy import: a short run whose windows never close skips it.
"""

from __future__ import annotations

import importlib
import logging
import threading
from typing import Any

log = logging.getLogger(__name__)

# rule_id -> modules it imports on first use
HEAVY_IMPORTS: dict[str, tuple[str, ...]] = {"behaviour_outlier": ("sklearn.ensemble",)}


def _import_all(modules: list[str]) -> None:
    for module in modules:
        try:
            importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 - the detector's own import reports it where it matters
            log.warning("event=preload_failed module=%s error=%r", module, str(error))


def preload_detector_imports(config: Any) -> threading.Thread | None:
    """Start importing what the enabled detectors import lazily; the thread, or None if there is nothing to import."""
    modules = [
        module
        for rule_id, wanted in HEAVY_IMPORTS.items()
        if getattr(config.detectors, rule_id).enabled
        for module in wanted
    ]
    if not modules:
        return None
    thread = threading.Thread(target=_import_all, args=(modules,), name="preload-imports", daemon=True)
    thread.start()
    return thread
