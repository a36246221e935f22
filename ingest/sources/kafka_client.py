"""Every place gatewatch reaches past kafka-python's public API, in one module.

kafka-python is pinned to ``>=3.0.12,<3.1`` (pyproject.toml) because of what
is below. Each workaround has a test in ``tests/integration/test_kafka_client.py``
against a real broker that fails if the library changes under it — the
private attribute renamed, the bug fixed (then the workaround can go), the
module moved — so a new version cannot pass the suite silently.

===============================  ===============================================================
workaround                       kafka-python internals it relies on
===============================  ===============================================================
:func:`release_parked_fetches`   ``KafkaConsumer._fetcher``, ``Fetcher._next_partition_records``
                                 and ``Fetcher._paused_partition_records`` (3.0's KAFKA-7548 port)
:func:`subscribe`                the coordinator snapshots metadata when it arrives, so asking for
                                 it right after ``subscribe`` fills ``_metadata_snapshot`` before
                                 the first JoinGroup
:data:`STICKY_ASSIGNMENT`        ``kafka.coordinator.assignors.sticky.sticky_assignor`` is not
                                 exported by the package
:data:`BOUNDED_BACKOFF`          ``ClusterMetadata.ttl`` waits out the manager's backoff of the
                                 pseudo-node ``"metadata"`` (``KafkaNetManager.update_backoff``),
                                 which grows to ``reconnect_backoff_max_ms``
===============================  ===============================================================
"""

from __future__ import annotations

from kafka import ConsumerRebalanceListener, KafkaConsumer
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor

__all__ = ["BOUNDED_BACKOFF", "STICKY_ASSIGNMENT", "release_parked_fetches", "subscribe", "unauthorized_topics"]

# Sticky first: a member joining the group leaves a partition with its owner, which keeps
# its state. Range stays listed so members of an older gatewatch can still agree on one.
STICKY_ASSIGNMENT = (StickyPartitionAssignor, RangePartitionAssignor)

# Client settings that bound how long a client stays blind after its broker comes back.
# kafka-python 3.0.12 backs off metadata refreshes on the reconnect backoff: each refresh
# that finds no reachable broker doubles the pseudo-node "metadata"'s delay, up to
# reconnect_backoff_max_ms (30 s by default, 24-36 s with jitter), and the refresh loop
# waits that delay out even when a fetch or ListOffsets asks for metadata (request_update
# wakes it, ttl() sends it back to sleep). After a broker restart a consumer knows no
# partition leader for that long: it fetches nothing and end_offsets() waits for the
# leader. Measured in the fault suite (broker down 10 s): serve's detect stage caught up
# 34-40 s after the broker's return without this, 1.9-3.6 s with it. 1 s is the Java
# client's default for reconnect.backoff.max.ms.
BOUNDED_BACKOFF = {"reconnect_backoff_max_ms": 1000}


def subscribe(consumer: KafkaConsumer, topics: list[str], listener: ConsumerRebalanceListener) -> None:
    """Subscribe, then fetch metadata once, so that the first join already sees the topics' partitions.

    Works around kafka-python 3.0.12: the coordinator's metadata snapshot is
    built when the consumer is created (no topics yet) and next when metadata
    arrives. A group leader that joins before that assigns from an empty
    snapshot; the metadata arriving next triggers a second rebalance, and
    there the leader's new assignment makes ``need_rejoin`` false while its
    join is still in flight, so the consumer never finishes it. It then polls
    in a busy loop without heartbeats until the group drops it (measured: 1
    start of 5 with two replicas, 3-5 s of CPU lost and the detect group
    rebalanced once more). ``topics()`` always asks the broker, and the
    coordinator takes its snapshot from that answer.
    """
    consumer.subscribe(topics, listener=listener)
    consumer.topics()


def release_parked_fetches(consumer: KafkaConsumer) -> None:
    """Work around kafka-python 3.0.x losing resumed partitions forever; call before each ``poll``.

    Since its KAFKA-7548 port, data fetched for a partition that gets paused is
    parked and handed back after ``resume`` -- but only while the fetcher's
    ``_next_partition_records`` is None, and the fetcher leaves an exhausted
    (falsy) one there instead. Parked partitions are also never fetched again,
    so every pause (back-pressure, alignment, the rebalance listener) could
    stall its partitions for good. Clearing the exhausted slot, as the fetcher
    itself does when it parks, lets the restore run. Called on the poll thread,
    between polls, like the fetcher's own bookkeeping.
    """
    fetcher = getattr(consumer, "_fetcher", None)
    current = getattr(fetcher, "_next_partition_records", None)
    if current is not None and not current and getattr(fetcher, "_paused_partition_records", None):
        fetcher._next_partition_records = None  # type: ignore[union-attr]


def unauthorized_topics(consumer: KafkaConsumer) -> set[str]:
    """The subscribed topics the broker's ACLs deny ``consumer``; check after each ``poll``.

    kafka-python 3.0.12 raises nothing for them: the metadata answer's
    TOPIC_AUTHORIZATION_FAILED is only recorded in the cluster metadata, the
    group assigns the other topics' partitions, and ``poll`` returns nothing
    for the denied topic forever, as if it were empty (measured against a
    broker with StandardAuthorizer, tests/integration/test_serve_sasl.py).
    """
    cluster = getattr(getattr(consumer, "_client", None), "cluster", None)
    return set(getattr(cluster, "unauthorized_topics", None) or ())
