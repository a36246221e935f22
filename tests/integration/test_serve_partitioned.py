"""Detection split over three ``gatewatch serve`` processes by key, with inputs nobody keyed.

The demo generator's traffic (every rule's attacks and look-alikes, late app
lines, bad lines) goes to a 4-partition gateway topic and a 3-partition app
topic with NO message key, as rsyslog's ``omkafka`` or Fluent Bit without
``message_key_field`` send it: the two sides of a request land in unrelated
partitions. Serve repartitions both by request id (P = 4 requests and keyed
partitions, one findings partition). Two processes start, a third joins
mid-stream (a rebalance moves tasks to it), then one of the first two is
killed -9 mid-stream (its tasks restore their checkpoints elsewhere) and
restarted. Afterwards the store holds every record once and exactly the alerts
of ``gatewatch replay`` over the same lines (ids, counts, evidence), and each
process ran a share of the join tasks.
"""

from __future__ import annotations

import logging
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml
from kafka import KafkaAdminClient
from test_scale_out import Indices, detect_caught_up
from test_serve import REPO, Line, Serve, Topics, demo_traffic, replay_alerts, wait_for

from gatewatch.config import load_config, parse_config
from gatewatch.errors import ConfigError
from gatewatch.serve_topics import ensure_internal_topics

COUNTS = {"gateway": 4, "app": 3}


def _unkeyed(lines: list[Line]) -> list[Line]:
    """No key at all; the benign tails (one per partition, to move every input's clock) fit each topic's count."""
    out = []
    for line in lines:
        partition = None if line.partition is None else line.partition % COUNTS[line.side]
        out.append(Line(line.side, line.ts, None, line.value, partition))
    return out


def _thirds(lines: list[Line]) -> list[list[Line]]:
    """Each side's traffic (the demo's files hold one side after the other) cut in three, in order; tails last."""
    thirds: list[list[Line]] = [[], [], []]
    for side in ("gateway", "app"):
        own = [line for line in lines if line.side == side and line.partition is None]
        for i in range(3):
            thirds[i] += own[i * len(own) // 3 : (i + 1) * len(own) // 3]
    thirds[2] += [line for line in lines if line.partition is not None]
    return thirds


def test_three_processes_unkeyed_inputs_join_and_kill_alert_as_replay(
    kafka_bootstrap: str, tmp_path: Path, elasticsearch_url: str
) -> None:
    topics = Topics(kafka_bootstrap, COUNTS)
    lines, demo_config = demo_traffic(tmp_path)
    lines = _unkeyed(lines)
    prefix = f"gw-part-{uuid.uuid4().hex[:8]}"
    base = {**demo_config, "store": {**demo_config.get("store", {}), "index_prefix": prefix, "retention_days": 3650}}
    config = topics.config(tmp_path / "demo", base=base)
    indices = Indices(elasticsearch_url, prefix)
    store = f"elasticsearch:{elasticsearch_url}"
    thirds = _thirds(lines)
    processes: list[Serve] = []
    try:
        a = Serve(config, store, tmp_path / "serve-a.log", instance_id="part-a")
        b = Serve(config, store, tmp_path / "serve-b.log", instance_id="part-b")
        processes += [a, b]
        wait_for(lambda: all(p.metric("gatewatch_detect_owner") == 1 for p in (a, b)), 60, "both to own tasks", b)
        topics.produce(thirds[0])
        wait_for(topics.all_committed, 60, "the first third to be committed", a)
        wait_for(lambda: a.metric("gatewatch_checkpoint_bytes") + b.metric("gatewatch_checkpoint_bytes") > 0,
                 30, "a detect checkpoint", a)  # fmt: skip
        producer = threading.Thread(target=topics.produce, args=(thirds[1], 300, 0.05))
        producer.start()
        c = Serve(config, store, tmp_path / "serve-c.log", instance_id="part-c")  # joins mid-stream
        processes.append(c)
        wait_for(lambda: c.metric("gatewatch_detect_owner") == 1, 60, "the joining process to take tasks", c)
        producer.join(timeout=90)
        producer = threading.Thread(target=topics.produce, args=(thirds[2], 300, 0.05))
        producer.start()
        received = b.metric("component_received_events_total")
        wait_for(lambda: b.metric("component_received_events_total") > received + 100, 30, "more for b", b)
        b.kill()  # its join, keyed (and maybe alert) tasks and its ingest partitions die at once
        producer.join(timeout=90)
        restarted = Serve(config, store, tmp_path / "serve-b2.log", instance_id="part-b")
        processes.append(restarted)
        wait_for(topics.all_committed, 120, "every record committed after the kill", restarted)
        wait_for(lambda: detect_caught_up(topics), 120, "the detect tasks to catch up", restarted)
        shares = {p.log.name: p.metric("gatewatch_task_records_total") for p in (a, c, restarted)}
        for process in (a, c, restarted):
            assert process.stop() == 0, process.output()
        outputs = "".join(p.output() for p in processes)
        assert "how=checkpoint" in outputs  # the killed process's tasks resumed from their checkpoints
        assert "Traceback" not in outputs
        print(f"task records per process: {shares}")

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


def test_internal_topics_with_another_partition_count_refuse_the_start_with_one_line(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """P is fixed once the internal topics exist: a process configured otherwise stops before reading anything."""
    topics = Topics(kafka_bootstrap)  # 4 partitions each: P = 4 by default
    config = topics.config(tmp_path)
    kafka = load_config(config).kafka
    assert ensure_internal_topics(kafka).partitions == 4  # creates the three topics
    other = yaml.safe_load(config.read_text())
    other["kafka"]["detect_partitions"] = 6
    refusal = _refused_start(config, other, f"{topics.group}-requests has 4 partitions")
    assert "kafka.detect_partitions" in refusal


def test_one_input_topic_missing_refuses_the_start_naming_it(kafka_bootstrap: str, tmp_path: Path) -> None:
    """An operator trial misspelt kafka.topics.app: serve ran ready with Billing's side silent (and the broker made
    an empty topic of the misspelt name)."""
    topics = Topics(kafka_bootstrap)
    config = topics.config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["kafka"]["topics"]["app"] = f"{topics.group}-billing-misspelt"
    refusal = _refused_start(config, data, "kafka.topics.app: topic")
    assert f"{topics.group}-billing-misspelt does not exist" in refusal


def test_a_misspelt_topic_is_refused_before_the_store_is_opened(kafka_bootstrap: str, tmp_path: Path) -> None:
    """The topics are checked first: serve used to install the store's templates before refusing, and with the
    store down it waited for the store and never said the topic was wrong."""
    topics = Topics(kafka_bootstrap)
    config = topics.config(tmp_path)
    data = yaml.safe_load(config.read_text())
    data["kafka"]["topics"]["gateway"] = f"{topics.group}-envoy-misspelt"
    unreachable_store = f"elasticsearch:http://127.0.0.1:{_closed_port()}"
    refusal = _refused_start(config, data, "kafka.topics.gateway: topic", store=unreachable_store)
    assert f"{topics.group}-envoy-misspelt does not exist" in refusal


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])  # nothing listens there once the probe is closed


