"""``gatewatch serve`` without Kafka: HTTP ingest and ``--follow`` feed the local pipeline, run as the CLI runs it.

No ``kafka`` section in the config, so serve stores and detects in-process. A
client posts exactly what Fluent Bit's ``http`` output sends (``format json``
gzipped for the gateway, ``format json_lines`` for the app) and retries as it
does on 429/503 (after ``Retry-After``); files are tailed through rotations and
a ``kill -9``. Afterwards every record must be in the store once, under the id
of where it entered, and the alerts must be those of ``gatewatch replay`` over
the same lines.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import secrets
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import duckdb
import httpx
import orjson
import pytest
import yaml
from test_follow import LogFile
from test_scale_out import Indices
from test_serve import REPO, Line, Serve, _free_port, build_traffic, demo_traffic, replay_alerts, stored_alerts, wait_for
from test_store_outage import Outage

from ingest.records import Dataset, Origin, record_id

TOKENS = {"gateway": secrets.token_urlsafe(24), "app": secrets.token_urlsafe(24)}
BATCH_RECORDS = 500  # a Fluent Bit chunk holds up to 2 MB: hundreds of access-log lines
OUTAGE_SECS = 10  # frozen (SIGSTOP): the load test (bench_http_ingest.py --outage-secs) stops and starts it
_DATASETS = {"gateway": Dataset.GATEWAY, "app": Dataset.APP}


class LocalServe(Serve):
    """``gatewatch serve`` with no Kafka configured, as a subprocess."""

    def __init__(self, config: Path, store: str, log: Path, checkpoint: Path, follow: list[str] | None = None,
                 positions: Path | None = None) -> None:  # fmt: skip
        self.port = _free_port()
        self.log = log
        follow_args = ["--follow", *follow, "--follow-positions", str(positions)] if follow else []
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gatewatch.cli", "serve", "--config", str(config), "--store", store,
                 "--listen", f"127.0.0.1:{self.port}", "--local-checkpoint", str(checkpoint), *follow_args],
                cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        Serve.started.append(self)
        wait_for(lambda: self.get("/healthz")[0] == 200, 60, "serve to answer /healthz", self)

    def followed(self) -> float:
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in self.get("/metrics")[1].splitlines()
            if line.startswith('component_received_events_total{component="file"')
        )


@pytest.fixture
def local_serves() -> Any:
    yield
    while Serve.started:
        serve = Serve.started.pop()
        if serve.process.poll() is None:
            serve.kill()


def fluent_bit_request(side: str, lines: list[Line]) -> tuple[bytes, dict[str, str]]:
    """The body and headers of Fluent Bit's ``http`` output: gateway ``format json`` + gzip, app ``json_lines``."""
    records = [{"date": time.time(), "log": line.value.decode()} for line in lines]
    headers = {"User-Agent": "Fluent-Bit", "Authorization": f"Bearer {TOKENS[side]}"}
    if side == "gateway":
        headers |= {"Content-Type": "application/json", "Content-Encoding": "gzip"}
        return gzip.compress(orjson.dumps(records)), headers
    headers["Content-Type"] = "application/x-ndjson"
    return b"".join(orjson.dumps(record) + b"\n" for record in records), headers


def interleaved_batches(lines: list[Line], size: int) -> list[tuple[str, list[Line]]]:
    """Each side cut into batches of ``size``, the two sides taken in turn by how far each has got.

    Two shippers tailing the two logs of the same traffic advance together; the
    tails (one per Kafka partition in the Kafka tests) go last.
    """
    own = {side: [line for line in lines if line.side == side and line.partition is None] for side in _DATASETS}
    tails = {side: [line for line in lines if line.side == side and line.partition is not None] for side in _DATASETS}
    batches: list[tuple[str, list[Line]]] = []
    done = dict.fromkeys(_DATASETS, 0)
    while any(done[side] < len(own[side]) for side in _DATASETS):
        side = min((s for s in _DATASETS if done[s] < len(own[s])), key=lambda s: done[s] / len(own[s]))
        batches.append((side, own[side][done[side] : done[side] + size]))
        done[side] += size
    batches += [(side, tail) for side, tail in tails.items() if tail]
    return batches


class Shipper:
    """Posts batches in order and, as Fluent Bit does, retries one on 429/503 after its Retry-After."""

    def __init__(self, port: int) -> None:
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=90)
        self.answers: Counter[int] = Counter()
        self.retry_afters: set[str] = set()
        self.expected_ids: Counter[str] = Counter()
        self.batch_ids: set[str] = set()

    def close(self) -> None:
        self.http.close()

    def ship(self, side: str, lines: list[Line], request: tuple[bytes, dict[str, str]]) -> dict[str, Any]:
        """Post one chunk (the same bytes on every retry, as Fluent Bit does) until it is accepted."""
        body, headers = request
        deadline = time.monotonic() + 180
        while True:
            try:
                answer = self.http.post(f"/v1/ingest/{side}", content=body, headers=headers)
            except httpx.TransportError:
                answer = None
            if answer is not None:
                self.answers[answer.status_code] += 1
                if answer.status_code in (200, 400):
                    break
                assert answer.status_code in (429, 503), answer.text
                self.retry_afters.add(answer.headers["Retry-After"])
            assert time.monotonic() < deadline, f"batch not accepted in time: {self.answers}"
            time.sleep(min(float(answer.headers["Retry-After"]), 5.0) if answer is not None else 1.0)
        reply = answer.json()
        assert reply["accepted"] == len(lines), reply
        # A retry answered after its batch became durable in between is "duplicate": count each batch once.
        if reply["batch_id"] not in self.batch_ids:
            self.batch_ids.add(reply["batch_id"])
            self.expected_ids.update(record_id(Origin(_DATASETS[side], f"http:{side}:{reply['batch_id']}", n))
                                     for n in range(1, len(lines) + 1))  # fmt: skip
        return reply


