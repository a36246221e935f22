"""Joining a consumer group: the first rebalance must already see the topics' partitions.

kafka-python 3.0.12 takes the coordinator's metadata snapshot when the consumer
is created and again only when metadata arrives. A leader that joins in
between assigns from an empty snapshot; the metadata then triggers a second
rebalance that the consumer never finishes (it spins without heartbeats until
the group drops it). :func:`ingest.sources.kafka.subscribe` fetches metadata
right after subscribing. The snapshot is kafka-python's private state, read
here because it is exactly what the workaround must set (kafka-python is pinned
below 3.1 for this and the paused-fetch workaround).
"""

from __future__ import annotations

import time
import uuid

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.admin import KafkaAdminClient, NewTopic

from ingest.sources.kafka import subscribe


class _Quiet(ConsumerRebalanceListener):
    def on_partitions_revoked(self, revoked: object) -> None:
        pass

    def on_partitions_assigned(self, assigned: object) -> None:
        pass


def test_subscribe_leaves_the_coordinator_a_snapshot_with_every_partition(kafka_bootstrap: str) -> None:
    topic = f"gw-subscribe-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    finally:
        admin.close()
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
