"""``gatewatch serve`` against a real Kafka broker, run as the CLI runs it.

Each test gets its own topics (4 partitions each) and consumer group, produces
Envoy default-format gateway lines and Billing JSON lines keyed by request id
(bad lines included), runs ``python -m gatewatch.cli serve --store duckdb:...``
as a subprocess and reads the DuckDB tables once it has exited.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import duckdb
import orjson
import pytest
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from detectors.alerts import Alert
from gatewatch.config import load_config
from gatewatch.replay import replay
from gatewatch.serve import Service
from ingest.records import Dataset, Origin, record_id
from ingest.sinks.base import Batch

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=timezone.utc).timestamp()
PARTITIONS = 4
GATEWAY_PEER = "10.0.0.10"


# -- traffic ----------------------------------------------------------------------


@dataclass(frozen=True)
class Line:
    side: str  # "gateway" | "app"
    ts: float
    key: bytes | None  # request id: both sides of a request land in the same partition number
    value: bytes
    partition: int | None = None  # set for the tail lines, one per partition


def _iso(ts: float) -> str:
    moment = datetime.fromtimestamp(ts, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _gateway(ts: float, rid: str, path: str, status: int, client: str = "203.0.113.7") -> Line:
    text = (
        f'[{_iso(ts)}] "GET {path} HTTP/1.1" {status} - 0 120 5 4 "{client}" "curl/8.5.0" "{rid}" '
        f'"billing" "10.1.0.20:8080"'
    )
    return Line("gateway", ts, rid.encode(), text.encode())


def _app(ts: float, rid: str | None, path: str, status: int, peer: str = GATEWAY_PEER) -> Line:
    record = {"ts": _iso(ts), "level": "info", "msg": "served", "request_id": rid, "method": "GET", "path": path,
              "status": status, "latency_ms": 3.2, "user_id": "u-1", "org_id": "org-1", "peer": {"ip": peer}}  # fmt: skip
    return Line("app", ts, rid.encode() if rid else None, orjson.dumps(record))


def build_traffic(requests: int, gap_secs: float = 0.2, tails: bool = True) -> list[Line]:
    """Normal requests, a 5xx storm, gateway bypasses and bad lines, in time order.

    Every line has its own timestamp (no ties), so the event-time order does not
    depend on record ids, which differ between files and topics. With ``tails``,
    one benign request per partition an hour and two hours after the rest: the
    second hour moves every partition's watermark past the first, so a live run
    closes every window of the main traffic without ``finish``.
    """
    lines: list[Line] = []
    storm = range(requests // 2, requests // 2 + 60)
    for i in range(requests):
        ts = T0 + i * gap_secs
        rid = f"rid-{i:06d}"
        status = 503 if i in storm or i % 100 == 0 else 200
        lines.append(_gateway(ts, rid, f"/v1/invoices/{i}", status))
        lines.append(_app(ts + 0.003, rid, f"/v1/invoices/{i}", status))
        if i % (requests // 4) == 7:  # the app served a rogue pod directly
            lines.append(_app(ts + 0.011, f"rogue-{i}", "/v1/invoices", 200, peer="10.9.9.9"))
        if i == requests // 3:  # gateway peer, but the gateway never logged it
            lines.append(_app(ts + 0.013, f"ghost-{i}", "/v1/charges", 201))
        if i % (requests // 5) == 3:
            lines.append(Line("gateway", ts + 0.017, None, b"garbage that is no access log"))
            lines.append(Line("app", ts + 0.019, None, b'{"ts": "2026-03-02T09:00:00Z", "msg": '))
            lines.append(Line("app", ts + 0.021, None, b"\xff\xfe not utf-8"))
            lines.append(Line("gateway", ts + 0.023, None, b""))
    if tails:
        end = T0 + requests * gap_secs
        for hours in (1, 2):
            for p in range(PARTITIONS):
                ts = end + hours * 3600 + p * 0.05
                rid = f"tail-{hours}-{p}"
                gateway, app = _gateway(ts, rid, "/v1/invoices", 200), _app(ts + 0.003, rid, "/v1/invoices", 200)
                lines.append(Line("gateway", ts, None, gateway.value, partition=p))
                lines.append(Line("app", ts + 0.003, None, app.value, partition=p))
    lines.sort(key=lambda line: line.ts)
    return lines


def fluent_bit(line: Line) -> Line:
    """The line as Fluent Bit's kafka output sends it: a JSON record with the line under ``log``."""
    wrapped = orjson.dumps({"@timestamp": line.ts, "log": line.value.decode("utf-8", "replace"), "stream": "stdout"})
    return Line(line.side, line.ts, line.key, wrapped, line.partition)


