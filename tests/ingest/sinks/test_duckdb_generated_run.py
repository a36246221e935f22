"""The DuckDB store over a generated run: every transaction row says what its Transaction's properties say."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from gatewatch.config import load_config
from gatewatch.demo.files import write_demo
from gatewatch.replay import replay
from ingest.sinks.duckdb import DuckDBSink
from ingest.testing import MemorySink

FIRSTS = ("method", "path", "route_name", "user_id", "org_id", "token_jti", "token_sub")


def test_a_generated_runs_transactions_store_what_their_properties_say(tmp_path: Path) -> None:
    # The sink writes the properties out its own way (one walk, a path of its own for the usual
    # one attempt and one app line): a real run's shapes, retries and missing sides included,
    # must store exactly what the analyst's definition (the properties) returns (times to the
    # microsecond, TIMESTAMPTZ's precision).
    files = write_demo(tmp_path / "logs", seed=3, duration_secs=600.0, requests_per_sec=8.0)
    memory = MemorySink()
    sink = DuckDBSink(tmp_path / "s.duckdb")
    replay(load_config(files.config_yaml), [files.gateway_log], [files.app_log], [memory, sink])
    sink.close()
    con = duckdb.connect(str(tmp_path / "s.duckdb"), read_only=True)
    stored = {row[0]: row[1:] for row in con.execute(
        "select id, request_id, kind, epoch(first_ts), epoch(last_ts), gateway_attempts, app_records, client_ip,"
        f" {', '.join(FIRSTS)}, gateway_status, app_status, event_ids from transactions"
    ).fetchall()}  # fmt: skip
    shapes = {(len(t.gateway), len(t.app)) for t in memory.transactions.values()}
    assert {(1, 1), (1, 0)} <= shapes and any(g + a > 2 for g, a in shapes)
    assert stored.keys() == memory.transactions.keys()
    for txn_id, txn in memory.transactions.items():
        assert stored[txn_id] == (
            txn.request_id, txn.kind, pytest.approx(txn.first_ts, abs=1e-6), pytest.approx(txn.last_ts, abs=1e-6), len(txn.gateway), len(txn.app), txn.client_ip,
            *(txn.first(name) for name in FIRSTS), txn.gateway_status, txn.app_status,
            [e.id for e in txn.gateway + txn.app],
        ), txn_id
