"""Two ``gatewatch serve`` processes in one consumer group, one of them killed -9 (or stopped) mid-stream
and restarted.

The demo generator's traffic (every rule's attacks and look-alikes, bad lines)
goes to 4-partition topics keyed by request id, so each process ingests a
share of every client's, route's and token's records. The store is
Elasticsearch (DuckDB takes one writing process per file), with an index
prefix of its own. Afterwards the indices must hold every record exactly once
(events + dead letters, by origin) and the alerts of ``gatewatch replay`` over
the same lines: detection is split by key over the processes' tasks, each
checkpointed with the offset it covers, so neither the split nor the failover
may change them.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from test_serve import Line, Serve, Topics, demo_traffic, replay_alerts, topics, wait_for  # noqa: F401 (fixture)

AlertKey = tuple[str, str, str, str, int, frozenset[str]]


def split_halves(lines: list[Line]) -> tuple[list[Line], list[Line]]:
    """Each side's traffic cut in two, in order; the per-partition tails go last."""
    halves: tuple[list[Line], list[Line]] = ([], [])
    for side in ("gateway", "app"):
        own = [line for line in lines if line.side == side and line.partition is None]
        halves[0].extend(own[: len(own) // 2])
        halves[1].extend(own[len(own) // 2 :])
    halves[1].extend(line for line in lines if line.partition is not None)
    return halves


def internal_partitions(topics: Topics) -> list[TopicPartition]:
    """Every partition of the group's three internal topics (requests, keyed, findings)."""
    consumer = KafkaConsumer(bootstrap_servers=topics.bootstrap)
    try:
        return [TopicPartition(f"{topics.group}-{role}", p)
                for role in ("requests", "keyed", "findings")
                for p in sorted(consumer.partitions_for_topic(f"{topics.group}-{role}") or ())]  # fmt: skip
    finally:
        consumer.close()


def detect_caught_up(topics: Topics) -> bool:
    """The detect group has committed (i.e. checkpointed) every internal partition up to its end as of now."""
    partitions = internal_partitions(topics)
    consumer = KafkaConsumer(bootstrap_servers=topics.bootstrap)
    admin = KafkaAdminClient(bootstrap_servers=topics.bootstrap)
    try:
        end = consumer.end_offsets(partitions)
        deadline = time.monotonic() + 30
        group = f"{topics.group}-detect"
        while time.monotonic() < deadline:
            committed = admin.list_group_offsets({group: None}).get(group, {})
            if partitions and all(end[tp] == 0 or (tp in committed and committed[tp].offset >= end[tp])
                                  for tp in partitions):  # fmt: skip
                return True
            time.sleep(0.5)
        return False
    finally:
        consumer.close()
        admin.close()


class Indices:
    def __init__(self, url: str, prefix: str) -> None:
        self.prefix = prefix
        self.http = httpx.Client(base_url=url, timeout=60.0)

    def all(self, kind: str, fields: list[str]) -> list[dict[str, Any]]:
        self.http.post(f"/{self.prefix}-{kind}-*/_refresh").raise_for_status()
        response = self.http.post(f"/{self.prefix}-{kind}-*/_search", params={"scroll": "1m"},
                                  json={"size": 5000, "_source": fields, "sort": ["_doc"]})  # fmt: skip
        response.raise_for_status()
        body = response.json()
        hits = list(body["hits"]["hits"])
        while body["hits"]["hits"]:
            response = self.http.post("/_search/scroll", json={"scroll": "1m", "scroll_id": body["_scroll_id"]})
            response.raise_for_status()
            body = response.json()
            hits.extend(body["hits"]["hits"])
        return hits

    def origins(self) -> Counter[tuple[str, int]]:
        found: Counter[tuple[str, int]] = Counter()
        for hit in self.all("events", ["gatewatch.origin.stream", "gatewatch.origin.offset"]):
            source = hit["_source"]
            origin = source.get("gatewatch", {}).get("origin") or {
                "stream": source["gatewatch.origin.stream"], "offset": source["gatewatch.origin.offset"]
            }  # fmt: skip
            found[(origin["stream"], int(origin["offset"]))] += 1
        for hit in self.all("deadletter", ["stream", "offset"]):
            found[(hit["_source"]["stream"], int(hit["_source"]["offset"]))] += 1
        return found

    def alerts(self) -> set[AlertKey]:
        found = set()
        for hit in self.all("alerts", ["id", "rule", "entity", "count", "request_ids"]):
            s = hit["_source"]
            entity = s["entity"]
            found.add((s["id"], s["rule"], entity["type"], entity["value"], int(s["count"]), frozenset(s["request_ids"])))
        return found

    def cleanup(self) -> None:
        response = self.http.get(f"/_cat/indices/{self.prefix}-*", params={"format": "json", "h": "index"})
        names = [row["index"] for row in response.json()] if response.is_success else []
        if names:
            self.http.delete("/" + ",".join(names))
        for kind in ("events", "deadletter", "transactions", "alerts"):
            self.http.delete(f"/_index_template/{self.prefix}-{kind}")
        self.http.close()


def demo_on_elasticsearch(
    topics: Topics, tmp_path: Path, elasticsearch_url: str, name: str
) -> tuple[list[Line], Path, Indices]:
    """The demo's lines, a serve config for them storing under a fresh index prefix, and those indices."""
    lines, demo_config = demo_traffic(tmp_path)
    prefix = f"gw-{name}-{uuid.uuid4().hex[:8]}"
    base = {**demo_config, "store": {**demo_config.get("store", {}), "index_prefix": prefix, "retention_days": 3650}}
    return lines, topics.config(tmp_path / "demo", base=base), Indices(elasticsearch_url, prefix)


@pytest.mark.parametrize("how", ["kill-9", "sigterm"])
def test_two_processes_one_leaves_store_once_and_alert_as_replay(
    topics: Topics, tmp_path: Path, elasticsearch_url: str, how: str
) -> None:
    """The process running the ALERT task dies (kill -9) or leaves (SIGTERM) mid-stream and comes back."""
    lines, config, indices = demo_on_elasticsearch(topics, tmp_path, elasticsearch_url, "scale")
    store = f"elasticsearch:{elasticsearch_url}"
    halves = split_halves(lines)
    processes: list[Serve] = []
    try:
        a = Serve(config, store, tmp_path / "serve-a.log")
        processes.append(a)
        wait_for(lambda: a.metric("gatewatch_detect_owner") == 1, 30, "the first process to own detection", a)
        b = Serve(config, store, tmp_path / "serve-b.log")
        processes.append(b)
        # Both members own input partitions and detect tasks before any record arrives; a keeps the
        # tasks it still owns (the assignor leaves them where they were) and hands the rest to b.
        wait_for(lambda: all(p.partitions() for p in (a, b)),
                 60, "both processes to be assigned partitions", b)  # fmt: skip
        wait_for(lambda: b.metric("gatewatch_detect_owner") == 1, 30, "b to take its share of the tasks", b)
        wait_for(lambda: "how=kept_state" in a.output(), 30, "a to keep the tasks it still owns", a)
        for process in (a, b):  # P = 4: two join and two keyed tasks each
            assert process.metric('gatewatch_detect_tasks{role="requests"}') == 2
        topics.produce(halves[0])
        wait_for(topics.all_committed, 60, "the first half to be committed", a)
        wait_for(lambda: a.metric("gatewatch_checkpoint_bytes") + b.metric("gatewatch_checkpoint_bytes") > 0,
                 30, "a detect checkpoint", a)  # fmt: skip
        # Both take part: the group split the input partitions and the join tasks between them.
        for process in (a, b):
            assert process.metric("component_received_events_total") > 0
            assert process.metric("gatewatch_detect_events_total") > 0
        alerting = 'gatewatch_detect_tasks{role="findings"}'
        owner, other = (a, b) if a.metric(alerting) == 1 else (b, a)
        producer = threading.Thread(target=topics.produce, args=(halves[1], 500, 0.05))
        producer.start()
        received = owner.metric("component_received_events_total")
        wait_for(lambda: owner.metric("component_received_events_total") > received + 300, 30, "more", owner)
        if how == "kill-9":
            owner.kill()  # its join, keyed and alert tasks and its ingest partitions die at once
        else:
            assert owner.stop() == 0, owner.output()  # leaves both groups: a rebalance, no session timeout
        producer.join(timeout=90)
        left_at = time.monotonic()
        restarted = Serve(config, store, tmp_path / "serve-c.log")
        processes.append(restarted)
        wait_for(topics.all_committed, 90, "every record committed after the kill", restarted)
        wait_for(lambda: detect_caught_up(topics), 90, "the detect stage to catch up", restarted)
        print(f"{how}: caught up {time.monotonic() - left_at:.1f}s after the producer finished")
        wait_for(lambda: sum(p.metric(alerting) for p in (other, restarted)) == 1, 30, "one alert task", restarted)
        for process in (other, restarted):
            assert process.stop() == 0, process.output()
        resumed = other.output() + restarted.output()
        assert "event=resumed how=checkpoint stage=detect" in resumed

        assert indices.origins() == topics.expected_origins()  # every record exactly once, ids included
        alerts = indices.alerts()
        assert len({rule for _, rule, *_ in alerts}) >= 6
        expected = replay_alerts(config, lines, tmp_path)
        assert {(rule, etype, value) for _, rule, etype, value, *_ in alerts} == {
            (rule, etype, value) for _, rule, etype, value, *_ in expected
        }
        assert alerts == expected  # the same ids, counts and evidence, too
    finally:
        for process in processes:
            if process.process.poll() is None:
                process.kill()
        indices.cleanup()


def test_stages_in_processes_of_their_own_store_once_and_alert_as_replay(
    topics: Topics, tmp_path: Path, elasticsearch_url: str
) -> None:
    """Two ingest-only processes and a detect-only one, which is killed -9 mid-stream and restarted.

    The detect process is a static group member (``--instance-id``): its restart takes the
    detect partition back without waiting for the dead member's session to time out.
    """
    lines, config, indices = demo_on_elasticsearch(topics, tmp_path, elasticsearch_url, "stages")
    store = f"elasticsearch:{elasticsearch_url}"
    halves = split_halves(lines)
    processes: list[Serve] = []
    try:
        ingest = [Serve(config, store, tmp_path / f"ingest-{i}.log", stages="ingest") for i in range(2)]
        detect = Serve(config, store, tmp_path / "detect-a.log", stages="detect", instance_id="detect-1")
        processes += [*ingest, detect]
        wait_for(lambda: all(p.partitions() for p in ingest),
                 60, "both ingest processes to be assigned partitions", ingest[1])  # fmt: skip
        topics.produce(halves[0])
        wait_for(topics.all_committed, 60, "the first half to be committed", ingest[0])
        wait_for(lambda: detect.metric("gatewatch_checkpoint_bytes") > 0, 30, "a detect checkpoint", detect)
        assert detect.metric("gatewatch_detect_owner") == 1
        assert detect.metric("gatewatch_detect_tasks") == 9  # P = 4: every join, keyed and the alert task
        assert all(p.metric("gatewatch_detect_owner") == 0 for p in ingest)
        assert detect.metric("component_received_events_total") == 0  # it never joined the ingest group
        producer = threading.Thread(target=topics.produce, args=(halves[1], 500, 0.05))
        producer.start()
        time.sleep(2.0)
        detect.kill()
        producer.join(timeout=90)
        restarted = Serve(config, store, tmp_path / "detect-b.log", stages="detect", instance_id="detect-1")
        processes.append(restarted)
        wait_for(topics.all_committed, 90, "every record committed", ingest[0])
        wait_for(lambda: detect_caught_up(topics), 90, "the restarted detect stage to catch up", restarted)
        for process in (*ingest, restarted):
            assert process.stop() == 0, process.output()
        assert "event=resumed how=checkpoint stage=detect" in restarted.output()

        assert indices.origins() == topics.expected_origins()
        assert indices.alerts() == replay_alerts(config, lines, tmp_path)
    finally:
        for process in processes:
            if process.process.poll() is None:
                process.kill()
        indices.cleanup()
