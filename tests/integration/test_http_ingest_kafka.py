"""HTTP ingest end to end: a client posting exactly what Fluent Bit's ``http`` output sends,
a real Kafka broker and ``gatewatch serve`` run as the CLI runs it.

Fluent Bit (plugins/out_http/http.c) posts ``format json`` as one JSON array of
records and ``format json_lines`` as one record a line, each record its map with
the time under ``date`` (a double) first; ``Content-Type`` application/json or
application/x-ndjson, ``User-Agent: Fluent-Bit``, ``Content-Encoding: gzip``
with ``compress gzip``, and the token through its ``header`` option.
"""

from __future__ import annotations

import gzip
import hashlib
import secrets
import time
from collections import Counter
from pathlib import Path

import duckdb
import httpx
import orjson
import pytest
import yaml
from kafka import KafkaConsumer
from test_serve import (  # noqa: F401 (topics: a fixture)
    T0,
    Line,
    Serve,
    Topics,
    _app,
    _gateway,
    build_traffic,
    replay_alerts,
    stored_alerts,
    topics,
    wait_for,
)

from ingest.records import Dataset, Origin, record_id

TOKENS = {"gateway": secrets.token_urlsafe(24), "app": secrets.token_urlsafe(24)}
BATCH_RECORDS = 100
REQUESTS = 400
TAILS_PER_HOUR = 60


def _config(topics: Topics, directory: Path) -> Path:
    path = topics.config(directory)
    data = yaml.safe_load(path.read_text())
    data["http_ingest"] = {"tokens": {side: [hashlib.sha256(t.encode()).hexdigest()] for side, t in TOKENS.items()}}
    path.write_text(yaml.safe_dump(data))
    return path


def _traffic() -> list[Line]:
    """build_traffic's requests, then benign requests an hour and two hours later.

    The later hours move every partition's watermark past the traffic, so a live
    run closes every window as a replay's end does. Over HTTP the producer picks
    the partitions (text gateway lines go unkeyed, at random), so there are many
    tails: the chance that one of 4 partitions gets none of 60 is 4 * 0.75^60 < 1e-7.
    """
    lines = build_traffic(REQUESTS, tails=False)
    end = T0 + REQUESTS * 0.2
    for hours in (1, 2):
        for k in range(TAILS_PER_HOUR):
            ts, rid = end + hours * 3600 + k * 0.05, f"tail-{hours}-{k}"
            lines += [_gateway(ts, rid, "/v1/invoices", 200), _app(ts + 0.003, rid, "/v1/invoices", 200)]
    return [_as_fluent_bit_delivers(line) for line in sorted(lines, key=lambda line: line.ts)]


def _as_fluent_bit_delivers(line: Line) -> Line:
    # Fluent Bit's records are msgpack strings: bytes that are not UTF-8 arrive replaced.
    return Line(line.side, line.ts, line.key, line.value.decode("utf-8", "replace").encode(), line.partition)