def _local_config(directory: Path, base: dict[str, Any]) -> Path:
    tokens = {s: [hashlib.sha256(t.encode()).hexdigest()] for s, t in TOKENS.items()}
    # A batch not durable in 5 s is answered 503: shorter than any outage here, however fast the node restarts.
    data = {**base, "http_ingest": {"tokens": tokens, "produce_timeout_secs": 5}}
    assert "kafka" not in data
    path = directory / "local.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _duckdb_ids(store: Path) -> Counter[str]:
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute("SELECT id FROM events UNION ALL SELECT id FROM dead_letters").fetchall()
    return Counter(row[0] for row in rows)


@pytest.mark.parametrize("store_kind", ["duckdb", "elasticsearch"])
def test_a_fluent_bit_client_without_kafka_stores_each_record_once_and_alerts_as_replay(
    tmp_path: Path, store_kind: str, request: pytest.FixtureRequest, local_serves: None
) -> None:
    """The demo scenario posted to a serve with no Kafka; on Elasticsearch the node is frozen mid-stream.

    Frozen rather than stopped keeps the suite short (a stopped node takes ~50 s to start again here);
    bench/bench_http_ingest.py --local --outage-secs 30 stops it and starts it on its data.
    """
    lines, demo_config = demo_traffic(tmp_path, rate=5.0)
    # Fluent Bit's records are msgpack strings: bytes that are not UTF-8 arrive replaced (replay must see the same).
    lines = [replace(line, value=line.value.decode("utf-8", "replace").encode()) for line in lines]
    indices: Indices | None = None
    if store_kind == "elasticsearch":
        url = request.getfixturevalue("elasticsearch_url")
        prefix = f"gw-local-{uuid.uuid4().hex[:8]}"
        demo_config["store"] = {**demo_config.get("store", {}), "index_prefix": prefix, "retention_days": 3650}
        indices, store = Indices(url, prefix), f"elasticsearch:{url}"
    else:
        store = f"duckdb:{tmp_path / 'store.duckdb'}"
    # The demo's app log runs up to ~240 s behind itself (a pod flushing late): past the default lateness
    # such records are late, and which ones depends on how the input was cut (replay reads 512-line chunks
    # of the file furthest behind; shippers post what they have). Within the lateness, order cannot matter.
    demo_config["correlate"] = {**demo_config.get("correlate", {}), "allowed_lateness_secs": 600}
    config = _local_config(tmp_path / "demo", demo_config)
    outage = Outage("hang") if indices is not None else None
    shipper: Shipper | None = None
    try:
        serve = LocalServe(config, store, tmp_path / "serve-1.log", tmp_path / "checkpoint.msgpack")
        shipper = Shipper(serve.port)
        batches = [(side, batch, fluent_bit_request(side, batch)) for side, batch in interleaved_batches(lines, BATCH_RECORDS)]
        outage_thread: threading.Thread | None = None
        for n, (side, batch, chunk) in enumerate(batches):
            if outage is not None and n == len(batches) // 2:
                outage.start()  # the bulk in hand hangs; the node comes back while the shipper retries
                outage_thread = threading.Thread(target=lambda: (time.sleep(OUTAGE_SECS), outage.back()))
                outage_thread.start()
            shipper.ship(side, batch, chunk)
        if outage_thread is not None:
            outage_thread.join()
            assert shipper.answers[503] > 0 and shipper.retry_afters <= {"1", "5"}, shipper.answers
            assert serve.metric("gatewatch_backpressure") == 0
        # The shipper retries a batch it was answered (a lost answer): answered again, not fed again.
        side, batch, chunk = batches[0]
        assert shipper.ship(side, batch, chunk)["duplicate"] is True

        assert serve.stop() == 0, serve.output()
        assert sum(shipper.expected_ids.values()) == len(lines)

        (tmp_path / "replay").mkdir()
        expected_alerts = replay_alerts(config, lines, tmp_path / "replay")
        assert len({rule for _, rule, *_ in expected_alerts}) >= 6
        if indices is not None:
            stored = Counter(hit["_id"] for kind in ("events", "deadletter") for hit in indices.all(kind, ["id"]))
            alerts = indices.alerts()
        else:
            stored, alerts = _duckdb_ids(tmp_path / "store.duckdb"), stored_alerts(tmp_path / "store.duckdb")
        assert stored == shipper.expected_ids  # each record once, under the id of where it entered
        assert alerts == expected_alerts  # the same ids, counts and evidence
    finally:
        if shipper is not None:
            shipper.close()
        if outage is not None:
            outage.back()
        if indices is not None:
            indices.cleanup()