def demo_traffic(directory: Path, duration_secs: float = 600.0, rate: float = 15.0) -> tuple[list[Line], dict]:
    """The demo generator's files (every rule's attacks, look-alikes, late app lines, bad lines) as lines,
    in file order, keyed by request id, plus benign tails as in :func:`build_traffic`; and the demo config."""
    from gatewatch.demo.files import write_demo
    from gatewatch.demo.render import DEMO_TEXT_FORMAT, render_text
    from gatewatch.demo.world import GATEWAY_IDENTITY

    files = write_demo(directory / "demo", duration_secs=duration_secs, requests_per_sec=rate)
    lines: list[Line] = []
    # The demo's oversized lines (2 MiB) exceed Kafka's default 1 MB message limit, as a shipper's would:
    # cut them to what a broker takes (cut short, they are dead letters still).
    for raw in (line[:900_000] for line in files.gateway_log.read_bytes().splitlines()):
        quoted = raw.split(b'"')[1::2]  # request line, forwarded-for, user agent, request id, ...
        rid = quoted[3] if len(quoted) > 3 and quoted[3] != b"-" else None
        lines.append(Line("gateway", 0.0, rid, raw))
    for raw in (line[:900_000] for line in files.app_log.read_bytes().splitlines()):
        try:
            rid = orjson.loads(raw).get("request_id")
        except (orjson.JSONDecodeError, AttributeError):
            rid = None
        lines.append(Line("app", 0.0, rid.encode() if isinstance(rid, str) else None, raw))
    end = files.expected.scenario.start + duration_secs + 120
    for hours in (1, 2):
        for p in range(PARTITIONS):
            ts = end + hours * 3600 + p * 0.05
            rid = f"tail-{hours}-{p}"
            gateway = {"START_TIME": _iso(ts), "REQ(:METHOD)": "GET", "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": "/v1/invoices",
                       "PROTOCOL": "HTTP/2", "RESPONSE_CODE": 200, "BYTES_RECEIVED": 0, "BYTES_SENT": 100,
                       "DURATION": 5, "REQ(X-REQUEST-ID)": rid, "REQ(:AUTHORITY)": "api.billing.example",
                       "UPSTREAM_HOST": "10.1.0.20:8080", "UPSTREAM_CLUSTER": "cluster_billing_default",
                       "ROUTE_NAME": "billing_invoices", "DOWNSTREAM_REMOTE_ADDRESS": f"198.51.100.{p + 2}:40000"}  # fmt: skip
            app = {"ts": _iso(ts + 0.003), "level": "info", "msg": "invoices listed", "request_id": rid,
                   "method": "GET", "path": "/v1/invoices", "status": 200,
                   "peer": {"ip": "10.0.0.10", "spiffe_id": GATEWAY_IDENTITY}}  # fmt: skip
            lines.append(Line("gateway", ts, None, render_text(gateway, DEMO_TEXT_FORMAT).rstrip("\n").encode(), p))
            lines.append(Line("app", ts + 0.003, None, orjson.dumps(app), p))
    return lines, yaml.safe_load(files.config_yaml.read_text())


# -- Kafka helpers ------------------------------------------------------------------