def _fluent_bit_request(side: str, lines: list[Line]) -> tuple[bytes, dict[str, str]]:
    records = [{"date": time.time(), "log": line.value.decode()} for line in lines]
    headers = {"User-Agent": "Fluent-Bit", "Authorization": f"Bearer {TOKENS[side]}"}
    if side == "gateway":  # format json, compress gzip
        headers |= {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return gzip.compress(orjson.dumps(records)), headers
    headers["Content-Type"] = "application/x-ndjson"  # format json_lines
    return b"".join(orjson.dumps(record) + b"\n" for record in records), headers


def _post(serve: Serve, side: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(f"http://127.0.0.1:{serve.port}/v1/ingest/{side}", content=body, headers=headers, timeout=60)


def _stored_ids(store: Path) -> Counter[str]:
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute("SELECT id FROM events UNION ALL SELECT id FROM dead_letters").fetchall()
    return Counter(row[0] for row in rows)


def test_a_fluent_bit_client_gets_every_record_stored_once_and_alerted(
    topics: Topics, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A redaction key, as README advises for serve: record origins are sealed with it (test_follow goes without).
    monkeypatch.setenv("GATEWATCH_REDACT_KEY", "a key every gatewatch process has")
    lines = _traffic()
    config = _config(topics, tmp_path)
    (tmp_path / "replay").mkdir()
    expected_alerts = replay_alerts(config, lines, tmp_path / "replay")
    assert {alert[1] for alert in expected_alerts} >= {"http_5xx_burst", "gateway_bypass"}
    store = tmp_path / "store.duckdb"
    serve = Serve(config, store, tmp_path / "serve-1.log")

    # Two shippers, one per side, each flushing every BATCH_RECORDS records.
    requests: list[tuple[str, list[Line], bytes, dict[str, str]]] = []
    for side in ("gateway", "app"):
        own = [line for line in lines if line.side == side]
        for i in range(0, len(own), BATCH_RECORDS):
            body, headers = _fluent_bit_request(side, own[i : i + BATCH_RECORDS])
            requests.append((side, own[i : i + BATCH_RECORDS], body, headers))
    requests.sort(key=lambda request: request[1][0].ts)
    expected_ids: Counter[str] = Counter()
    for side, batch, body, headers in requests:
        answer = _post(serve, side, body, headers)
        assert answer.status_code == 200, answer.text
        reply = answer.json()
        assert reply["accepted"] == len(batch) and "invalid_lines" not in reply
        dataset = Dataset.GATEWAY if side == "gateway" else Dataset.APP
        expected_ids.update(record_id(Origin(dataset, f"http:{side}:{reply['batch_id']}", n)) for n in range(1, len(batch) + 1))
    assert sum(expected_ids.values()) == len(lines)

    # A plain NDJSON client's batch with a line that is not JSON: the rest is accepted, every line kept.
    ndjson = b'"not an app log line"\n{"log": "half\n{"log": "{\\"ts\\": \\"2026-03-02T09:00:00Z\\", "}\n'
    answer = _post(serve, "app", ndjson, {"Authorization": f"Bearer {TOKENS['app']}"})
    assert answer.status_code == 400 and answer.json()["invalid_lines"] == [2], answer.text
    assert answer.json()["accepted"] == 2
    ndjson_batch = answer.json()["batch_id"]
    assert ndjson_batch == hashlib.sha256(ndjson).hexdigest()[:32]
    expected_ids.update(record_id(Origin(Dataset.APP, f"http:app:{ndjson_batch}", n)) for n in (1, 2, 3))

    wait_for(topics.all_committed, 60, "every posted record to be ingested", serve)
    wait_for(lambda: serve.metric("gatewatch_alerts_total") >= len(expected_alerts), 60, "the alerts", serve)
    assert serve.stop() == 0, serve.output()
    assert _stored_ids(store) == expected_ids  # each record once, under the id of where it entered
    with duckdb.connect(str(store), read_only=True) as con:
        dead = con.execute("SELECT stream_offset FROM dead_letters WHERE stream = ?", [f"http:app:{ndjson_batch}"])
        assert sorted(row[0] for row in dead.fetchall()) == [1, 2, 3]  # dead letters name where they entered
    assert stored_alerts(store) == expected_alerts

    # App records are keyed by request id on the topic, so a request's records travel together.
    consumer = KafkaConsumer(topics.names["app"], bootstrap_servers=topics.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)  # fmt: skip
    try:
        messages = list(consumer)
    finally:
        consumer.close()
    keyed = []
    for message in messages:
        try:
            rid = orjson.loads(message.value).get("request_id")
        except (orjson.JSONDecodeError, AttributeError):
            continue  # a bad line: no request id to key by
        keyed.append((message.key, rid.encode() if rid else None))
    assert len(keyed) > REQUESTS and all(key == expected for key, expected in keyed)

    # The shipper retries two batches after a restart (this process has not seen them): stored once still.
    second = Serve(config, store, tmp_path / "serve-2.log")
    for side, _, body, headers in requests[:2]:
        assert _post(second, side, body, headers).status_code == 200
    # ... and once more to the same process, which knows it acknowledged them.
    side, _, body, headers = requests[0]
    assert _post(second, side, body, headers).json()["duplicate"] is True
    wait_for(topics.all_committed, 60, "the retried batches to be ingested", second)
    assert second.stop() == 0, second.output()
    assert _stored_ids(store) == expected_ids
    assert "origin_unsealed" not in serve.output() + second.output()


def test_a_record_up_to_max_line_bytes_reaches_the_topic_whole_and_a_longer_one_cut_one_byte_past_it(
    topics: Topics, tmp_path: Path
) -> None:
    # A topic's default max.message.bytes is 1 MB: records were cut at 512 KiB, so a 600 KB line replay reads was a
    # "truncated" dead letter in serve. lz4 makes a line of max_line_bytes fit; one byte more makes "oversized".
    config = _config(topics, tmp_path)
    limit = 1024 * 1024  # max_line_bytes' default
    whole = orjson.dumps({"ts": "2026-03-02T09:00:00Z", "request_id": "big-1", "ua": '"' * (limit // 2 - 100)})
    longer = orjson.dumps({"ts": "2026-03-02T09:00:01Z", "request_id": "big-2", "ua": "x" * (limit + 50_000)})
    assert len(whole) <= limit < len(longer)
    serve = Serve(config, tmp_path / "store.duckdb", tmp_path / "serve.log")
    answer = _post(serve, "app", whole + b"\n" + longer, {"Authorization": f"Bearer {TOKENS['app']}"})
    assert answer.status_code == 200, answer.text
    assert serve.stop() == 0, serve.output()
    consumer = KafkaConsumer(topics.names["app"], bootstrap_servers=topics.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=5000, max_partition_fetch_bytes=8 << 20)  # fmt: skip
    try:
        values = sorted((message.value for message in consumer), key=len)
    finally:
        consumer.close()
    assert values == [whole, longer[: limit + 1]]