def test_follow_without_kafka_through_rotations_and_a_kill_loses_and_duplicates_nothing(
    tmp_path: Path, local_serves: None
) -> None:
    """The gateway log rotated by rename, the app log by copytruncate, serve killed -9 mid-file and restarted."""
    lines = build_traffic(300)
    by_side: dict[str, list[bytes]] = {side: [line.value for line in lines if line.side == side] for side in _DATASETS}
    logs = {side: LogFile(tmp_path / f"{side}.log", dataset) for side, dataset in _DATASETS.items()}
    follow = [f"gateway={tmp_path}/gateway.log*", f"app={tmp_path}/app.log*"]
    positions, checkpoint = tmp_path / "positions.json", tmp_path / "checkpoint.msgpack"
    store = tmp_path / "store.duckdb"
    config = _local_config(tmp_path, {"trust": {"gateway_networks": ["10.0.0.0/24"]}})
    quarter = {side: len(own) // 4 for side, own in by_side.items()}

    def part(side: str, n: int) -> list[bytes]:
        return by_side[side][n * quarter[side] : (n + 1) * quarter[side] if n < 3 else None]

    def start(n: int) -> LocalServe:
        return LocalServe(config, f"duckdb:{store}", tmp_path / f"serve-{n}.log", checkpoint, follow, positions)

    for side, log in logs.items():
        log.write(part(side, 0))
    first = start(1)
    wait_for(lambda: first.followed() >= sum(quarter.values()), 30, "the first quarter", first)
    logs["gateway"].write(part("gateway", 1)[:20])  # written just before the rotation
    logs["gateway"].rotate_by_rename()
    logs["app"].write(part("app", 1))
    logs["app"].rotate_by_copytruncate()
    logs["gateway"].write(part("gateway", 1)[20:])
    wait_for(lambda: first.followed() >= 2 * sum(quarter.values()), 30, "the second quarter", first)
    for side, log in logs.items():
        log.write(part(side, 2))
    wait_for(lambda: first.followed() > 2 * sum(quarter.values()), 30, "some of the third quarter", first)
    first.kill()  # the third quarter may be stored but not checkpointed, or not even read
    for side, log in logs.items():
        log.write(part(side, 3))

    second = start(2)
    ends = logs["gateway"].ends | logs["app"].ends

    def all_read() -> bool:
        saved = orjson.loads(positions.read_bytes()) if positions.exists() else {}
        return all(saved.get(fingerprint) == end for fingerprint, end in ends.items())

    wait_for(all_read, 60, "every file to be read to its end and checkpointed", second)
    assert second.stop() == 0, second.output()
    assert "event=checkpoint_restored" in second.output()
    expected = logs["gateway"].ids + logs["app"].ids
    assert sum(expected.values()) == len(lines)
    assert _duckdb_ids(store) == expected
    assert stored_alerts(store) == replay_alerts(config, lines, tmp_path)


def test_a_token_revoked_while_serve_runs_alerts_from_then_on(tmp_path: Path, local_serves: Any) -> None:
    # A security engineer revokes a leaked token by editing the list: the running service reads it again.
    revoked = tmp_path / "revoked.csv"
    revoked.write_text("jti,revoked_at\n")  # nothing revoked when serve starts
    config = tmp_path / "gatewatch.yaml"
    config.write_text(yaml.safe_dump({"tokens": {"revoked": str(revoked)}}))
    app_log = tmp_path / "app.log"

    def use(second: int) -> None:
        line = {"ts": f"2026-12-07T10:00:{second:02d}Z", "request_id": f"r-{second}", "status": 200,
                "token": {"jti": "leaked"}}  # fmt: skip
        with app_log.open("ab") as handle:
            handle.write(orjson.dumps(line) + b"\n")

    use(1)
    serve = LocalServe(config, f"duckdb:{tmp_path / 'store.duckdb'}", tmp_path / "serve.log", tmp_path / "checkpoint",
                       follow=[f"app={app_log}"], positions=tmp_path / "positions.json")  # fmt: skip
    wait_for(lambda: serve.followed() >= 1, 30, "the first use", serve)
    revoked.write_text("jti,revoked_at\nleaked,2026-12-07T10:00:05Z\n")
    wait_for(lambda: "revocations_read" in serve.output(), 30, "serve to read the list again", serve)
    use(10)
    wait_for(lambda: serve.followed() >= 2, 30, "the second use", serve)
    assert serve.stop() == 0, serve.output()
    with duckdb.connect(str(tmp_path / "store.duckdb"), read_only=True) as con:
        alerts = con.execute("SELECT rule, entity_value, request_ids FROM alerts").fetchall()
    assert alerts == [("token_revoked_used", "leaked", ["r-10"])]  # the use before the revocation raised nothing
