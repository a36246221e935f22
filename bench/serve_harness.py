"""What the serve benchmarks share: test traffic, Kafka topics, ``gatewatch serve`` processes and their /metrics.

Used by :mod:`bench_serve` (and its Elasticsearch rows, :mod:`serve_es`) and
:mod:`bench_alert_latency`.
"""

from __future__ import annotations

import hashlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.fetcher import Fetcher
from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport
from kafka.protocol.parser import KafkaProtocol
from kafka.record.default_records import DefaultRecordBatch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatewatch.demo.render import DEMO_JSON_FORMAT, JWT_JTI, JWT_ORG, JWT_SUB, render_json  # noqa: E402
from ingest.ecs import iso  # noqa: E402
from ingest.sources.kafka import consumer_settings  # noqa: E402

try:  # gatewatch's own Kafka reading, installed on import; an older checkout has fewer of them
    from ingest.sources import kafka_frames
except ImportError:
    kafka_frames = None  # type: ignore[assignment]
try:
    from ingest.sources import kafka_records
except ImportError:
    kafka_records = None  # type: ignore[assignment]

T0 = 1772442000.0  # 2026-03-02T09:00:00Z
# /metrics is scraped this often while timing: each scrape costs serve ~2 ms of CPU.
SCRAPE_SECS = 0.2
PARTITIONS = 4


def traffic(requests: int, rate_per_sec: float, first: int = 0) -> list[tuple[str, bytes, bytes]]:
    """(side, key, value) in time order: one gateway and one app record per request (from request ``first``)."""
    out: list[tuple[str, bytes, bytes]] = []
    for i in range(first, first + requests):
        ts = T0 + i / rate_per_sec
        # Random-looking, as Envoy's x-request-id (a UUID4) is: a counter's runs of zeros read as a
        # card number to redaction's pre-check, which then sent every record through the full patterns.
        rid = str(uuid.UUID(bytes=hashlib.blake2b(i.to_bytes(8, "big"), digest_size=16).digest(), version=4))
        status = 503 if i % 97 == 0 else 200
        org = f"org-{i % 13}"
        gw = {
            "START_TIME": iso(ts), "REQ(:METHOD)": "GET", "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": f"/v1/invoices/{i}",
            "PROTOCOL": "HTTP/1.1", "RESPONSE_CODE": status, "RESPONSE_FLAGS": "-", "BYTES_RECEIVED": 0,
            "BYTES_SENT": 512, "DURATION": 12, "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)": 10,
            "REQ(X-FORWARDED-FOR)": f"203.0.113.{i % 250}", "REQ(USER-AGENT)": "billing-sdk-go/1.14.0",
            "REQ(X-REQUEST-ID)": rid, "REQ(:AUTHORITY)": "api.billing.example", "UPSTREAM_HOST": "10.1.0.20:8080",
            "UPSTREAM_CLUSTER": "cluster_billing_default", "ROUTE_NAME": "invoices",
            "DOWNSTREAM_REMOTE_ADDRESS": f"203.0.113.{i % 250}:5{i % 1000:04d}",
            JWT_JTI: f"jti-{i % 5000}", JWT_SUB: f"user-{i % 5000}", JWT_ORG: org,
        }  # fmt: skip
        app = {
            "ts": iso(ts + 0.004), "level": "info", "msg": "invoice fetched", "request_id": rid, "method": "GET",
            "path": f"/v1/invoices/{i}", "status": status, "latency_ms": 9.5, "user_id": f"user-{i % 5000}",
            "org_id": org, "action": "invoice.read", "outcome": "success",
            "peer": {"ip": "10.0.0.10", "spiffe_id": "spiffe://billing.example/ns/edge/sa/ambassador"},
            "token": {"jti": f"jti-{i % 5000}", "sub": f"user-{i % 5000}", "org": org},
        }  # fmt: skip
        out.append(("gateway", rid.encode(), render_json(gw, DEMO_JSON_FORMAT)))
        out.append(("app", rid.encode(), orjson.dumps(app)))
    return out


def create_topics(bootstrap: str, topics: dict[str, str]) -> None:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics({t: {"num_partitions": PARTITIONS} for t in topics.values()}, wait_for_metadata=True)
    finally:
        admin.close()


def produce(bootstrap: str, topics: dict[str, str], records: list[tuple[str, bytes, bytes]]) -> float:
    """Create ``topics`` and produce ``records`` (side, key, value) to them; returns the seconds taken."""
    create_topics(bootstrap, topics)
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=1 << 20, compression_type=None)
    started = time.perf_counter()
    for side, key, value in records:
        producer.send(topics[side], key=key, value=value)
    producer.flush()
    producer.close()
    return time.perf_counter() - started


