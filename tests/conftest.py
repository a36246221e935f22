"""Fixtures shared across test folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewatch.cli import main

# Ten minutes at 8 req/s holds every incident at full size and runs in seconds (tests/test_replay_end_to_end.py).
DEMO_ARGS = ["--minutes", "10", "--rate", "8", "--seed", "7"]


@pytest.fixture(scope="session")
def demo_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One ``gatewatch demo`` run (logs, config, DuckDB store, alerts, report.html), shared by the
    notebook, report and search-store tests."""
    out = tmp_path_factory.mktemp("demo")
    assert main(["demo", "--out", str(out), *DEMO_ARGS]) == 0
    return out
