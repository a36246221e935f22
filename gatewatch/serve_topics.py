"""serve's internal topics: their names, how many partitions they have, and creating them.

=============================  ==========  ===================================================
topic                          partitions  read by
=============================  ==========  ===================================================
``<group_id>-requests``        P           JOIN tasks: events by request id, ingest progress
``<group_id>-keyed``           P           KEYED tasks: items by the keyed rules' entity
``<group_id>-findings``        1           the ALERT task: findings, outlier feature rows
=============================  ==========  ===================================================

P is ``kafka.detect_partitions``, or (null) the larger partition count of the
two input topics, read at start. Every serve process of a group must agree on
it, so once the topics exist their partition count is the contract: a process
whose P differs refuses to start with one line (a message routed with another
P would reach a task that does not own its key).

gatewatch creates the topics with ``retention.ms`` 7 days (set explicitly, not
inherited from the broker), ``message.timestamp.type=CreateTime`` (messages
carry the produce time, never event time, so the broker's future-timestamp
limit and time retention never act on old logs) and ``max.message.bytes`` 64 MiB.
The old single-partition ``<group_id>-detect`` topic is no longer used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError, TopicAlreadyExistsError, UnknownTopicOrPartitionError

from gatewatch.errors import ConfigError, SourceError
from gatewatch.serve_stage import kv
from gatewatch.tasks.base import Role
from ingest.sources.kafka_settings import client_settings

if TYPE_CHECKING:
    from gatewatch.config import KafkaConfig

__all__ = [
    "FINDINGS", "INTERNAL_MAX_MESSAGE_BYTES", "INTERNAL_RETENTION_MS", "InternalTopics", "KEYED", "REQUESTS", "ROLES",
    "ensure_internal_topics", "internal_producer", "internal_topic",
]  # fmt: skip

REQUESTS: Role = "requests"
KEYED: Role = "keyed"
FINDINGS: Role = "findings"
ROLES = (REQUESTS, KEYED, FINDINGS)
INTERNAL_RETENTION_MS = 7 * 24 * 3600 * 1000
INTERNAL_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
_TIMEOUT_MS = 30_000

log = logging.getLogger(__name__)


def internal_topic(kafka: KafkaConfig, role: str) -> str:
    """``<group_id>-<role>`` for role requests, keyed or findings."""
    return f"{kafka.group_id}-{role}"


@dataclass(frozen=True, slots=True)
class InternalTopics:
    """The three internal topics of a group and P, the partition count of requests and keyed."""

    requests: str
    keyed: str
    findings: str
    partitions: int

    def topic(self, role: Role) -> str:
        """The topic a task of ``role`` reads (and upstream tasks write to for that role)."""
        return {REQUESTS: self.requests, KEYED: self.keyed, FINDINGS: self.findings}[role]

    def role(self, topic: str) -> Role | None:
        """The role whose tasks read ``topic``, or None for a topic that is not internal."""
        return {self.requests: REQUESTS, self.keyed: KEYED, self.findings: FINDINGS}.get(topic)

    def partitions_of(self, role: str) -> int:
        return 1 if role == FINDINGS else self.partitions

    @property
    def names(self) -> list[str]:
        return [self.requests, self.keyed, self.findings]


def _refuse_one_missing_input(admin: KafkaAdminClient, kafka: KafkaConfig, counts: dict[str, int]) -> None:
    """One input topic there and the other not is a misspelt name (or a shipper not yet set up): serve would
    run ready with that side silent (and a broker that creates topics would make an empty one of the name).
    A topic the ACLs hide is not listed either: only one the broker says does not exist is refused here."""
    topics = {"kafka.topics.gateway": kafka.topics.gateway, "kafka.topics.app": kafka.topics.app}
    missing = [(key, topic) for key, topic in topics.items() if not counts.get(topic)]
    if len(missing) == 1:
        ((key, topic),) = missing
        (described,) = admin.describe_topics([topic])  # never creates it: the admin's metadata requests do not
        if described.get("error_code") != UnknownTopicOrPartitionError.errno:
            return  # there, but denied to us: subscribing says so, naming the ACLs
        (other,) = (t for t in topics.values() if t != topic)
        raise ConfigError(
            f"{key}: topic {topic} does not exist, while {other} does: fix the name, or create it "
            f"(kafka-topics.sh --create --topic {topic}) before starting serve"
        )


def ensure_internal_topics(kafka: KafkaConfig) -> InternalTopics:
    """Find P, check the internal topics that exist against it, create the missing ones.

    Raises ConfigError (one line) on a partition-count mismatch or when P cannot
    be known, SourceError when Kafka cannot be asked.
    """
    admin = KafkaAdminClient(client_id=f"gatewatch-{kafka.group_id}-admin", **client_settings(kafka))
    try:
        names = {role: internal_topic(kafka, role) for role in ROLES}
        obsolete = f"{kafka.group_id}-detect"
        counts = _partition_counts(admin, [kafka.topics.gateway, kafka.topics.app, *names.values(), obsolete])
        if counts.get(obsolete):
            log.warning(kv("obsolete_topic", topic=obsolete, note="no longer read (the single detect topic of an "
                           "earlier release): delete it once every old replica has stopped"))  # fmt: skip
        _refuse_one_missing_input(admin, kafka, counts)
        partitions = kafka.detect_partitions
        source = "kafka.detect_partitions"
        if partitions is None:
            inputs = [counts[t] for t in (kafka.topics.gateway, kafka.topics.app) if counts.get(t)]
            existing = counts.get(names[REQUESTS])
            if existing:
                # Fixed once it exists: partitions added to an input topic since must not stop every restart
                # (a scale-out trial's replicas all refused after kafka-topics --alter).
                partitions, source = existing, f"{names[REQUESTS]}'s partition count"
            elif inputs:
                partitions, source = max(inputs), "the input topics' partition count"
            else:
                raise ConfigError(
                    f"kafka.detect_partitions is not set and neither {kafka.topics.gateway} nor {kafka.topics.app} "
                    "exists yet: create the input topics first or set kafka.detect_partitions"
                )
        elif not any(counts.get(t) for t in (kafka.topics.gateway, kafka.topics.app)):
            log.warning(kv("input_topics_missing", gateway=kafka.topics.gateway, app=kafka.topics.app,
                           note="neither input topic exists yet: serve reads them once the shippers create them "
                                "(check kafka.topics if they should be there already)"))  # fmt: skip
        _check_counts(names, counts, partitions, source)
        # The requests topic first, then the others with its count: two replicas started together with
        # different settings agree on the one that made it, or the other refuses before making any more.
        if names[REQUESTS] not in counts:
            _create(admin, names[REQUESTS], partitions)
            counts.update(_partition_counts(admin, [names[REQUESTS]]))
            if kafka.detect_partitions is None:
                partitions = counts[names[REQUESTS]]
            _check_counts(names, counts, partitions, source)
        for role in (KEYED, FINDINGS):
            if names[role] not in counts:
                _create(admin, names[role], 1 if role == FINDINGS else partitions)
        _check_counts(names, _partition_counts(admin, list(names.values())), partitions, source)
        return InternalTopics(names[REQUESTS], names[KEYED], names[FINDINGS], partitions)
    except KafkaError as error:
        raise SourceError(f"cannot set up the internal topics: {error}") from None
    finally:
        admin.close()


def _check_counts(names: Mapping[Role, str], counts: dict[str, int], partitions: int, source: str) -> None:
    """Refuse (one line) an internal topic that exists with another partition count than ``partitions``."""
    for role, topic in names.items():
        want = 1 if role == FINDINGS else partitions
        have = counts.get(topic)
        if have is not None and have != want:
            raise ConfigError(
                f"{topic} has {have} partitions but {source} gives {want}: the internal topics' partition "
                f"count cannot change (set kafka.detect_partitions: {have}, or use a new kafka.group_id)"
            )


def _create(admin: KafkaAdminClient, topic: str, partitions: int) -> None:
    configs = {
        "cleanup.policy": "delete",
        "retention.ms": str(INTERNAL_RETENTION_MS),
        "max.message.bytes": str(INTERNAL_MAX_MESSAGE_BYTES),
        "message.timestamp.type": "CreateTime",
    }
    try:
        admin.create_topics({topic: {"num_partitions": partitions, "configs": configs}}, timeout_ms=_TIMEOUT_MS,
                            wait_for_metadata=True)  # fmt: skip
    except TopicAlreadyExistsError:
        pass  # another replica of the group made it meanwhile: its count is checked next


def _partition_counts(admin: KafkaAdminClient, topics: list[str]) -> dict[str, int]:
    """Partition count of each of ``topics`` that exists."""
    existing = set(admin.list_topics())
    wanted = [t for t in dict.fromkeys(topics) if t in existing]
    if not wanted:
        return {}
    return {d["name"]: len(d["partitions"]) for d in admin.describe_topics(wanted) if not d.get("error_code")}


def internal_producer(kafka: KafkaConfig, role: str) -> KafkaProducer:
    """A producer to the internal topics; one request in flight, so a retried send cannot overtake an earlier one."""
    return KafkaProducer(
        client_id=f"gatewatch-{kafka.group_id}-{role}",
        acks="all",
        linger_ms=5,
        batch_size=1024 * 1024,
        max_request_size=INTERNAL_MAX_MESSAGE_BYTES,
        max_in_flight_requests_per_connection=1,
        **client_settings(kafka),
    )