class KafkaSettings:
    """The two settings ``consumer_settings`` reads from a config's ``kafka`` section."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap_servers = [bootstrap]
        self.security: dict[str, str] = {}


def consume_all(bootstrap: str, topics: dict[str, str], total: int) -> Iterator[tuple[TopicPartition, list[Any]]]:
    """Every partition's messages from the beginning, poll by poll, until ``total`` are read (tuned consumer)."""
    consumer = KafkaConsumer(group_id=None, **consumer_settings(KafkaSettings(bootstrap)))
    partitions = [TopicPartition(t, p) for t in topics.values() for p in range(PARTITIONS)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen = 0
    try:
        while seen < total:
            for tp, messages in consumer.poll(timeout_ms=1000).items():
                seen += len(messages)
                yield tp, messages
    finally:
        consumer.close()


@contextmanager
def library_reading() -> Iterator[None]:
    """kafka-python as it ships for the time of the block: its socket reads, response frames, record batches
    and the fetcher's loop over them.

    gatewatch's own (ingest.sources.kafka_frames and kafka_records) are installed when it is
    imported, as here; a bare consumer timed inside the block is the library's baseline. An older
    checkout that installs fewer of them (run against it to compare trees) swaps those it has.
    """
    library = {}
    read_socket = getattr(kafka_frames, "read_socket", None) if kafka_frames else None
    if read_socket is not None:
        library[KafkaTCPTransport, "_sock_recv"] = read_socket.library_reads[KafkaTCPTransport]
        library[KafkaSSLTransport, "_sock_recv"] = read_socket.library_reads[KafkaSSLTransport]
        library[KafkaProtocol, "receive_bytes"] = kafka_frames.receive_bytes.library_receive
    if hasattr(DefaultRecordBatch.__iter__, "library_iter"):
        library[DefaultRecordBatch, "__iter__"] = DefaultRecordBatch.__iter__.library_iter
    unpack = getattr(kafka_records, "unpack_records", None) if kafka_records else None
    if unpack is not None:
        library[Fetcher.PartitionRecords, "_unpack_records"] = unpack.library_unpack
    installed = {place: getattr(*place) for place in library}
    for (owner, name), function in library.items():
        setattr(owner, name, function)
    try:
        yield
    finally:
        for (owner, name), function in installed.items():
            setattr(owner, name, function)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def metric(text: str, name: str) -> float:
    return sum(float(m.group(1)) for m in re.finditer(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.M))


def scrape(port: int) -> str:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            return response.read().decode()
    except OSError:
        return ""


def metric_where(text: str, name: str, **labels: str) -> float:
    """Sum of ``name`` over the series whose labels include ``labels``."""
    total = 0.0
    for m in re.finditer(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", text, re.M):
        have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(1) or ""))
        if all(have.get(k) == v for k, v in labels.items()):
            total += float(m.group(2))
    return total


# Run before `gatewatch serve` by the ES mode: CPU time inside the consumers' polls, in /metrics.
CPU_PREAMBLE = """
import sys, threading, time
from prometheus_client.core import GaugeMetricFamily
import gatewatch.metrics, gatewatch.serve_detect, ingest.sources.kafka
_cpu = {"ingest_poll": 0.0, "detect_poll": 0.0}
def _wrap(cls, name, key):
    original = getattr(cls, name)
    def timed(*args, **kwargs):
        started = time.thread_time()
        try:
            return original(*args, **kwargs)
        finally:
            _cpu[key] += time.thread_time() - started
    setattr(cls, name, timed)
_wrap(ingest.sources.kafka.KafkaSource, "poll", "ingest_poll")
_wrap(gatewatch.serve_detect.DetectStage, "_poll", "detect_poll")
class _Cpu:
    def collect(self):
        g = GaugeMetricFamily("bench_cpu_seconds", "CPU seconds", labels=["part"])
        g.add_metric(["process"], time.process_time())
        for key, value in _cpu.items():
            g.add_metric([key], value)
        for t in threading.enumerate():
            try:
                g.add_metric(["thread:" + t.name], time.clock_gettime(time.pthread_getcpuclockid(t.ident)))
            except (OSError, TypeError, AttributeError):
                pass
        yield g
_init = gatewatch.metrics.ServeMetrics.__init__
def _init_with_cpu(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.registry.register(_Cpu())
gatewatch.metrics.ServeMetrics.__init__ = _init_with_cpu
import gatewatch.cli
sys.exit(gatewatch.cli.main(sys.argv[1:]))
"""


