"""How fast does ``gatewatch serve`` consume, next to a bare kafka-python consumer?

    services/up.sh kafka
    PYTHONPATH=. .venv/bin/python bench/bench_serve.py --requests 100000

Produces ``--requests`` requests (one gateway line + one app line each, both
JSON, keyed by request id) to two fresh 4-partition topics, then measures on
the same records:

1. bare: a tuned kafka-python consumer (the settings serve uses) reading every
   record and ``orjson.loads``-ing its value;
2. serve: ``gatewatch serve --store none`` as a subprocess, timed from its
   first received record to its last (the ingest stage, read from /metrics)
   and to the detect stage's last event (end to end), plus the detect
   stage's checkpoint size and time;
3. restart: ``kill -9`` once the detect stage checkpointed in a second
   group's run, then the time until the restarted process resumed (ingest from
   committed offsets, detect from its checkpoint) and caught up;
4. with ``--elasticsearch URL`` (default ``$GW_ELASTICSEARCH_URL``): the raw
   ``_bulk`` rate of the documents serve writes for these records (events,
   transactions, alerts, made by the pipeline and serialized beforehand; only
   the official client's bulk calls are timed, one request at a time), then
   ``serve --store elasticsearch:URL`` (``--es-processes`` replicas) from its
   first record to its last event stored, counting every document stored by
   then. CPU: serve's threads (``thread_time``, through a preamble that wraps
   the consumers' polls), the whole machine and the search node's JVMs
   (``/proc``) over each window: on a 2-core machine the node and serve share
   the cores, which bounds the ratio.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import yaml
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from gatewatch.demo.render import DEMO_JSON_FORMAT, JWT_JTI, JWT_ORG, JWT_SUB, render_json  # noqa: E402
from ingest.sources.kafka import consumer_settings  # noqa: E402

T0 = 1772442000.0  # 2026-03-02T09:00:00Z


def iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int(ts * 1000) % 1000:03d}Z"


def traffic(requests: int, rate_per_sec: float) -> list[tuple[str, bytes, bytes]]:
    """(side, key, value) in time order: one gateway and one app record per request."""
    out: list[tuple[str, bytes, bytes]] = []
    for i in range(requests):
        ts = T0 + i / rate_per_sec
        rid = f"{uuid.UUID(int=i * 7919 + 1)}"
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


def produce(bootstrap: str, topics: dict[str, str], records: list[tuple[str, bytes, bytes]]) -> float:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics({t: {"num_partitions": 4} for t in topics.values()}, wait_for_metadata=True)
    admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=1 << 20, compression_type=None)
    started = time.perf_counter()
    for side, key, value in records:
        producer.send(topics[side], key=key, value=value)
    producer.flush()
    producer.close()
    return time.perf_counter() - started


class _Kafka:
    def __init__(self, bootstrap: str) -> None:
        self.bootstrap_servers = [bootstrap]
        self.security: dict[str, str] = {}


def bare_consume(bootstrap: str, topics: dict[str, str], total: int) -> float:
    consumer = KafkaConsumer(group_id=None, **consumer_settings(_Kafka(bootstrap)))
    partitions = [TopicPartition(t, p) for t in topics.values() for p in range(4)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    seen = 0
    started = None
    while seen < total:
        for messages in consumer.poll(timeout_ms=1000).values():
            if started is None:
                started = time.perf_counter()
            for message in messages:
                orjson.loads(message.value)
            seen += len(messages)
    elapsed = time.perf_counter() - (started or time.perf_counter())
    consumer.close()
    return elapsed


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
    config_path: Path, port: int, log_path: Path, store: str = "none", cpu: bool = False
) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    entry = ["-c", CPU_PREAMBLE] if cpu else ["-m", "gatewatch.cli"]
    return subprocess.Popen(
        [sys.executable, *entry, "serve", "--config", str(config_path), "--store", store,
         "--listen", f"127.0.0.1:{port}"],
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
    path.write_text(yaml.safe_dump(config))
    return path


def run_serve(
    directory: Path, bootstrap: str, topics: dict[str, str], total: int, processes: int = 1
) -> dict[str, float]:
    """``processes`` serve processes in one group, started together; timings from the first record anywhere."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    ports = [free_port() for _ in range(processes)]
    config_path = write_config(directory, bootstrap, topics, group)
    launched = time.perf_counter()
    procs = [start_serve(config_path, port, directory / f"{group}-{i}.log") for i, port in enumerate(ports)]
    first = last = detected = None
    received = 0.0
    text = ""
    last_ts = T0 + total / 2 / RATE_PER_SEC
    try:
        while detected is None:
            texts = [scrape(port) for port in ports]
            received = sum(metric(t, "component_received_events_total") for t in texts)
            now = time.perf_counter()
            if received and first is None:
                first = now
            if last is None and received >= total:
                last = now
            # No bad lines: every record is an event. With several processes an event can be read
            # by two owners (a takeover re-reads from the checkpoint): then wait for the owner's
            # watermark to reach the last event time (less allowed lateness, 120 s, and 2 s of slack).
            if processes == 1:
                done = metric(texts[0], "gatewatch_detect_events_total") >= total
            else:
                done = any(metric(t, "gatewatch_detect_owner") == 1
                           and metric(t, "gatewatch_watermark_seconds") >= last_ts - 122 for t in texts)  # fmt: skip
            if done:
                detected = now
            for i, proc in enumerate(procs):
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited: {(directory / f'{group}-{i}.log').read_text()[-2000:]}")
            time.sleep(SCRAPE_SECS)
        time.sleep(CHECKPOINT_WAIT_SECS)
        text = max((scrape(port) for port in ports), key=lambda t: metric(t, "gatewatch_detect_owner"))
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=60)
    assert first is not None
    return {
        "startup_secs": first - launched,
        "consume_secs": last - first,  # type: ignore[operator]
        "end_to_end_secs": detected - first,
        "checkpoint_bytes": metric(text, "gatewatch_checkpoint_bytes"),
        "checkpoint_secs": metric(text, "gatewatch_checkpoint_duration_seconds_sum")
        / max(1.0, metric(text, "gatewatch_checkpoint_duration_seconds_count")),
        "checkpoints": metric(text, "gatewatch_checkpoint_duration_seconds_count"),
    }


