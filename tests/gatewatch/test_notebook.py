"""Analyst access to the embedded store as DataFrames (the search stores: tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewatch.cli import main
from gatewatch.demo.files import write_demo
from gatewatch.errors import ConfigError
from gatewatch.notebook import open_store


def test_duckdb_store_as_dataframes(tmp_path: Path) -> None:
    files = write_demo(tmp_path / "logs", seed=3, duration_secs=600.0, requests_per_sec=4.0)
    store_path = tmp_path / "s.duckdb"
    assert main([
        "replay", "--config", str(files.config_yaml), "--gateway", str(files.gateway_log), "--app",
        str(files.app_log), "--alerts-out", str(tmp_path / "a.ndjson"), "--store", f"duckdb:{store_path}",
    ]) == 0  # fmt: skip
    store = open_store(f"duckdb:{store_path}")
    alerts = store.alerts()
    assert len(alerts) > 0 and alerts["first_seen"].is_monotonic_increasing
    assert set(alerts["rule"]) >= {"gateway_bypass", "token_replay"}
    bypass = store.transactions(where="kind = 'app_only'")
    assert len(bypass) > 0 and set(bypass["kind"]) == {"app_only"}
    window = store.events(start="2026-03-02T09:01:00Z", end="2026-03-02T09:02:00Z")
    assert len(window) > 0
    assert window["ts"].min().isoformat() >= "2026-03-02T09:01:00"
    assert window["ts"].max().isoformat() < "2026-03-02T09:02:00"
    assert len(store.dead_letters()) == 6


def test_unknown_store_or_kind_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="duckdb:PATH"):
        open_store("postgres:x")
    with pytest.raises(ConfigError, match="not one of"):
        open_store(f"duckdb:{tmp_path / 'x.duckdb'}").query("logs")
