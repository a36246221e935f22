"""The data sets ``bench_replay.py`` generates and caches in ``bench/.data``, found by format (stdlib only:
benches that run another tree's gatewatch import this before any of it)."""

from __future__ import annotations

import sys
from pathlib import Path

DATA = Path(__file__).resolve().parent / ".data"


def data_folder(fmt: str) -> Path:
    """The first cached data set of ``fmt`` (``json`` or ``text``); exits saying how to make one if none is."""
    folder = next(iter(sorted(DATA.glob(f"{fmt}-seed*"))), None)
    if folder is None:
        sys.exit(f"no {fmt} data in {DATA}: run bench/bench_replay.py first")
    return folder