def start_serve(
    config_path: Path, port: int, log_path: Path, store: str = "none", cpu: bool = False, stages: str = "all"
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    entry = ["-c", CPU_PREAMBLE] if cpu else ["-m", "gatewatch.cli"]
    if probe := os.environ.get("GW_BENCH_MEM_PROBE"):  # a directory: one memory series per process (mem_probe.py)
        entry = [str(REPO / "bench" / "mem_probe.py"), str(Path(probe) / f"{log_path.stem}.jsonl")]
    return subprocess.Popen(
        [sys.executable, *entry, "serve", "--config", str(config_path), "--store", store,
         "--listen", f"127.0.0.1:{port}", "--stages", stages],
        cwd=REPO, env=env, stdout=log_path.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def write_config(
    directory: Path,
    bootstrap: str,
    topics: dict[str, str],
    group: str,
    index_prefix: str | None = None,
    correlate: dict[str, float] | None = None,
    checkpoint_interval_secs: float | None = None,
    instance_id: str | None = None,
    detect_partitions: int | None = None,
) -> Path:
    path = directory / f"{group}.yaml"
    config: dict[str, Any] = {
        "gateway": {"json_format": DEMO_JSON_FORMAT},
        "trust": {"gateway_networks": ["10.0.0.0/24"]},
        "kafka": {"bootstrap_servers": [bootstrap], "group_id": group,
                  "topics": {"gateway": topics["gateway"], "app": topics["app"], "alerts": f"{group}-alerts"}},
    }  # fmt: skip
    if index_prefix is not None:
        config["store"] = {"index_prefix": index_prefix}
    if correlate:
        config["correlate"] = correlate
    if checkpoint_interval_secs is not None:
        config["kafka"]["checkpoint_interval_secs"] = checkpoint_interval_secs
    if instance_id is not None:
        config["kafka"]["instance_id"] = instance_id
    if detect_partitions is not None:
        config["kafka"]["detect_partitions"] = detect_partitions
    path.write_text(yaml.safe_dump(config))
    return path


class ServeGroup:
    """``gatewatch serve`` processes started together in one group; their logs and /metrics.

    ``processes`` run both stages; with ``detect_process`` they run ingest only,
    and one more process runs detection only.
    """

    def __init__(
        self,
        directory: Path,
        config_path: Path,
        group: str,
        processes: int,
        store: str = "none",
        cpu: bool = False,
        detect_process: bool = False,
    ) -> None:
        self.group = group
        stages = ["ingest"] * processes + ["detect"] if detect_process else ["all"] * processes
        self.ports = [free_port() for _ in stages]
        self.logs = [directory / f"{group}-{i}.log" for i in range(len(stages))]
        self.procs = [
            start_serve(config_path, port, log, store, cpu, role)
            for port, log, role in zip(self.ports, self.logs, stages)
        ]

    def scrape(self) -> list[str]:
        """Each process's /metrics text; exits with the log's tail if one of them died."""
        texts = [scrape(port) for port in self.ports]
        for proc, log in zip(self.procs, self.logs):
            if proc.poll() is not None:
                raise SystemExit(f"serve exited: {log.read_text()[-2000:]}")
        return texts

    def stop(self, timeout_secs: float = 120.0) -> None:
        for proc in self.procs:
            proc.send_signal(signal.SIGTERM)
        for proc in self.procs:
            proc.wait(timeout=timeout_secs)


def detect_done(texts: list[str], total: int, last_ts: float) -> bool:
    """Detection has caught up: every process that owns detect tasks has its slowest task's event time within
    the allowed lateness (120 s) and 2 s of slack of the last event time.

    Counting events is not enough: a task restored after a rebalance re-reads from its checkpoint, so
    an event can be applied twice.
    """
    owners = [t for t in texts if metric(t, "gatewatch_detect_owner") == 1]
    return bool(owners) and all(metric(t, "gatewatch_watermark_seconds") >= last_ts - 122 for t in owners)


def detect_shares(texts: list[str]) -> list[float]:
    """Each process's share of the events its join tasks applied (the detect records)."""
    counts = [metric_where(t, "gatewatch_task_records_total", role="requests") for t in texts]
    whole = sum(counts) or 1.0
    return [count / whole for count in counts]
