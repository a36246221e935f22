"""Every place gatewatch reaches past kafka-python's public API, in one module.

kafka-python is pinned to ``>=3.0.12,<3.1`` (pyproject.toml) because of what
is below. Each workaround has a test in ``tests/integration/test_kafka_client.py``
(against a real broker, or a real socket for the transports) that fails if the
library changes under it — the private attribute renamed, the bug fixed (then
the workaround can go), the module moved — so a new version cannot pass the
suite silently.

======================================  ===============================================================
workaround                              kafka-python internals it relies on
======================================  ===============================================================
:func:`release_parked_fetches`          ``KafkaConsumer._fetcher``, ``Fetcher._next_partition_records``
                                        and ``Fetcher._paused_partition_records`` (3.0's KAFKA-7548 port)
:func:`subscribe`                       the coordinator snapshots metadata when it arrives, so asking for
                                        it right after ``subscribe`` fills ``_metadata_snapshot`` before
                                        the first JoinGroup
:data:`STICKY_ASSIGNMENT`               ``kafka.coordinator.assignors.sticky.sticky_assignor`` is not
                                        exported by the package
:class:`TopicStickyAssignor`            ``StickyPartitionAssignor``'s member metadata (the previous
                                        assignment and generation in its user data, read by
                                        ``parse_member_metadata``) and its ``on_assignment``
:func:`finish_joins_in_flight`          ``ConsumerCoordinator.need_rejoin`` and ``BaseCoordinator._join_task``
                                        (the join ``join_group_async`` leaves in flight when a poll's
                                        time is up)
:data:`BOUNDED_BACKOFF`                 ``ClusterMetadata.ttl`` waits out the manager's backoff of the
                                        pseudo-node ``"metadata"`` (``KafkaNetManager.update_backoff``),
                                        which grows to ``reconnect_backoff_max_ms``
:func:`~ingest.sources.kafka_frames`    ``_read_from_sock`` of both transports reads with ``_sock_recv`` and
``.install`` (applied on import; the    drops the bytes of a pass that ends at the peer's close; the
bytes read before a close, and speed)   connection hands them to ``KafkaProtocol.receive_bytes``, whose
                                        ``_header``, ``_rbuffer``, ``_receiving``, ``_reset_buffer`` and
                                        ``_process_response`` it uses (tests/ingest/sources/
                                        test_kafka_frames.py, no broker needed)
:func:`~ingest.sources.kafka_records`   ``DefaultRecordBatch``'s ``_buffer``, ``_pos``, ``_num_records``,
``.install`` (applied on import; for    ``_next_record_index`` and ``_maybe_uncompress``; the fetcher reads
speed, not a bug)                       a batch with ``for record in batch``, and a partition's fetched data
                                        with ``PartitionRecords._unpack_records``, whose ``check_crcs``,
                                        ``isolation_level``, ``next_fetch_offset``, ``leader_epoch``,
                                        ``records_read``, ``bytes_read`` and ``drain`` it keeps as the
                                        library's loop does (tests/ingest/sources/test_kafka_records.py,
                                        no broker needed)
======================================  ===============================================================
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.coordinator.assignors.abstract import ConsumerProtocolAssignment
from kafka.coordinator.assignors.range import RangePartitionAssignor
from kafka.coordinator.assignors.sticky.sticky_assignor import StickyPartitionAssignor
from kafka.coordinator.consumer import ConsumerCoordinator

from ingest.sources import kafka_frames, kafka_records

__all__ = [
    "BOUNDED_BACKOFF", "STICKY_ASSIGNMENT", "TOPIC_STICKY_ASSIGNMENT", "TopicStickyAssignor",
    "finish_joins_in_flight", "release_parked_fetches", "subscribe", "unauthorized_topics",
]  # fmt: skip

# Sticky first: a member joining the group leaves a partition with its owner, which keeps
# its state. Range stays listed so members of an older gatewatch can still agree on one.
STICKY_ASSIGNMENT = (StickyPartitionAssignor, RangePartitionAssignor)


class TopicStickyAssignor(StickyPartitionAssignor):  # type: ignore[misc]
    """Sticky, and balanced per topic: each member gets its share of EVERY topic, not just of the total.

    kafka-python's sticky assignor balances the number of partitions per
    member over all topics together: with serve's detect group (P requests, P
    keyed and one findings partition) one process could own every JOIN task
    and another every KEYED task, so one core would do all the joining.
    Here each topic's partitions are split as evenly as the members allow
    (their counts differ by at most one, the extra ones going to the least
    loaded members), and within that a partition stays with its previous owner
    (read from the sticky assignor's member metadata): a member joining takes
    partitions from the others, the rest keep their state.
    """

    name = "gatewatch-topic-sticky"

    def assign(self, cluster: Any, members: list[Any]) -> dict[str, Any]:
        previous: dict[TopicPartition, tuple[int, str]] = {}  # partition -> (generation, member) of its last owner
        for member in members:
            meta = self.parse_member_metadata(member.metadata)
            for tp in meta.partitions:
                if tp not in previous or meta.generation > previous[tp][0]:
                    previous[tp] = (meta.generation, member.member_id)
        subscribed = {member.member_id: set(member.metadata.topics) for member in members}
        topics = {topic for member in members for topic in member.metadata.topics}
        partitions = {topic: sorted(cluster.partitions_for_topic(topic) or ()) for topic in topics}
        load: Counter[str] = Counter()
        assigned: dict[str, dict[str, list[int]]] = {member.member_id: {} for member in members}
        for topic in sorted(topics, key=lambda t: (-len(partitions[t]), t)):
            eligible = sorted(m for m in subscribed if topic in subscribed[m])
            if not eligible or not partitions[topic]:
                continue
            owned = {m: [p for p in partitions[topic] if previous.get(TopicPartition(topic, p), (0, ""))[1] == m]
                     for m in eligible}  # fmt: skip
            base, extra = divmod(len(partitions[topic]), len(eligible))
            # The extra partitions go to members that own more of this topic already, then to the least loaded.
            ranked = sorted(eligible, key=lambda m: (-len(owned[m]), load[m], m))
            quota = {m: base + (1 if i < extra else 0) for i, m in enumerate(ranked)}
            free: list[int] = []
            for m in eligible:
                keep, give = owned[m][: quota[m]], owned[m][quota[m] :]
                assigned[m][topic] = keep
                free += give
            taken = {p for m in eligible for p in assigned[m][topic]}
            free = sorted(set(free) | {p for p in partitions[topic] if p not in taken})
            for p in free:
                m = min((m for m in eligible if len(assigned[m][topic]) < quota[m]),
                        key=lambda m: (load[m] + len(assigned[m][topic]), m))  # fmt: skip
                assigned[m][topic].append(p)
            for m in eligible:
                assigned[m][topic].sort()
                load[m] += len(assigned[m][topic])
        return {
            member_id: ConsumerProtocolAssignment(self.version, sorted((t, p) for t, p in by_topic.items() if p), b"")
            for member_id, by_topic in assigned.items()
        }


# The detect group: per-topic balance first; the plain sticky and range assignors stay listed so that
# members of an older gatewatch in the same group can still agree on one.
TOPIC_STICKY_ASSIGNMENT = (TopicStickyAssignor, StickyPartitionAssignor, RangePartitionAssignor)

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
    rebalanced once more; :func:`finish_joins_in_flight` now finishes such a
    join, and this spares the second rebalance). ``topics()`` always asks the
    broker, and the coordinator takes its snapshot from that answer.
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


def finish_joins_in_flight() -> None:
    """Work around kafka-python 3.0.12 abandoning a group join that is still in flight; applied on import.

    A poll whose time is up mid-join leaves the join task running, for the
    next poll to await. But the next poll awaits it only while ``need_rejoin``
    holds, and a group leader's own assignment makes that false: rejoining on
    new metadata (a partition added to an input topic), the leader records
    the metadata it assigns from before the SyncGroup answer arrives. The
    assignment is then never applied: the consumer goes on reading its old
    partitions with heartbeats off and never reads the new one (CI, under
    load: a partition added while serve ran stayed unread). Here a join in
    flight keeps ``need_rejoin`` true, so the next poll finishes it (or, if
    it has finished unawaited, joins again, as the library does for a
    follower).
    """
    library_need_rejoin = ConsumerCoordinator.__dict__["need_rejoin"]
    if getattr(library_need_rejoin, "library_need_rejoin", None) is not None:
        return

    def need_rejoin(coordinator: ConsumerCoordinator) -> bool:
        if library_need_rejoin(coordinator):
            return True
        return coordinator._join_task is not None and coordinator._subscription.partitions_auto_assigned()

    need_rejoin.library_need_rejoin = library_need_rejoin  # type: ignore[attr-defined]
    ConsumerCoordinator.need_rejoin = need_rejoin


kafka_frames.install()
kafka_records.install()
finish_joins_in_flight()
