"""The kafka-python workarounds of :mod:`ingest.sources.kafka_client`, one test each, against a real broker or socket.

Each reads the library's private state the workaround depends on, because
that is exactly what changes under it: a test fails when an attribute is
renamed, when the bug is fixed (the workaround can then go), or when a module
moves. kafka-python is pinned below 3.1 until these pass on the new version.

Joining a consumer group: kafka-python 3.0.12 takes the coordinator's
metadata snapshot when the consumer is created and again only when metadata
arrives. A leader that joins in between assigns from an empty snapshot; the
metadata then triggers a second rebalance that the consumer never finishes
(it spins without heartbeats until the group drops it). ``subscribe``
fetches metadata right after subscribing.

Rejoining on new metadata: a poll whose time runs out mid-join leaves the join
in flight, and the next poll awaits it only while ``need_rejoin`` holds; a
leader's own assignment makes that false before the SyncGroup answer arrives,
so the assignment with the new partition is never applied.
``finish_joins_in_flight`` keeps ``need_rejoin`` true while a join is in flight.

After a broker outage: each metadata refresh that found no reachable broker
doubled a backoff capped by ``reconnect_backoff_max_ms`` (30 s by default), and
the refresh loop waits it out even when asked for metadata, so a client stays
without partition leaders for up to 36 s after the broker is back.
``BOUNDED_BACKOFF`` caps it at 1 s.

The socket reads and response frames (:mod:`ingest.sources.kafka_frames`,
which also keeps a refused SASL login's answer that arrives with the close)
are checked in ``tests/ingest/sources/test_kafka_frames.py``.
"""

from __future__ import annotations

import time
import uuid

from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewPartitions, NewTopic
from kafka.coordinator.assignors.abstract import AbstractPartitionAssignor

from ingest.sources.kafka_client import (
    BOUNDED_BACKOFF, STICKY_ASSIGNMENT, release_parked_fetches, subscribe,
)  # fmt: skip
from kafka.coordinator.consumer import ConsumerCoordinator


class _Quiet(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked: object) -> None:
        pass

    def on_partitions_assigned(self, assigned: object) -> None:
        pass


def _topic(bootstrap: str, partitions: int) -> str:
    topic = f"gw-client-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    finally:
        admin.close()
    return topic


def test_subscribe_leaves_the_coordinator_a_snapshot_with_every_partition(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, 3)
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"gw-subscribe-{uuid.uuid4().hex[:8]}")
    try:
        subscribe(consumer, [topic], _Quiet())
        # Before any poll, i.e. before the first JoinGroup: plain consumer.subscribe leaves {} here.
        assert consumer._coordinator._metadata_snapshot == {topic: {0, 1, 2}}
        deadline = time.monotonic() + 10.0
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        assert len(consumer.assignment()) == 3
        assert not consumer._coordinator.need_rejoin()  # no second rebalance pending
    finally:
        consumer.close()


def test_a_join_left_in_flight_by_a_poll_is_finished_by_the_next_one(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, 1)
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=f"gw-join-{uuid.uuid4().hex[:8]}",
                             metadata_max_age_ms=300)  # fmt: skip
    try:
        subscribe(consumer, [topic], _Quiet())
        deadline = time.monotonic() + 10.0
        while not consumer.assignment() and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        assert consumer.assignment() == {TopicPartition(topic, 0)}
        admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
        try:
            admin.create_partitions({topic: NewPartitions(total_count=2)})
        finally:
            admin.close()
        coordinator = consumer._coordinator
        deadline = time.monotonic() + 10.0
        while coordinator._metadata_snapshot.get(topic) != {0, 1} and time.monotonic() < deadline:
            time.sleep(0.05)  # metadata is refreshed on the client's own thread
        assert coordinator._metadata_snapshot[topic] == {0, 1}
        consumer.poll(timeout_ms=0)  # starts the rejoin; its time is up at once
        assert coordinator._join_task is not None, "the poll finished the join: nothing was left in flight"
        deadline = time.monotonic() + 5.0
        while coordinator._assignment_snapshot != coordinator._metadata_snapshot and time.monotonic() < deadline:
            time.sleep(0.05)  # the leader assigns on the client's thread
        library_need_rejoin = ConsumerCoordinator.need_rejoin.library_need_rejoin  # type: ignore[attr-defined]
        assert not library_need_rejoin(coordinator), (
            "kafka-python now awaits a join in flight by itself: finish_joins_in_flight can go"
        )
        deadline = time.monotonic() + 10.0
        while len(consumer.assignment()) < 2 and time.monotonic() < deadline:
            consumer.poll(timeout_ms=200)
        assert consumer.assignment() == {TopicPartition(topic, 0), TopicPartition(topic, 1)}
    finally:
        consumer.close()


