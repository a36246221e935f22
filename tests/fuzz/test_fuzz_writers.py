"""The store writers over hostile records: a whole replay of mutated logs into DuckDB and NDJSON
stores every record once (as an event or a dead letter) and writes every alert, whatever the values."""

from __future__ import annotations

import os
from pathlib import Path

import duckdb
import orjson
import pytest
from conftest import FUZZ_COUNTS
from hostile_records import hostile_records

from gatewatch.config import load_config
from gatewatch.demo.files import write_demo
from gatewatch.replay import replay
from ingest.records import Dataset
from ingest.sinks.duckdb import DuckDBSink
from ingest.sinks.ndjson import AlertFile, DeadLetterFile

RECORDS_PER_LOG = int(os.environ.get("GATEWATCH_FUZZ_RECORDS", "100000")) // 2


def _hostile_log(source: Path, target: Path, dataset: Dataset, is_json: bool, seed: int) -> int:
    """Write ``RECORDS_PER_LOG`` mutated lines of ``source`` to ``target``; return how many lines a reader sees."""
    lines = source.read_bytes().splitlines(keepends=True)
    data = b"".join(
        record.line if record.line.endswith(b"\n") else record.line + b"\n"
        for record in hostile_records(lines, dataset, RECORDS_PER_LOG, seed, is_json, "w")
    )
    target.write_bytes(data)
    return data.count(b"\n")  # a mutation may have put a line break inside a record: the reader splits there


def test_a_replay_of_hostile_logs_stores_every_record_once(tmp_path: Path) -> None:
    files = write_demo(tmp_path / "demo", seed=9, duration_secs=600.0, requests_per_sec=4.0)
    gateway, app = tmp_path / "gateway.log", tmp_path / "app.log"
    lines = _hostile_log(files.gateway_log, gateway, Dataset.GATEWAY, False, 1)
    lines += _hostile_log(files.app_log, app, Dataset.APP, True, 2)
    store = tmp_path / "store.duckdb"
    alerts, dead = AlertFile(tmp_path / "alerts.ndjson"), DeadLetterFile(tmp_path / "dead.ndjson")
    sinks = [DuckDBSink(store), alerts, dead]
    try:
        stats = replay(load_config(files.config_yaml), [gateway], [app], sinks)
    finally:
        for sink in sinks:
            sink.close()
    assert stats.records_in == lines == stats.events + stats.dead_letters
    con = duckdb.connect(str(store), read_only=True)
    events, distinct = con.sql("select count(*), count(distinct id) from events").fetchall()[0]
    stored_dead = con.sql("select count(*) from dead_letters").fetchall()[0][0]
    stored_alerts = con.sql("select count(*) from alerts").fetchall()[0][0]
    transactions = con.sql("select count(*) from transactions").fetchall()[0][0]
    con.close()
    assert events == distinct == stats.events and stored_dead == stats.dead_letters
    assert events + stored_dead == lines
    assert transactions == stats.transactions > 0
    dead_lines = (tmp_path / "dead.ndjson").read_bytes().splitlines()
    assert len(dead_lines) == stored_dead
    written = [orjson.loads(line) for line in (tmp_path / "alerts.ndjson").read_bytes().splitlines()]
    assert len(written) == stored_alerts > 0
    for alert in written:
        assert not any(c < " " or "\x7f" <= c <= "\x9f" for c in alert["summary"])
    FUZZ_COUNTS["replay -> DuckDB + NDJSON"] = (lines, events, stored_dead)
