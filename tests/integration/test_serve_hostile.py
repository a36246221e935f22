"""``gatewatch serve`` over hostile values: nothing aborts, every record is stored once, and the
alerts equal a replay of the same lines (values out of range, a record from the far future,
control characters and markup in a path)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pytest
from kafka import KafkaProducer
from test_serve import (  # noqa: F401 (topics is a fixture)
    T0,
    Line,
    Serve,
    Topics,
    _app,
    build_traffic,
    replay_alerts,
    stored_alerts,
    stored_origins,
    topics,
    wait_for,
)

from gatewatch.config import load_config
from gatewatch.topology import build_parsers, parse_records
from ingest.records import Dataset, Origin, RawRecord, record_id
from ingest.redact_key import origin_key
from ingest.sources.kafka import ORIGIN_HEADER, ORIGIN_SEAL_HEADER, origin_seal


def _hostile(at: float, rid: str, **changes: object) -> Line:
    record = orjson.loads(_app(at, rid, "/v1/invoices", 200).value)
    record.update(changes)
    return Line("app", at, rid.encode(), orjson.dumps(record))  # produced in order at `at`, whatever it says


def hostile_lines() -> list[Line]:
    return [
        _hostile(T0 + 10.001, "h-status", status=3_000_000_000),
        _hostile(T0 + 11.001, "h-exp", token={"jti": "j-1", "sub": "u-1", "exp": 1e300, "iat": 1e300},
                 peer={"ip": "10.9.9.9"}),  # fmt: skip
        _hostile(T0 + 12.001, "h-ts", ts=1e300),
        _hostile(T0 + 13.001, "h-9999", ts="9999-12-31T23:59:59Z"),
        _hostile(T0 + 14.001, "h-month", ts="2026-04-01T09:00:14Z"),  # inside 2000..2100: held as far-future
        _hostile(T0 + 15.001, "h-latency", latency_ms=2e19),
        _hostile(T0 + 16.001, "h-path", path="/v1/\x1b[2J\x1b[31mPWNED\r\n[/x]", peer={"ip": "10.9.9.9"}),
    ]


def _events_in(config: Path, lines: list[Line]) -> int:
    parsers = build_parsers(load_config(config))
    records = [
        RawRecord(Origin(Dataset.GATEWAY if line.side == "gateway" else Dataset.APP, "x", n), line.value)
        for n, line in enumerate(lines)
    ]
    events, _ = parse_records(parsers, records)
    return len(events)


def test_serve_stores_hostile_records_once_and_alerts_as_replay(topics: Topics, tmp_path: Path) -> None:
    lines = sorted(build_traffic(400) + hostile_lines(), key=lambda line: line.ts)
    topics.produce(lines)
    config = topics.config(tmp_path)
    store = tmp_path / "store.duckdb"
    serve = Serve(config, store, tmp_path / "serve.log")
    wait_for(lambda: serve.metric("component_received_events_total") >= len(lines), 60, "every record", serve)
    wait_for(topics.all_committed, 60, "every offset committed", serve)
    events = _events_in(config, lines)
    wait_for(lambda: serve.metric("gatewatch_detect_events_total") >= events, 60, "detection to see every event", serve)
    assert serve.stop() == 0, serve.output()
    assert "Traceback" not in serve.output()
    assert stored_origins(store) == topics.expected_origins()  # every record exactly once
    alerts = stored_alerts(store)
    assert alerts == replay_alerts(config, lines, tmp_path)
    assert any(entity == "10.9.9.9" for _, _, _, entity, *_ in alerts)


def test_serve_reads_batches_in_every_kafka_compression(topics: Topics, tmp_path: Path) -> None:
    # A shipper trial: a topic with compression.type=lz4 (or a Fluent Bit producer compressing) stopped all
    # ingest, spinning on "Libraries for lz4 compression codec not found". Kafka has these four codecs.
    lines = sorted(build_traffic(200), key=lambda line: line.ts)
    codecs = ["gzip", "snappy", "lz4", "zstd"]
    for n, codec in enumerate(codecs):
        topics.produce(lines[n::len(codecs)], compression=codec)
    config = topics.config(tmp_path)
    store = tmp_path / "store.duckdb"
    serve = Serve(config, store, tmp_path / "serve.log")
    wait_for(lambda: serve.metric("component_received_events_total") >= len(lines), 60, "every record", serve)
    wait_for(topics.all_committed, 60, "every offset committed", serve)
    assert serve.stop() == 0, serve.output()
    assert "poll_failed" not in serve.output()
    assert stored_origins(store) == topics.expected_origins()  # every record exactly once


def test_a_gatewatch_origin_header_another_producer_set_cannot_take_a_records_id(
    topics: Topics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any producer to an input topic can set ``gatewatch-origin``. Taken as it was, a benign-looking record
    claiming a followed file's next line took that line's id: the store then kept one of the two (DuckDB the
    first, a search node the last), and the evidence of the bypass from 10.9.9.8 was gone. Only a header
    gatewatch sealed is taken."""
    key = b"shared-redact-key"
    monkeypatch.setenv("GATEWATCH_REDACT_KEY", key.decode())
    sealing = origin_key(load_config(None).redact)  # what serve seals with: derived from the redaction key
    assert sealing is not None and sealing != key
    lines = sorted(build_traffic(200), key=lambda line: line.ts)
    topics.produce(lines)
    app_topic = topics.names["app"]
    origin = b"file:00ab:5"
    at = lines[-1].ts + 1.0
    decoy = _hostile(at, "r-decoy", path="/healthz")  # from the gateway's peer, allowlisted: no alert
    genuine = _hostile(at + 0.5, "r-bypass", peer={"ip": "10.9.9.8"})
    producer = KafkaProducer(bootstrap_servers=topics.bootstrap)
    try:
        for line, headers in (
            (decoy, [(ORIGIN_HEADER, origin)]),
            (genuine, [(ORIGIN_HEADER, origin),
                       (ORIGIN_SEAL_HEADER, origin_seal(sealing, app_topic, origin, genuine.value))]),
        ):
            producer.send(app_topic, value=line.value, key=line.key, headers=headers, partition=0).get(timeout=10)
    finally:
        producer.close()
    config = topics.config(tmp_path)
    store = tmp_path / "store.duckdb"
    serve = Serve(config, store, tmp_path / "serve.log")
    total = len(lines) + 2
    wait_for(lambda: serve.metric("component_received_events_total") >= total, 60, "every record", serve)
    wait_for(topics.all_committed, 60, "every offset committed", serve)
    events = _events_in(config, lines) + 2
    wait_for(lambda: serve.metric("gatewatch_detect_events_total") >= events, 60, "detection to see every event", serve)
    assert serve.stop() == 0, serve.output()
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute("SELECT id, request_id FROM events WHERE request_id LIKE 'r-%'").fetchall()
    assert dict(rows)[record_id(Origin(Dataset.APP, "file:00ab", 5))] == "r-bypass"
    assert len(rows) == 2  # the decoy too, under its Kafka origin's id
    assert "10.9.9.8" in {alert[3] for alert in stored_alerts(store)}
    assert "event=origin_unsealed records=1" in serve.output()