def _parked(bootstrap: str, topic: str) -> tuple[KafkaConsumer, TopicPartition]:
    """A consumer left in the state the bug needs: one partition's fetched records parked while it was
    paused, and the fetcher's in-line slot holding another partition's exhausted records."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=None, enable_auto_commit=False)
    partitions = [TopicPartition(topic, 0), TopicPartition(topic, 1)]
    consumer.assign(partitions)
    consumer.seek_to_beginning(*partitions)
    first: dict = {}
    deadline = time.monotonic() + 10.0
    while not first and time.monotonic() < deadline:
        first = consumer.poll(timeout_ms=200, max_records=5)
    assert first, "nothing fetched"
    paused = next(iter(first))  # 5 of its 10 records handed out, 5 still in the fetcher
    consumer.pause(paused)
    fetcher = consumer._fetcher
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        consumer.poll(timeout_ms=100, max_records=5)  # parks the paused one, drains the other
        current = fetcher._next_partition_records
        if paused in fetcher._paused_partition_records and current is not None and not current:
            return consumer, paused
    consumer.close()
    raise AssertionError("kafka-python no longer parks a paused partition's records as 3.0 does: "
                         "re-check release_parked_fetches against the new fetcher")  # fmt: skip


def test_a_resumed_partition_is_stalled_without_release_parked_fetches_and_not_with_it(kafka_bootstrap: str) -> None:
    topic = _topic(kafka_bootstrap, 2)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap)
    for partition in (0, 1):
        for i in range(10):
            producer.send(topic, value=f"{partition}-{i}".encode(), partition=partition)
    producer.flush()
    producer.close()

    def after_resume(release: bool) -> list[int]:
        consumer, paused = _parked(kafka_bootstrap, topic)
        try:
            consumer.resume(paused)
            offsets: list[int] = []
            deadline = time.monotonic() + 3.0
            while time.monotonic() < deadline and len(offsets) < 5:
                if release:
                    release_parked_fetches(consumer)
                offsets += [m.offset for m in consumer.poll(timeout_ms=100).get(paused, [])]
            return offsets
        finally:
            consumer.close()

    assert after_resume(release=False) == [], (
        "kafka-python now hands parked records back by itself: release_parked_fetches can go"
    )
    assert after_resume(release=True) == [5, 6, 7, 8, 9]


def test_the_sticky_assignor_is_where_serve_imports_it_from() -> None:
    sticky, fallback = STICKY_ASSIGNMENT
    assert issubclass(sticky, AbstractPartitionAssignor) and issubclass(fallback, AbstractPartitionAssignor)
    assert (sticky.name, fallback.name) == ("sticky", "range")


def test_metadata_after_an_outage_waits_the_reconnect_backoff_which_bounded_backoff_caps(kafka_bootstrap: str) -> None:
    def metadata_wait_ms(settings: dict[str, int]) -> float:
        consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=None, **settings)
        try:
            for _ in range(12):  # what 12 refreshes finding no broker do during an outage of a few seconds
                consumer._manager.update_backoff("metadata")
            consumer._cluster.request_update()  # a fetch missing its leader asks for metadata...
            return float(consumer._cluster.ttl())  # ...and the refresh loop sleeps this long first
        finally:
            consumer.close()

    assert metadata_wait_ms({}) >= 20_000, (
        "kafka-python no longer makes metadata wait out the reconnect backoff: BOUNDED_BACKOFF may go"
    )
    assert metadata_wait_ms(BOUNDED_BACKOFF) <= 1_200  # 1 s with at most +20% jitter