CHECKPOINT_WAIT_SECS = 11.0  # longer than the default kafka.checkpoint_interval_secs
# /metrics is scraped this often while timing: each scrape costs serve ~2 ms of CPU.
SCRAPE_SECS = 0.2
RATE_PER_SEC = 200.0  # requests per second of event time (set from --rate)


def run_restart(directory: Path, bootstrap: str, topics: dict[str, str], total: int) -> dict[str, float]:
    """kill -9 once a detect checkpoint covers part of the input; time the restart."""
    group = f"bench-kill-{uuid.uuid4().hex[:8]}"
    # A first checkpoint within 2 s, so that the kill comes while most of the records are still unread.
    config_path = write_config(directory, bootstrap, topics, group, checkpoint_interval_secs=2.0)
    port = free_port()
    proc = start_serve(config_path, port, directory / f"{group}-1.log")
    try:
        while metric(scrape(port), "gatewatch_checkpoint_duration_seconds_count") < 1:
            time.sleep(SCRAPE_SECS)
        received_before = metric(scrape(port), "component_received_events_total")
    finally:
        proc.kill()
        proc.wait()
    killed = time.perf_counter()
    log2 = directory / f"{group}-2.log"
    proc = start_serve(config_path, port, log2)
    resumed = detect_resumed = caught_up = None
    remaining = total
    try:
        while caught_up is None or detect_resumed is None:
            text = scrape(port)
            log_text = log2.read_text()
            if resumed is None:
                match = re.search(r"event=resumed stage=ingest how=committed_offsets .*offsets=(\S+)", log_text)
                if match:
                    resumed = time.perf_counter()
                    remaining = total - sum(int(item.rsplit("@", 1)[1]) for item in match.group(1).split(","))
            if detect_resumed is None and "event=resumed how=checkpoint stage=detect" in log_text:
                detect_resumed = time.perf_counter()
            if caught_up is None and resumed is not None and metric(text, "component_received_events_total") >= remaining:
                caught_up = time.perf_counter()
            if proc.poll() is not None:
                raise SystemExit(f"serve exited: {log2.read_text()[-2000:]}")
            time.sleep(SCRAPE_SECS)
        loaded = re.search(r"event=checkpoint_loaded .*bytes=(\d+) .*read_secs=(\S+)", log2.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {
        "received_before_kill": received_before,
        "restart_to_resumed_secs": (resumed or killed) - killed,
        "restart_to_detect_resumed_secs": (detect_resumed or killed) - killed,
        "restart_to_caught_up_secs": caught_up - killed,
        "checkpoint_read_secs": float(loaded.group(2)) if loaded else float("nan"),
        "checkpoint_state_bytes": float(loaded.group(1)) if loaded else float("nan"),
    }

# -- Elasticsearch mode --------------------------------------------------------------------


def read_raw_records(bootstrap: str, topics: dict[str, str], total: int) -> list[Any]:
    """Every produced record as the ingest stage sees it (RawRecord with topic/partition and offset)."""
    from ingest.records import Dataset, Origin, RawRecord
    from ingest.sources.kafka import stream_name

    datasets = {topics["gateway"]: Dataset.GATEWAY, topics["app"]: Dataset.APP}
    consumer = KafkaConsumer(group_id=None, **consumer_settings(_Kafka(bootstrap)))
    partitions = [TopicPartition(t, p) for t in topics.values() for p in range(4)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    records: list[Any] = []
    while len(records) < total:
        for tp, messages in consumer.poll(timeout_ms=1000).items():
            stream, dataset = stream_name(tp), datasets[tp.topic]
            records.extend(RawRecord(Origin(dataset, stream, m.offset), m.value or b"") for m in messages)
    consumer.close()
    return records


def es_client(url: str) -> Any:
    from elasticsearch import Elasticsearch

    return Elasticsearch(url, request_timeout=120, max_retries=0, retry_on_timeout=False)


def es_cleanup(url: str, prefixes: list[str]) -> None:
    """Delete the indices, index templates and ILM policy of each prefix (missing ones are fine)."""
    from elasticsearch import BadRequestError, NotFoundError

    from schemas.templates import INDEX_KINDS, template_name

    es = es_client(url)
    try:
        for prefix in prefixes:
            rows = es.cat.indices(index=f"{prefix}-*", h="index", format="json", expand_wildcards="all").body
            names = [row["index"] for row in rows]
            for start in range(0, len(names), 50):  # by name: wildcard deletes may be refused
                es.indices.delete(index=",".join(names[start : start + 50]), ignore_unavailable=True)
            for kind in INDEX_KINDS:
                try:
                    es.indices.delete_index_template(name=template_name(kind, prefix))
                except NotFoundError:
                    pass
            try:
                es.ilm.delete_lifecycle(name=f"{prefix}-retention")
            except (NotFoundError, BadRequestError):  # none, or no ILM on this node
                pass
    finally:
        es.close()


def es_count(url: str, pattern: str) -> int:
    es = es_client(url)
    try:
        es.indices.refresh(index=pattern)
        return int(es.count(index=pattern).body["count"])
    finally:
        es.close()


def raw_bulk(url: str, config_path: Path, records: list[Any], prefix: str) -> dict[str, Any]:
    """Time only the official client's bulk calls, on the documents serve writes, pre-serialized.

    Those documents are made by the pipeline itself (events, transactions,
    alerts of ``records``), so both rows index the same mix.
    """
    from types import SimpleNamespace

    from gatewatch.config import load_config
    from gatewatch.topology import Pipeline
    from ingest.sinks.search import MAX_BULK_BYTES, SearchSink, _chunks, bulk_body
    from ingest.sinks.search_clients import _BULK_FILTER

    config = load_config(config_path)
    pipeline = Pipeline(config)
    streams = sorted({record.origin.stream for record in records})
    for stream in streams:
        pipeline.open_stream(stream)
    pipeline.feed(records)
    for stream in streams:
        pipeline.close_stream(stream)
    pipeline.finish()
    batch = pipeline.drain()
    if batch.dead_letters:
        raise SystemExit(f"{len(batch.dead_letters)} records did not parse: {batch.dead_letters[0]}")
    max_docs = config.store.bulk_max_docs
    # The same index templates (mappings, settings) serve installs for its own prefix.
    store = SimpleNamespace(index_prefix=prefix, retention_days=config.store.retention_days, bulk_max_docs=max_docs)
    sink = SearchSink.connect("elasticsearch", url, store)
    actions = sink._batch_actions(batch, time.time())
    sink.close()
    bodies = [(len(chunk), bulk_body(chunk)) for chunk in _chunks(actions, max_docs, MAX_BULK_BYTES)]
    es = es_client(url)
    responses = []
    window = CpuWindow()
    try:
        window.start()
        started = time.perf_counter()
        for _, body in bodies:
            responses.append(es.bulk(operations=body, filter_path=_BULK_FILTER, refresh=False).body)
        elapsed = time.perf_counter() - started
        window.stop()
    finally:
        es.close()
    stored = sum(1 for r in responses for item in r.get("items", []) if 200 <= item["index"]["status"] < 300)
    if stored != len(actions):
        raise SystemExit(f"raw bulk: {stored} of {len(actions)} documents stored")
    kinds = Counter(action.kind for action in actions)
    return {"secs": elapsed, "docs": float(len(actions)), "requests": float(len(bodies)), "kinds": dict(kinds),
            "body_mib": sum(len(b) for _, b in bodies) / 2**20, "batch": float(max_docs),
            "machine_cpu": window.machine, "node_cpu": window.node}  # fmt: skip


def machine_busy_secs() -> float:
    """CPU seconds every core of this machine spent busy (not idle or iowait), from /proc/stat."""
    fields = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def group_cpu_secs(pgid: int | None) -> float:
    """CPU seconds used so far by the processes of process group ``pgid`` (the search node's JVMs)."""
    if pgid is None:
        return float("nan")
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def node_pgid() -> int | None:
    """The Elasticsearch launcher's pid (its process group), if services/up.sh started it here."""
    path = REPO / ".cache" / "run" / "elasticsearch.pid"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class CpuWindow:
    """Machine-wide and search-node CPU seconds between ``start`` and ``stop``."""

    def __init__(self) -> None:
        self.pgid = node_pgid()
        self.machine = self.node = 0.0

    def start(self) -> None:
        self.machine, self.node = machine_busy_secs(), group_cpu_secs(self.pgid)

    def stop(self) -> None:
        self.machine, self.node = machine_busy_secs() - self.machine, group_cpu_secs(self.pgid) - self.node


def store_docs(text: str) -> float:
    """Documents serve has stored so far: events, transactions, alerts and dead letters."""
    return sum(metric_where(text, "component_sent_events_total", component="store", kind=kind)
               for kind in ("events", "transactions", "alerts", "dead_letters"))  # fmt: skip


def cpu_parts(text: str) -> dict[str, float]:
    """CPU seconds by part, summed over the processes whose metrics ``text`` joins."""
    parts: dict[str, float] = {}
    for m in re.finditer(r'^bench_cpu_seconds\{part="([^"]*)"\} (\S+)$', text, re.M):
        parts[m.group(1)] = parts.get(m.group(1), 0.0) + float(m.group(2))
    return parts


def run_serve_es(
    directory: Path, bootstrap: str, topics: dict[str, str], total: int, url: str, prefix: str, processes: int = 1
) -> dict[str, Any]:
    """``processes`` ``serve --store elasticsearch:URL`` in one group; times from the first record to the last event stored.

    Metrics are summed over the processes (each scrape is one text per process, joined).
    """
    group = f"bench-es-{uuid.uuid4().hex[:8]}"
    ports = [free_port() for _ in range(processes)]
    config_path = write_config(directory, bootstrap, topics, group, prefix)
    logs = [directory / f"{group}-{i}.log" for i in range(processes)]
    procs = [start_serve(config_path, port, log, store=f"elasticsearch:{url}", cpu=True) for port, log in zip(ports, logs)]
    first = events_done = detected = None
    text = first_text = done_text = ""
    window = CpuWindow()
    last_ts = T0 + total / 2 / RATE_PER_SEC
    try:
        while detected is None:
            texts = [scrape(port) for port in ports]
            text = "\n".join(texts)
            now = time.perf_counter()
            if first is None and metric(text, "component_received_events_total"):
                first, first_text = now, text
                window.start()
            if events_done is None and metric_where(text, "component_sent_events_total", kind="events") >= total:
                events_done, done_text = now, text
                window.stop()
            # With several processes a takeover re-reads from a checkpoint: wait for the owner's watermark instead.
            if events_done is not None and any(
                metric(t, "gatewatch_detect_owner") == 1
                and (metric(t, "gatewatch_detect_events_total") >= total
                     or metric(t, "gatewatch_watermark_seconds") >= last_ts - 122)
                for t in texts
            ):  # fmt: skip
                detected = now
            for proc, log in zip(procs, logs):
                if proc.poll() is not None:
                    raise SystemExit(f"serve exited: {log.read_text()[-2000:]}")
            time.sleep(SCRAPE_SECS)
        time.sleep(2.0)  # the detect stage's last batch to the store
        text = "\n".join(scrape(port) for port in ports)
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=120)
    assert first is not None and events_done is not None

    cpu0, cpu1 = cpu_parts(first_text), cpu_parts(done_text)
    cpu = {k: cpu1[k] - cpu0.get(k, 0.0) for k in cpu1}
    return {
        "events_secs": events_done - first,
        "docs_at_events_done": store_docs(done_text),
        "detect_secs": detected - first,
        "bulks": metric(done_text, "store_bulk_duration_seconds_count"),
        "bulk_secs": metric(done_text, "store_bulk_duration_seconds_sum"),
        "cpu": cpu,
        "consumer_io_thread": f"kafka-io-gatewatch-{group}",  # the ingest consumer's kafka-python IO thread
        "events_counted": es_count(url, f"{prefix}-events-*"),
        "machine_cpu": window.machine,
        "node_cpu": window.node,
        "processes": processes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("GW_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--requests", type=int, default=100_000, help="requests (2 records each)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second of event time")
    parser.add_argument("--skip-restart", action="store_true")
    parser.add_argument("--logs", type=Path, help="keep configs and serve logs in this folder")
    parser.add_argument("--skip-none", action="store_true", help="skip the serve --store none row")
    parser.add_argument("--processes", type=int, default=1, help="serve processes in one group (the serve row)")
    parser.add_argument("--elasticsearch", default=os.environ.get("GW_ELASTICSEARCH_URL") or None, metavar="URL",
                        help="also compare raw _bulk with serve --store elasticsearch:URL (default $GW_ELASTICSEARCH_URL)")
    parser.add_argument("--es-processes", type=int, default=1, help="serve processes in one group (the ES rows)")
    parser.add_argument("--no-elasticsearch", dest="elasticsearch", action="store_const", const=None)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    topics = {"gateway": f"bench-{run}-gateway", "app": f"bench-{run}-app"}
    global RATE_PER_SEC
    RATE_PER_SEC = args.rate
    records = traffic(args.requests, args.rate)
    total = len(records)
    size = sum(len(v) for _, _, v in records)
    produce_secs = produce(args.bootstrap, topics, records)
    print(f"records {total:,} ({size / total:.0f} B avg, {size / 2**20:.1f} MiB) produced in {produce_secs:.1f}s")

    bare_secs = bare_consume(args.bootstrap, topics, total)
    raw = es = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            tmp = str(args.logs)
        serve = None if args.skip_none else run_serve(Path(tmp), args.bootstrap, topics, total, args.processes)
        restart = None if args.skip_restart else run_restart(Path(tmp), args.bootstrap, topics, total)
        if args.elasticsearch:
            url = args.elasticsearch
            prefixes = [f"bench-{run}-raw", f"bench-{run}-serve"]
            try:
                config_path = write_config(Path(tmp), args.bootstrap, topics, f"bench-{run}-parse", prefixes[0])
                raw = raw_bulk(url, config_path, read_raw_records(args.bootstrap, topics, total), prefixes[0])
                es = run_serve_es(Path(tmp), args.bootstrap, topics, total, url, prefixes[1], args.es_processes)
            finally:
                es_cleanup(url, prefixes)
    print(f"{'':34}{'seconds':>10}{'records/s':>12}")
    print(f"{'bare kafka-python + orjson.loads':34}{bare_secs:10.2f}{total / bare_secs:12,.0f}")
    if serve:
        print_serve(serve, bare_secs, total, args.processes)
    if raw and es:
        print_es(raw, es, total)
    if restart:
        print_restart(restart)


def print_serve(serve: dict[str, float], bare_secs: float, total: int, processes: int) -> None:
    serve_secs = serve["consume_secs"]
    print(f"{'serve --store none, ingest':34}{serve_secs:10.2f}{total / serve_secs:12,.0f}"
          f"   ({bare_secs / serve_secs:.0%} of bare; {processes} process(es))")  # fmt: skip
    print(f"{'serve, end to end (detect stage)':34}{serve['end_to_end_secs']:10.2f}"
          f"{total / serve['end_to_end_secs']:12,.0f}")  # fmt: skip
    print(f"serve startup (launch to first record) {serve['startup_secs']:.2f}s")
    print(f"checkpoint: state {serve['checkpoint_bytes'] / 1024:,.0f} KiB (last), "
          f"{serve['checkpoint_secs'] * 1000:.0f} ms mean over {serve['checkpoints']:.0f} saves")  # fmt: skip


def print_es(raw: dict[str, Any], es: dict[str, Any], total: int) -> None:
    raw_rate = raw["docs"] / raw["secs"]
    ev_rate = total / es["events_secs"]
    # Transactions trail the events by the join window and the reorder buffer, so serve's
    # throughput is every document it stored from the first record to the last event stored.
    all_rate = es["docs_at_events_done"] / es["events_secs"]
    mix = ", ".join(f"{count:,} {kind}" for kind, count in sorted(raw["kinds"].items()))
    print(f"{'':34}{'seconds':>10}{'docs/s':>12}")
    print(f"{'raw _bulk, serve docs (1 client)':34}{raw['secs']:10.2f}{raw_rate:12,.0f}"
          f"   ({mix}; {raw['requests']:.0f} requests of <= {raw['batch']:.0f} docs, {raw['body_mib']:.0f} MiB)")
    print(f"{'serve --store elasticsearch':34}{es['events_secs']:10.2f}{all_rate:12,.0f}"
          f"   ({all_rate / raw_rate:.2f} of raw _bulk; {es['docs_at_events_done']:,.0f} docs: events, transactions, "
          f"alerts; {es['processes']} process(es))")
    print(f"{'serve, events alone':34}{es['events_secs']:10.2f}{ev_rate:12,.0f}   ({ev_rate / raw_rate:.2f} of raw)")
    print(f"serve detect stage done {es['detect_secs']:.2f}s after the first record")
    print(f"serve bulk writes until events done: {es['bulks']:.0f} batches, {es['bulk_secs']:.2f}s in the sink "
          f"({es['bulk_secs'] / es['events_secs']:.0%} of the window); events in ES by _count: "
          f"{es['events_counted']:,} of {total:,}")  # fmt: skip
    cpu = es["cpu"]
    proc_cpu = cpu.get("process", 0.0)
    print(f"serve CPU over that window (thread CPU time, see the docstring): {proc_cpu:.2f}s "
          f"= {proc_cpu / es['events_secs']:.2f} cores (all serve processes); ingest consumer poll {cpu.get('ingest_poll', 0):.2f}s "
          f"({cpu.get('ingest_poll', 0) / proc_cpu:.0%} of process CPU), detect consumer poll "
          f"{cpu.get('detect_poll', 0):.2f}s ({cpu.get('detect_poll', 0) / proc_cpu:.0%})")  # fmt: skip
    consumer = cpu.get("ingest_poll", 0.0) + cpu.get("thread:" + es["consumer_io_thread"], 0.0)
    print(f"  ingest consumer = its poll + its kafka-python IO thread: {consumer:.2f}s, "
          f"{consumer / proc_cpu:.0%} of serve's CPU")  # fmt: skip
    print(f"machine CPU (all {os.cpu_count()} cores, busy seconds / window): raw _bulk "
          f"{raw['machine_cpu'] / raw['secs']:.2f} cores, search node {raw['node_cpu'] / raw['secs']:.2f}; "
          f"serve window {es['machine_cpu'] / es['events_secs']:.2f} cores, search node "
          f"{es['node_cpu'] / es['events_secs']:.2f}")  # fmt: skip
    threads = sorted(((v, k[7:]) for k, v in cpu.items() if k.startswith("thread:")), reverse=True)
    print("  by thread: " + ", ".join(f"{name} {secs:.2f}s ({secs / proc_cpu:.0%})" for secs, name in threads))


def print_restart(restart: dict[str, float]) -> None:
    print(f"kill -9 after {restart['received_before_kill']:,.0f} records: ingest resumed "
          f"{restart['restart_to_resumed_secs']:.2f}s after the kill, detect from its checkpoint "
          f"{restart['restart_to_detect_resumed_secs']:.2f}s after (checkpoint read "
          f"{restart['checkpoint_read_secs']:.2f}s, {restart['checkpoint_state_bytes'] / 1024:,.0f} KiB), "
          f"caught up {restart['restart_to_caught_up_secs']:.2f}s after")  # fmt: skip


if __name__ == "__main__":
    main()
