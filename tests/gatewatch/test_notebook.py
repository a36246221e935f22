"""Analyst access to the embedded store as DataFrames (the search stores: tests/integration)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
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


@pytest.fixture
def small_store(tmp_path: Path) -> Path:
    from detectors.sample import T0, gateway_event
    from ingest.sinks.base import Batch
    from ingest.sinks.duckdb import DuckDBSink

    path = tmp_path / "s.duckdb"
    sink = DuckDBSink(path)
    # 2026-03-29 00:00-01:00 UTC is 01:00-03:00 in Berlin (the DST change): 10 events, one every 10 minutes.
    start = 1_774_742_400.0 - T0
    sink.write(Batch(events=[gateway_event(start - 1800 + 600 * i, request_id=f"r{i}") for i in range(10)]))
    sink.close()
    return path


def test_times_are_utc_whatever_the_notebook_time_zone(small_store: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        store = open_store(f"duckdb:{small_store}")
        window = store.events(start="2026-03-29T00:00:00", end="2026-03-29T01:00:00")  # no offset: UTC
        assert list(window["request_id"]) == ["r3", "r4", "r5", "r6", "r7", "r8"]
        assert str(window["ts"].dt.tz) == "UTC"
        assert window["ts"].iloc[0].isoformat() == "2026-03-29T00:00:00+00:00"
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_store_another_process_writes_is_a_clear_error(small_store: Path) -> None:
    import subprocess
    import sys

    from gatewatch.errors import StoreError

    writer = subprocess.Popen(
        [sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(small_store)!r}); print('open', flush=True); "
         "time.sleep(60)"], stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert writer.stdout is not None and writer.stdout.readline() == "open\n"
        with pytest.raises(StoreError, match="open for writing in another process"):
            open_store(f"duckdb:{small_store}").alerts()
    finally:
        writer.kill()
        writer.wait()
        assert writer.stdout is not None
        writer.stdout.close()
    assert open_store(f"duckdb:{small_store}").alerts().empty


def test_a_time_range_on_duckdb_dead_letters_is_refused_not_ignored(small_store: Path) -> None:
    with pytest.raises(ConfigError, match="carry no time"):
        open_store(f"duckdb:{small_store}").dead_letters(start="2030-01-01T00:00:00Z")


def test_a_time_bound_is_read_the_same_way_for_every_store() -> None:
    # An analyst's trial: an integer start was refused by DuckDB and read as epoch milliseconds (1970) by
    # Elasticsearch, and "2026-03-02 09:00:00" (a space) was answered 400 by the search stores only.
    from datetime import datetime

    from gatewatch.notebook import time_bound

    same = ["2026-03-02T09:00:00Z", "2026-03-02 09:00:00", "2026-03-02T04:00:00-05:00", datetime(2026, 3, 2, 9),
            pd.Timestamp("2026-03-02T10:00:00+01:00")]  # fmt: skip
    assert {time_bound(value) for value in same} == {"2026-03-02T09:00:00.000Z"}
    assert time_bound("2026-03-02T09:00:00.0004Z") == "2026-03-02T09:00:00.001Z"  # stored times are milliseconds
    # A review: these worked before (on one store or both) and were refused or misread.
    from datetime import date

    import numpy as np

    assert time_bound(date(2026, 3, 2)) == "2026-03-02T00:00:00.000Z"
    assert time_bound(np.datetime64("2026-03-02T09:00:00.123456")) == "2026-03-02T09:00:00.124Z"
    assert time_bound("0001-01-01") == "0001-01-01T00:00:00.000Z"  # padded: "1-01-01" was a 400 on a search store
    assert time_bound(datetime.max) == "9999-12-31T23:59:59.999Z"
    now = pd.Timestamp.now(tz="UTC")
    assert abs(pd.Timestamp(time_bound("now")) - now) < pd.Timedelta(seconds=5)  # UTC, whatever the local zone
    assert abs(pd.Timestamp(time_bound("now-1h")) - (now - pd.Timedelta(hours=1))) < pd.Timedelta(seconds=5)
    assert time_bound("today") == now.normalize().isoformat(timespec="milliseconds").replace("+00:00", "Z")
    assert time_bound("9999-12-31T23:59:59.999999-01:00") == "9999-12-31T23:59:59.999Z"  # past 9999 in UTC
    assert time_bound(np.datetime64("20000-01-01")) == "9999-12-31T23:59:59.999Z"
    assert time_bound(pd.Timestamp.max) == "2262-04-11T23:47:16.854Z"
    for wrong in (1772442000, 1772442000.0, "yesterday-ish", "now-1M", "now/d", "now-1y", "", pd.NaT):
        with pytest.raises(ConfigError, match="start/end"):
            time_bound(wrong)


def test_readable_shows_control_and_bidi_characters_as_escapes_and_leaves_the_frame_alone() -> None:
    # An analyst's trial: the notebook's tables drew a client's U+202E (text after it reversed) and ESC raw.
    from gatewatch.notebook import readable

    frame = pd.DataFrame({"entity_value": ["x\u202eevil", "<b>", None], "requests": [1, 2, 3]},
                         index=["ip\x1b[31m", "b", "c"])  # fmt: skip
    frame["entity_value"] = frame["entity_value"].astype("string")
    shown = readable(frame)
    assert list(shown["entity_value"].fillna("-")) == ["x\\u202eevil", "<b>", "-"]
    assert list(shown.index) == ["ip\\x1b[31m", "b", "c"] and shown["entity_value"].dtype == "string"
    assert "\u202e" not in shown.to_html() and "&lt;b&gt;" in shown.to_html()
    assert frame.loc["ip\x1b[31m", "entity_value"] == "x\u202eevil"  # the queried frame keeps the stored text