class Topics:
    def __init__(self, bootstrap: str, counts: dict[str, int] | None = None) -> None:
        """Fresh input topics (``counts``: partitions per side, PARTITIONS each by default) and group."""
        run = uuid.uuid4().hex[:10]
        self.bootstrap = bootstrap
        self.group = f"gw-test-{run}"
        self.names = {"gateway": f"gw-{run}-gateway", "app": f"gw-{run}-app", "alerts": f"gw-{run}-alerts"}
        self.counts = counts or {"gateway": PARTITIONS, "app": PARTITIONS}
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_topics({self.names[side]: {"num_partitions": self.counts[side]} for side in ("gateway", "app")},
                                wait_for_metadata=True)  # fmt: skip
        finally:
            admin.close()
        self.produced: list[tuple[Line, str, int, int]] = []  # line, topic, partition, offset

    @property
    def partitions(self) -> list[TopicPartition]:
        return [TopicPartition(self.names[s], p) for s in ("gateway", "app") for p in range(self.counts[s])]

    def produce(self, lines: list[Line], pause_every: int = 0, pause_secs: float = 0.0,
                compression: str | None = None) -> None:  # fmt: skip
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, compression_type=compression)
        try:
            futures = []
            for n, line in enumerate(lines, start=1):
                topic = self.names[line.side]
                futures.append((line, producer.send(topic, key=line.key, value=line.value, partition=line.partition)))
                if pause_every and n % pause_every == 0:
                    producer.flush()
                    time.sleep(pause_secs)
            producer.flush()
            for line, future in futures:
                meta = future.get(timeout=10)
                self.produced.append((line, meta.topic, meta.partition, meta.offset))
        finally:
            producer.close()

    def end_offsets(self) -> dict[TopicPartition, int]:
        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            return dict(consumer.end_offsets(self.partitions))
        finally:
            consumer.close()

    def committed(self) -> dict[TopicPartition, int]:
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            offsets = admin.list_group_offsets({self.group: None}).get(self.group, {})
        finally:
            admin.close()
        return {tp: meta.offset for tp, meta in offsets.items()}

    def all_committed(self) -> bool:
        end, committed = self.end_offsets(), self.committed()
        return all(committed.get(tp, -1) >= offset for tp, offset in end.items())

    def expected_origins(self) -> Counter[tuple[str, int]]:
        return Counter((f"{topic}/{partition}", offset) for _, topic, partition, offset in self.produced)

    def config(self, directory: Path, unwrap: str | None = None, base: dict | None = None) -> Path:
        data = {
            **(base or {"trust": {"gateway_networks": ["10.0.0.0/24"]}}),
            "kafka": {
                "bootstrap_servers": [self.bootstrap],
                "group_id": self.group,
                "topics": self.names,
                "unwrap": {"gateway": unwrap, "app": unwrap},
                "checkpoint_interval_secs": 2.0,  # the kill tests wait for a first checkpoint
            },
        }
        path = directory / "serve.yaml"
        path.write_text(yaml.safe_dump(data))
        return path