def _refused_start(config: Path, data: dict[str, Any], marker: str, store: str = "none") -> str:
    """Start serve with ``data`` written to ``config``: it must stop with exit 2 and one line holding ``marker``."""
    config.write_text(yaml.safe_dump(data))
    done = subprocess.run(
        [sys.executable, "-m", "gatewatch.cli", "serve", "--config", str(config), "--store", store,
         "--listen", "127.0.0.1:0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    refusal = [line for line in done.stderr.splitlines() if marker in line]
    assert len(refusal) == 1 and "Traceback" not in done.stderr, done.stderr
    return refusal[0]


def test_the_checkpoint_topic_rolls_its_segments_so_compaction_reaches_them(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A flood trial: with the broker's default 1 GiB / 7-day segments nothing was compacted, and the topic grew to
    343 MB in 18 minutes of checkpoints."""
    from kafka.admin import ConfigResource, ConfigResourceType

    from gatewatch.checkpoint import SEGMENT_MS, CheckpointStore

    kafka = load_config(Topics(kafka_bootstrap).config(tmp_path)).kafka
    store = CheckpointStore(kafka)
    store.close()
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        described = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, store.topic)])
        configs = {name: entry["value"] for name, entry in described["topic"][store.topic].items()}
    finally:
        admin.close()
    assert (configs["cleanup.policy"], configs["segment.ms"]) == ("compact", str(SEGMENT_MS))


def test_holds_messages_asks_the_broker_of_a_topic_the_consumer_does_not_read(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """What tells a fresh ALERT task that the alerts topic holds events from before it (an upgrade)."""
    from kafka import KafkaConsumer, KafkaProducer

    from gatewatch.checkpoint import ensure_topic
    from gatewatch.serve_resume import holds_messages

    topic = f"gw-alerts-{uuid.uuid4().hex[:10]}"
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap)
    try:
        assert not holds_messages(consumer, topic)  # not there (and not made by asking)
        ensure_topic(load_config(Topics(kafka_bootstrap).config(tmp_path)).kafka, topic, partitions=2)
        assert not holds_messages(consumer, topic)
        producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
        producer.send(topic, b"{}", partition=1).get(timeout=30)
        producer.close()
        assert holds_messages(consumer, topic)
    finally:
        consumer.close()


def test_input_partitions_added_later_keep_p_and_a_replica_with_another_p_makes_no_topic(
    kafka_bootstrap: str, tmp_path: Path
) -> None:
    """A scale-out trial: after kafka-topics --alter on an input topic, every restart with detect_partitions unset
    refused (the inputs' count had grown past P); and two replicas started together with different settings left
    requests and keyed topics of different counts, after which every setting was refused."""
    from kafka.admin import NewPartitions

    topics = Topics(kafka_bootstrap)  # 4 partitions each
    kafka = load_config(topics.config(tmp_path)).kafka
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics({f"{topics.group}-requests": {"num_partitions": 4}}, wait_for_metadata=True)
        six = kafka.model_copy(update={"detect_partitions": 6})
        with pytest.raises(ConfigError, match="-requests has 4 partitions but kafka.detect_partitions gives 6"):
            ensure_internal_topics(six)
        assert f"{topics.group}-keyed" not in admin.list_topics()  # refused before making any other
        assert ensure_internal_topics(kafka).partitions == 4
        admin.create_partitions({topics.names["gateway"]: NewPartitions(total_count=6)})
        assert ensure_internal_topics(kafka).partitions == 4  # P stays what the topics have
    finally:
        admin.close()


def test_input_topics_that_do_not_exist_yet_are_named_once_at_start(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Session 27 left it: with detect_partitions set and neither input topic there, serve started with only
    kafka-python's raw "not found" lines to tell."""
    group = f"missing-{uuid.uuid4().hex[:8]}"
    config = {"kafka": {"bootstrap_servers": [kafka_bootstrap], "group_id": group, "detect_partitions": 2,
                        "topics": {"gateway": f"{group}-gw", "app": f"{group}-app"}}}  # fmt: skip
    with caplog.at_level(logging.WARNING, logger="gatewatch.serve_topics"):
        assert ensure_internal_topics(parse_config(config).kafka).partitions == 2
    (line,) = [r.getMessage() for r in caplog.records if "input_topics_missing" in r.getMessage()]
    assert f"gateway={group}-gw" in line and f"app={group}-app" in line and "check kafka.topics" in line
    assert not [r for r in caplog.records if "obsolete_topic" in r.getMessage()]


def test_the_detect_topic_of_an_earlier_release_is_named_at_start(
    kafka_bootstrap: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An upgrade trial: the single <group_id>-detect topic stayed after the upgrade and nothing said so."""
    topics = Topics(kafka_bootstrap)
    kafka = load_config(topics.config(tmp_path)).kafka
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics({f"{topics.group}-detect": {"num_partitions": 1}}, wait_for_metadata=True)
    finally:
        admin.close()
    with caplog.at_level(logging.WARNING, logger="gatewatch.serve_topics"):
        ensure_internal_topics(kafka)
    (line,) = [r.getMessage() for r in caplog.records if "obsolete_topic" in r.getMessage()]
    assert f"topic={topics.group}-detect" in line and "delete it" in line


def test_a_partition_added_to_an_input_topic_is_read_within_seconds(kafka_bootstrap: str, tmp_path: Path) -> None:
    """A scale-out trial: partitions added while serve ran sat unread for ~5 minutes (the consumer's metadata age),
    with /readyz ready and no lag shown, then came in far behind the watermark."""
    from kafka.admin import NewPartitions

    topics = Topics(kafka_bootstrap, counts={"gateway": 2, "app": 2})
    serve = Serve(topics.config(tmp_path), tmp_path / "store.duckdb", tmp_path / "serve.log")
    try:
        gateway = topics.names["gateway"]
        wait_for(lambda: len(serve.partitions()) == 4, 60, "serve to ingest the four partitions", serve)
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.create_partitions({gateway: NewPartitions(total_count=3)})
        finally:
            admin.close()
        wait_for(lambda: f"{gateway}/2" in serve.partitions(), 20, "serve to ingest the new partition", serve)
    finally:
        serve.stop()
