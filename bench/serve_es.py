"""bench_serve's Elasticsearch rows: raw ``_bulk`` of serve's documents against ``serve --store elasticsearch``.

The raw row bulk-indexes the documents serve writes for the benchmark's
records (events, transactions, alerts, made by the pipeline and serialized
beforehand; only the official client's bulk calls are timed, one request at a
time). The serve row runs ``--es-processes`` replicas from the first record to
the last event stored, counting every document stored by then. CPU: serve's
threads (``thread_time``, through :data:`serve_harness.CPU_PREAMBLE`), the
whole machine and the search node's JVMs (``/proc``) over each window: on a
2-core machine the node and serve share the cores, which bounds the ratio.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from serve_harness import REPO, SCRAPE_SECS, T0, ServeGroup, consume_all, detect_done, metric, metric_where, write_config


def read_raw_records(bootstrap: str, topics: dict[str, str], total: int) -> list[Any]:
    """Every produced record as the ingest stage sees it (RawRecord with topic/partition and offset)."""
    from ingest.records import Dataset, Origin, RawRecord
    from ingest.sources.kafka import stream_name

    datasets = {topics["gateway"]: Dataset.GATEWAY, topics["app"]: Dataset.APP}
    records: list[Any] = []
    for tp, messages in consume_all(bootstrap, topics, total):
        stream, dataset = stream_name(tp), datasets[tp.topic]
        records.extend(RawRecord(Origin(dataset, stream, m.offset), m.value or b"") for m in messages)
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


def node_pgid(service: str = "elasticsearch") -> int | None:
    """The pid (and process group) of ``service`` (its launcher), if services/up.sh started it here."""
    path = REPO / ".cache" / "run" / f"{service}.pid"
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


class CpuWindow:
    """Machine-wide and one service's CPU seconds (the search node's by default) between ``start`` and ``stop``."""

    def __init__(self, service: str = "elasticsearch") -> None:
        self.pgid = node_pgid(service)
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
    directory: Path,
    bootstrap: str,
    topics: dict[str, str],
    total: int,
    rate: float,
    url: str,
    prefix: str,
    processes: int = 1,
) -> dict[str, Any]:
    """``processes`` ``serve --store elasticsearch:URL`` in one group; times from the first record to the last event stored.

    Metrics are summed over the processes (each scrape is one text per process, joined).
    """
    group = f"bench-es-{uuid.uuid4().hex[:8]}"
    config_path = write_config(directory, bootstrap, topics, group, prefix)
    serves = ServeGroup(directory, config_path, group, processes, store=f"elasticsearch:{url}", cpu=True)
    first = events_done = detected = None
    text = first_text = done_text = ""
    window = CpuWindow()
    last_ts = T0 + total / 2 / rate
    try:
        while detected is None:
            texts = serves.scrape()
            text = "\n".join(texts)
            now = time.perf_counter()
            if first is None and metric(text, "component_received_events_total"):
                first, first_text = now, text
                window.start()
            if events_done is None and metric_where(text, "component_sent_events_total", kind="events") >= total:
                events_done, done_text = now, text
                window.stop()
            if events_done is not None and detect_done(texts, total, last_ts):
                detected = now
            time.sleep(SCRAPE_SECS)
    finally:
        serves.stop()
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