class Serve:
    """``gatewatch serve`` as a subprocess."""

    started: list[Serve] = []  # killed by the ``topics`` fixture if a failed test left them running

    def __init__(
        self, config: Path, store: Path | str, log: Path, stages: str = "all", instance_id: str | None = None
    ) -> None:
        """``store``: a DuckDB file, or a store URL such as ``elasticsearch:http://...``."""
        self.port = _free_port()
        self.log = log
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        store_url = f"duckdb:{store}" if isinstance(store, Path) else store
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gatewatch.cli", "serve", "--config", str(config), "--store", store_url,
                 "--listen", f"127.0.0.1:{self.port}", "--stages", stages,
                 *(["--instance-id", instance_id] if instance_id else [])],
                cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT,
            )  # fmt: skip
        Serve.started.append(self)
        wait_for(lambda: self.get("/healthz")[0] == 200, 30, "serve to answer /healthz", self)

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=2) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()
        except OSError:
            if self.process.poll() is not None:
                raise AssertionError(f"serve exited with {self.process.returncode}:\n{self.output()}") from None
            return 0, ""

    def partitions(self) -> list[str]:
        """The input partitions this process ingests now, from /healthz."""
        return orjson.loads(self.get("/healthz")[1] or "{}").get("partitions") or []

    def metric(self, name: str) -> float:
        total = 0.0
        for line in self.get("/metrics")[1].splitlines():
            if line.startswith(name + "{") or line.startswith(name + " "):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=90)

    def kill(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(condition: Callable[[], bool], timeout_secs: float, what: str, serve: Serve | None = None) -> None:
    deadline = time.monotonic() + timeout_secs
    while not condition():
        if time.monotonic() > deadline:
            detail = f"\n--- serve output:\n{serve.output()[-4000:]}" if serve else ""
            raise AssertionError(f"timed out after {timeout_secs:.0f}s waiting for {what}{detail}")
        time.sleep(0.1)


def stored_origins(store: Path) -> Counter[tuple[str, int]]:
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute(
            "SELECT stream, stream_offset FROM events UNION ALL SELECT stream, stream_offset FROM dead_letters"
        ).fetchall()
    return Counter((stream, int(offset)) for stream, offset in rows)


def stored_alerts(store: Path) -> set[tuple[str, str, str, str, int, frozenset[str]]]:
    with duckdb.connect(str(store), read_only=True) as con:
        rows = con.execute("SELECT id, rule, entity_type, entity_value, count, request_ids FROM alerts").fetchall()
    return {(r[0], r[1], r[2], r[3], int(r[4]), frozenset(r[5])) for r in rows}


class _AlertSink:
    def __init__(self) -> None:
        self.alerts: dict[str, Alert] = {}

    def write(self, batch: Batch) -> None:
        self.alerts.update(batch.alerts)

    def close(self) -> None:
        pass


def replay_alerts(config: Path, lines: list[Line], directory: Path) -> set[tuple[str, str, str, str, int, frozenset[str]]]:
    """The alerts of an uninterrupted ``gatewatch replay`` of the same lines, written as files."""
    paths = {side: directory / f"{side}.log" for side in ("gateway", "app")}
    for side, path in paths.items():
        path.write_bytes(b"".join(line.value + b"\n" for line in lines if line.side == side))
    sink = _AlertSink()
    replay(load_config(config), [paths["gateway"]], [paths["app"]], [sink])
    return {(a.id, a.rule, a.entity_type, a.entity_value, a.count, frozenset(a.request_ids)) for a in sink.alerts.values()}


@pytest.fixture
def topics(kafka_bootstrap: str) -> Iterator[Topics]:
    yield Topics(kafka_bootstrap)
    while Serve.started:
        serve = Serve.started.pop()
        if serve.process.poll() is None:
            serve.kill()


# -- tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("wrapped", [False, True], ids=["plain", "fluent-bit"])
def test_every_record_is_stored_once_with_its_origin(topics: Topics, tmp_path: Path, wrapped: bool) -> None:
    lines = build_traffic(400, tails=False)
    if wrapped:
        lines = [fluent_bit(line) for line in lines]
        # Not what the shipper should send, but a record must still be kept, not dropped.
        lines.append(Line("app", T0 + 500, None, b'{"message": "no log key"}'))
        lines.append(Line("gateway", T0 + 501, None, b"not a Fluent Bit record"))
    topics.produce(lines)
    store = tmp_path / "store.duckdb"
    serve = Serve(topics.config(tmp_path, unwrap="log" if wrapped else None), store, tmp_path / "serve.log")
    wait_for(lambda: serve.metric("component_received_events_total") >= len(lines), 30, "every record", serve)
    assert serve.stop() == 0, serve.output()
    # The service's log is its own key=value lines: without -v kafka-python's INFO narration stays out of it.
    logged = serve.output().splitlines()
    assert [line for line in logged if "KafkaConnection" in line or "Attempting bootstrap" in line] == []

    stored = stored_origins(store)
    assert stored == topics.expected_origins()  # each origin exactly once, none missing, none extra
    with duckdb.connect(str(store), read_only=True) as con:
        events = con.execute("SELECT id, dataset, stream, stream_offset FROM events").fetchall()
        dead = dict(con.execute("SELECT reason, count(*) FROM dead_letters GROUP BY reason").fetchall())
    for event_id, dataset, stream, offset in events:
        assert event_id == record_id(Origin(Dataset(dataset), stream, offset))
    bad = 4 * 5  # four bad lines, five times
    assert len(events) == len(lines) - bad - (2 if wrapped else 0)
    assert sum(dead.values()) == bad + (2 if wrapped else 0)
    assert "format_mismatch" in dead and "truncated" in dead
    # Fluent Bit itself replaced the invalid bytes when it wrapped the line.
    assert ("invalid_utf8" in dead) is not wrapped


def _kill_and_restart(topics: Topics, tmp_path: Path, lines: list[Line], config: Path) -> Path:
    """Serve half the lines, kill -9 while the rest arrive, restart; return the store."""
    halves: tuple[list[Line], list[Line]] = ([], [])
    for side in ("gateway", "app"):
        own = [line for line in lines if line.side == side and line.partition is None]
        halves[0].extend(own[: len(own) // 2])
        halves[1].extend(own[len(own) // 2 :])
    halves[1].extend(line for line in lines if line.partition is not None)  # the tails come last
    store = tmp_path / "store.duckdb"
    topics.produce(halves[0])

    first = Serve(config, store, tmp_path / "serve-1.log")
    # The first half is committed (ingest) and checkpointed (detect) ...
    wait_for(topics.all_committed, 30, "the first half to be committed", first)
    wait_for(lambda: first.metric("gatewatch_checkpoint_bytes") > 0, 30, "a detect checkpoint", first)
    # ... then the second half arrives while the process dies mid-stream.
    producer = threading.Thread(target=topics.produce, args=(halves[1], 500, 0.05))
    producer.start()
    wait_for(lambda: first.metric("component_received_events_total") > len(halves[0]) + 300, 30, "more", first)
    first.kill()
    producer.join(timeout=60)
    assert not topics.all_committed()

    second = Serve(config, store, tmp_path / "serve-2.log")
    wait_for(topics.all_committed, 45, "everything to be committed after the restart", second)
    # The detect group may rebalance after the ingest group (each waits out the dead member's session).
    resumed = "event=resumed how=checkpoint stage=detect"
    wait_for(lambda: resumed in second.output(), 30, "detect to resume from its checkpoint", second)
    assert second.stop() == 0, second.output()
    assert stored_origins(store) == topics.expected_origins()  # every record exactly once
    return store


def test_kill_9_and_restart_store_once_and_alert_as_replay(topics: Topics, tmp_path: Path) -> None:
    lines = build_traffic(2500)
    config = topics.config(tmp_path)
    alerts = stored_alerts(_kill_and_restart(topics, tmp_path, lines, config))
    assert {rule for _, rule, *_ in alerts} >= {"gateway_bypass", "http_5xx_burst"}
    assert alerts == replay_alerts(config, lines, tmp_path)


def test_kill_9_demo_traffic_alerts_as_replay(topics: Topics, tmp_path: Path) -> None:
    lines, demo_config = demo_traffic(tmp_path)
    config = topics.config(tmp_path / "demo", base=demo_config)
    alerts = stored_alerts(_kill_and_restart(topics, tmp_path, lines, config))
    assert len({rule for _, rule, *_ in alerts}) >= 6
    assert alerts == replay_alerts(config, lines, tmp_path)


def test_health_ready_and_metrics(topics: Topics, tmp_path: Path) -> None:
    lines = build_traffic(50, tails=False)
    topics.produce(lines)
    serve = Serve(topics.config(tmp_path), tmp_path / "store.duckdb", tmp_path / "serve.log")
    wait_for(lambda: serve.get("/readyz")[0] == 200, 30, "/readyz", serve)
    status, body = serve.get("/healthz")
    assert status == 200 and orjson.loads(body)["status"] == "ok"
    wait_for(lambda: serve.metric("component_received_events_total") >= len(lines), 30, "every record", serve)
    text = serve.get("/metrics")[1]
    for name in ("component_received_events_total", "component_sent_events_total", "component_errors_total",
                 "component_discarded_events_total", "gatewatch_dead_letters_total", "kafka_consumer_lag",
                 "store_bulk_duration_seconds_bucket", "gatewatch_checkpoint_duration_seconds", "gatewatch_alerts_total"):  # fmt: skip
        assert name in text, name
    assert serve.metric("component_discarded_events_total") == 0
    assert serve.stop() == 0


def test_a_second_process_with_the_same_instance_id_stops_the_first(topics: Topics, tmp_path: Path) -> None:
    """Static members must be unique: Kafka fences the older one, which stops with an error saying so."""
    config = topics.config(tmp_path)
    first = Serve(config, tmp_path / "a.duckdb", tmp_path / "a.log", instance_id="twin")
    wait_for(first.partitions, 30, "partitions", first)
    second = Serve(config, tmp_path / "b.duckdb", tmp_path / "b.log", instance_id="twin")
    topics.produce(build_traffic(200, tails=False))
    wait_for(lambda: first.process.poll() is not None, 60, "the fenced process to stop", first)
    assert first.process.returncode == 1
    assert "event=fenced" in first.output() and "its own --instance-id" in first.output()
    assert second.stop() == 0, second.output()


def test_stop_while_the_store_hangs_commits_nothing(topics: Topics, tmp_path: Path, elasticsearch_url: str) -> None:
    """The real node hangs (SIGSTOP) before the first write; two stop signals end serve without a commit."""
    import httpx
    from test_store_outage import _elasticsearch_pgid

    prefix = f"gw-stop-{uuid.uuid4().hex[:8]}"
    config = load_config(topics.config(tmp_path, base={"store": {"index_prefix": prefix, "retention_days": 3650}}))
    service = Service(config, f"elasticsearch:{elasticsearch_url}", f"127.0.0.1:{_free_port()}")
    codes: list[int] = []
    thread = threading.Thread(target=lambda: codes.append(service.run()), name="serve")
    pgid = _elasticsearch_pgid()
    try:
        thread.start()
        wait_for(lambda: service.metrics.exposition().decode().count("gatewatch_detect_owner") > 0, 30, "serve up")
        time.sleep(2.0)  # connected and polling
        os.killpg(pgid, signal.SIGSTOP)
        try:
            topics.produce(build_traffic(100, tails=False))
            wait_for(lambda: "gatewatch_backpressure 1.0" in service.metrics.exposition().decode(), 90, "back-pressure")
            service.request_stop()  # first signal: keep retrying the batch in hand ...
            assert thread.is_alive()
            service.request_stop()  # ... second: give up without committing; the records are read again on restart
            thread.join(timeout=90)
        finally:
            os.killpg(pgid, signal.SIGCONT)
        assert not thread.is_alive() and codes == [1]
        assert not topics.committed()
    finally:
        service.request_stop()
        thread.join(timeout=90)
        httpx.delete(f"{elasticsearch_url}/{prefix}-*", timeout=30)
