"""Kafka: read the gateway and app topics as raw records, one message each.

A message's origin is its topic-partition (the stream, ``"<topic>/<partition>"``)
and its offset, so a re-read yields the same record ids. Offsets are never
committed automatically: serve's ingest stage commits them only after the
store has the records' events and dead letters *and* the internal requests
topic has the events (see :mod:`gatewatch.serve_ingest`).

Log shippers often wrap the line in a JSON record (Fluent Bit's ``kafka``
output, Fluentd's ``out_kafka2``: ``{"log": "<line>", "stream": ..., ...}``).
With ``kafka.unwrap.<side>`` set to that key, the line is the key's value
(``docker`` and ``cri`` take a container runtime's wrapper off instead, see
:mod:`ingest.sources.unwrap`); a message that is not such a record is passed
through as it is, so the parser turns it into a dead letter with its origin
instead of it being dropped.

What reaches into kafka-python's internals lives in :mod:`ingest.sources.kafka_client`.

Rebalances: kafka-python calls the listener on its own IO thread, in the
middle of the serve loop's ``poll``. The listener therefore only pauses the
partitions it was given (nothing may be fetched before the loop has decided
where to resume them) and records what happened; the loop picks that up with
:meth:`KafkaSource.take_rebalance` once ``poll`` has returned.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from kafka import ConsumerRebalanceListener, KafkaConsumer, TopicPartition
from kafka.errors import FencedInstanceIdError, KafkaError
from kafka.structs import OffsetAndMetadata

from ingest.errors import ConfigError, FencedError, SourceError
from ingest.records import Dataset, Origin, RawRecord
from ingest.sources.kafka_client import release_parked_fetches, subscribe, unauthorized_topics
from ingest.settings import KafkaSettings
from ingest.sources.kafka_settings import client_settings, denied_topics, refusal, unreachable
from ingest.sources.unwrap import Unwrap, compile_unwrap, unwrap_key

__all__ = ["KafkaSource", "PartitionPoll", "Rebalance", "commit_offsets", "consumer_settings", "stream_name", "subscribe"]

MAX_POLL_RECORDS = 20_000
FETCH_MAX_BYTES = 64 * 1024 * 1024
MAX_PARTITION_FETCH_BYTES = 16 * 1024 * 1024
REQUEST_TIMEOUT_MS = 30_000
# A fetch is answered once it has 64 KiB or has waited 100 ms. kafka-python's default (1 byte) has
# the broker answer as soon as anything arrives: at a live rate every few records made a fetch
# response, a poll, and in serve a requests message and a progress message to every partition, each
# then a JOIN task's step and its keyed and findings messages. A backlog fills 64 KiB at once and
# is read as before. Each hop of serve's path waits at most 100 ms more for it.
FETCH_MIN_BYTES = 64 * 1024
FETCH_MAX_WAIT_MS = 100
SESSION_TIMEOUT_MS = 10_000
METADATA_MAX_AGE_MS = 5_000
"""How often a consumer asks for the topics' metadata. A consumer subscribed to a topic notices a partition added
to it only then: at kafka-python's default (5 minutes) a scale-out trial's new partitions sat unread for ~5 minutes
while /readyz said ready and the lag showed none, then came in far behind the watermark (false bypass alerts)."""
# Set by HTTP ingest and serve --follow on what they produce: the record's entry origin, and its seal.
ORIGIN_HEADER = "gatewatch-origin"
ORIGIN_SEAL_HEADER = "gatewatch-origin-seal"


def stream_name(partition: TopicPartition) -> str:
    """The pipeline's name for a partition: ``"<topic>/<partition>"`` (also the records' ``origin.stream``)."""
    return f"{partition.topic}/{partition.partition}"


def consumer_settings(kafka: KafkaSettings, **overrides: Any) -> dict[str, Any]:
    """kafka-python consumer settings tuned for throughput, on :func:`client_settings` (security, credentials)."""
    settings: dict[str, Any] = {
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "max_poll_records": MAX_POLL_RECORDS,
        "fetch_max_bytes": FETCH_MAX_BYTES,
        "max_partition_fetch_bytes": MAX_PARTITION_FETCH_BYTES,
        "fetch_min_bytes": FETCH_MIN_BYTES,
        "fetch_max_wait_ms": FETCH_MAX_WAIT_MS,
        "check_crcs": False,  # TCP and the broker already check; CRC32C in Python costs ~15% of a poll
        "request_timeout_ms": REQUEST_TIMEOUT_MS,
        # A member killed without leaving holds its partitions this long: a restart after
        # kill -9 waits for it. 10 s is the broker's minimum-safe order (default 45 s).
        "session_timeout_ms": SESSION_TIMEOUT_MS,
        "metadata_max_age_ms": METADATA_MAX_AGE_MS,
        **client_settings(kafka),
    }
    settings.update(overrides)
    return settings


def static_membership(kafka: KafkaSettings, role: str) -> dict[str, Any]:
    """``group_instance_id`` for the consumer of ``role`` when ``kafka.instance_id`` is set (KIP-345)."""
    instance_id = getattr(kafka, "instance_id", None)
    return {"group_instance_id": f"{instance_id}-{role}"} if instance_id else {}


@dataclass(frozen=True, slots=True)
class Rebalance:
    """What changed since the last :meth:`KafkaSource.take_rebalance`.

    ``assigned`` is the whole assignment now (all of it paused until the loop
    seeks and resumes it), ``revoked`` every partition given up in between.
    """

    revoked: frozenset[TopicPartition]
    assigned: frozenset[TopicPartition]


@dataclass(frozen=True, slots=True)
class PartitionPoll:
    """One partition's share of the last poll."""

    count: int
    next_offset: int  # last returned offset + 1
    value_bytes: int
    keys: dict[int, bytes] = field(default_factory=dict)  # offset -> message key, for messages that have one


def commit_offsets(
    consumer: KafkaConsumer, offsets: Mapping[TopicPartition, int], kafka: KafkaSettings | None = None
) -> None:
    """Commit ``offsets`` (next record to read) to ``consumer``'s group.

    Raises FencedError if another process took this one's static member name,
    SourceAuthError if the group's ACL denies it (given ``kafka``, to name the
    user), SourceError on any other failure.
    """
    try:
        consumer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
    except FencedInstanceIdError:
        raise FencedError(consumer.config["group_instance_id"]) from None
    except KafkaError as error:
        refused = refusal(error, kafka, "committing offsets") if kafka is not None else None
        raise refused or SourceError(f"offset commit failed: {error}") from None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # kafka-python ships no types
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        revoked = set(revoked)
        if revoked:
            self._source._note_rebalance(revoked)

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = set(assigned)
        if assigned:
            # Runs before the first fetch of the new assignment: hold it until
            # the loop has restored state and sought every partition.
            self._source.consumer.pause(*assigned)
            self._source._note_rebalance(set())


def origin_seal(key: bytes, topic: str, origin: bytes, value: bytes) -> bytes:
    """What vouches that gatewatch set ``origin`` as the ``gatewatch-origin`` of ``value`` in ``topic``.

    The origin names the record's id. Any other producer to the topic that could set it would choose
    ids: one taking a genuine record's id before that record arrives has it skipped by detection as a
    re-sent duplicate, and stored over. An HMAC-SHA256 with the redaction hash key
    (:func:`ingest.redact_key.origin_key`), cut to 128 bits, of the topic, the origin and the record
    itself: a header copied from a genuine message onto another record does not fit it.
    """
    mac = hmac.new(key, b"gatewatch-origin\0" + topic.encode() + b"\0" + origin + b"\0", hashlib.sha256)
    mac.update(value)
    return mac.hexdigest()[:32].encode()


def header_origin(
    headers: Iterable[tuple[str, bytes | None]], dataset: Dataset, topic: str, value: bytes, key: bytes | None
) -> Origin | None | Literal[False]:
    """Where a message's record entered gatewatch, from the ``gatewatch-origin`` header HTTP ingest
    and ``serve --follow`` set; False when the header is there without a valid seal.

    Only ``http:<source>:<batch id>:<n>`` (HTTP ingest) and ``file:<fingerprint>:<byte offset>``
    (``serve --follow``) are taken, sealed by :func:`origin_seal` for ``topic`` and ``value`` (the
    message's) when there is a ``key`` (:func:`ingest.redact_key.origin_key`); with any other header
    or none the record gets its Kafka origin, as any shipper's message does.
    """
    origin = seal = None
    for name, header in headers:
        if name == ORIGIN_HEADER:
            origin = header
        elif name == ORIGIN_SEAL_HEADER:
            seal = header
    if not origin or len(origin) > 300:
        return None
    if key is not None and (not seal or not hmac.compare_digest(seal, origin_seal(key, topic, origin, value))):
        return False
    stream, _, number = origin.decode("utf-8", "replace").rpartition(":")
    if stream.startswith(("http:", "file:")) and number.isascii() and number.isdigit():
        return Origin(dataset, stream, int(number))
    return None


def unwrap(value: bytes, key: str) -> bytes | None:
    """The log line under ``key`` of a shipper's JSON record (Fluent Bit ``kafka``, Fluentd
    ``out_kafka2``), or None when ``value`` is not such a record: the caller then passes the
    raw value on, and the parser dead-letters it with its origin."""
    return unwrap_key(value, key)


class KafkaSource:
    """A consumer-group member reading the gateway and app topics: a :class:`~ingest.sources.base.Source`.

    All methods are called from one thread (the serve loop). ``poll`` raises
    :class:`~ingest.errors.SourceError` when the client fails (retry),
    :class:`~ingest.errors.SourceAuthError` when Kafka refuses gatewatch's
    login or its ACLs deny a topic or the group (stop); a broker that is
    merely unreachable makes ``poll`` return nothing until it is back.
    Beyond the contract: seeking, pausing and rebalance hand-over for serve.
    """

    def __init__(
        self, kafka: KafkaSettings, consumer: KafkaConsumer | None = None, origin_key: bytes | None = None
    ) -> None:
        """``origin_key``: what checks the seal of a ``gatewatch-origin`` header (:func:`origin_seal`); None: none."""
        topics = kafka.topics
        if topics.gateway == topics.app:
            raise ConfigError(f"kafka.topics.gateway and kafka.topics.app are both {topics.gateway!r}: use two topics")
        self._datasets = {topics.gateway: Dataset.GATEWAY, topics.app: Dataset.APP}
        self._unwrap: dict[str, Unwrap | None] = {
            topics.gateway: compile_unwrap(kafka.unwrap.gateway), topics.app: compile_unwrap(kafka.unwrap.app)
        }
        self._lock = threading.Lock()
        self._pending_revoked: set[TopicPartition] = set()
        self._pending = False
        self._positions: dict[TopicPartition, int] = {}
        self.unwrap_misses = 0  # messages passed through because they were not the configured JSON record
        self.unsealed_origins = 0  # gatewatch-origin headers without a valid seal: their messages keep the Kafka origin
        self._origin_key = origin_key
        self.last_poll: dict[TopicPartition, PartitionPoll] = {}
        try:
            self.consumer = consumer or KafkaConsumer(
                group_id=kafka.group_id,
                client_id=f"gatewatch-{kafka.group_id}",
                **consumer_settings(kafka, **static_membership(kafka, "ingest")),
            )
            subscribe(self.consumer, [topics.gateway, topics.app], _Listener(self))
        except KafkaError as error:
            refused = refusal(error, kafka, "subscribing")
            raise refused or unreachable(kafka, error) from None
        self._kafka = kafka

    # -- reading ----------------------------------------------------------------

    def poll(self, timeout_secs: float, max_records: int | None = None) -> list[RawRecord]:
        """Up to ``max_records`` (default ``MAX_POLL_RECORDS``) records of the resumed partitions.

        ``last_poll`` then tells how many came from each partition.
        """
        release_parked_fetches(self.consumer)
        try:
            # First without waiting: data parked while its partition was paused is handed back
            # only at the start of a poll, and an empty waiting poll would sleep 100 ms first.
            polled = self.consumer.poll(timeout_ms=0, max_records=max_records)
            if not polled:
                release_parked_fetches(self.consumer)
                polled = self.consumer.poll(timeout_ms=int(timeout_secs * 1000), max_records=max_records)
        except KafkaError as error:
            raise refusal(error, self._kafka, "reading") or SourceError(f"Kafka poll failed: {error}") from None
        denied = unauthorized_topics(self.consumer) & self._datasets.keys()
        if denied:  # kafka-python would go on polling the other topic alone
            raise denied_topics(self._kafka, denied, "reading")
        records: list[RawRecord] = []
        summary: dict[TopicPartition, PartitionPoll] = {}
        positions = self._positions
        for tp, messages in polled.items():
            expected = positions.get(tp)
            if expected is None:
                continue  # not sought yet (assigned during this poll): re-fetched after the seek
            if messages[0].offset < expected:
                # Buffered before a seek back or forward: already covered by the restored state.
                messages = [m for m in messages if m.offset >= expected]
                if not messages:
                    continue
            dataset = self._datasets[tp.topic]
            stream = stream_name(tp)
            unwrap = self._unwrap[tp.topic]
            size = 0
            # Kept to count records not keyed by their request id (serve's ingest stage); most
            # unkeyed shippers send no key at all, and an empty dict is all that costs.
            keys = {m.offset: m.key for m in messages if m.key}
            if unwrap is None:
                for m in messages:
                    value = m.value or b""
                    size += len(value)
                    if m.headers:
                        records.append(self._with_headers(m, dataset, stream, value, unwrap))
                        continue
                    records.append(RawRecord(Origin(dataset, stream, m.offset), value))
            else:
                for m in messages:
                    value = m.value or b""
                    size += len(value)
                    if m.headers:
                        records.append(self._with_headers(m, dataset, stream, value, unwrap))
                        continue
                    records.append(self._unwrapped(Origin(dataset, stream, m.offset), value, unwrap))
            last = messages[-1].offset + 1
            positions[tp] = last
            summary[tp] = PartitionPoll(len(messages), last, size, keys)
        self.last_poll = summary
        return records

    def _with_headers(self, m: Any, dataset: Dataset, stream: str, value: bytes, unwrap: Unwrap | None) -> RawRecord:
        origin = Origin(dataset, stream, m.offset)
        entry = header_origin(m.headers, dataset, m.topic, value, self._origin_key)
        if entry:  # HTTP ingest or serve --follow produced the bare log line
            return RawRecord(origin, value, id_origin=entry)
        if entry is False:
            self.unsealed_origins += 1
        return RawRecord(origin, value) if unwrap is None else self._unwrapped(origin, value, unwrap)

    def _unwrapped(self, origin: Origin, value: bytes, unwrap: Unwrap) -> RawRecord:
        # One message is one record: a CRI or Docker piece of a split line is not joined
        # across messages (they may sit in different partitions); the parser dead-letters it.
        found = unwrap(value)
        if found is None:
            self.unwrap_misses += 1
            return RawRecord(origin, value)
        return RawRecord(origin, found.line, found.created)

    # -- group membership -------------------------------------------------------

    def _note_rebalance(self, revoked: set[TopicPartition]) -> None:
        with self._lock:
            self._pending_revoked |= revoked
            self._pending = True

    @property
    def rebalance_pending(self) -> bool:
        """A rebalance happened during the last ``poll``: its records must not be used (positions reset)."""
        return self._pending

    def take_rebalance(self) -> Rebalance | None:
        """The assignment change since the last call, or None."""
        with self._lock:
            if not self._pending:
                return None
            revoked, self._pending_revoked, self._pending = frozenset(self._pending_revoked), set(), False
        assigned = frozenset(self.consumer.assignment())
        # Every partition must be sought again before its records are handed out.
        self._positions.clear()
        return Rebalance(revoked=revoked, assigned=assigned)

    @property
    def at_end(self) -> bool:
        """Never: a topic has no end (the :class:`~ingest.sources.base.Source` contract)."""
        return False

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self.consumer.assignment())

    # -- positions --------------------------------------------------------------

    def seek(self, offsets: dict[TopicPartition, int]) -> None:
        """Continue each partition at its offset (the next record to read)."""
        for tp, offset in offsets.items():
            self.consumer.seek(tp, offset)
            self._positions[tp] = offset

    def pause(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Stop fetching (all assigned partitions by default); ``poll`` keeps the membership alive."""
        targets = list(self.consumer.assignment() if partitions is None else partitions)
        if targets:
            self.consumer.pause(*targets)

    def resume(self, partitions: Iterable[TopicPartition] | None = None) -> None:
        """Fetch again (only partitions that were sought, by default all of those)."""
        targets = [tp for tp in (self._positions if partitions is None else partitions) if tp in self._positions]
        if targets:
            self.consumer.resume(*targets)

    def commit(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Commit ``offsets`` (next record to read) to the group; see :func:`commit_offsets`."""
        commit_offsets(self.consumer, offsets, self._kafka)

    def committed(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
        """The group's committed offset per partition (None: never committed)."""
        try:
            return {tp: self.consumer.committed(tp, timeout_ms=REQUEST_TIMEOUT_MS) for tp in partitions}
        except KafkaError as error:
            raise refusal(error, self._kafka, "reading committed offsets") or SourceError(
                f"cannot read committed offsets: {error}"
            ) from None

    def beginning_offsets(self, partitions: Iterable[TopicPartition]) -> dict[TopicPartition, int]:
        try:
            return dict(self.consumer.beginning_offsets(list(partitions), timeout_ms=REQUEST_TIMEOUT_MS))
        except KafkaError as error:
            raise refusal(error, self._kafka, "listing offsets") or SourceError(
                f"cannot read beginning offsets: {error}"
            ) from None

    def end_offsets(self, partitions: Iterable[TopicPartition], timeout_secs: float = 5.0) -> dict[TopicPartition, int]:
        """Each partition's end (the offset the next message will get): lag = end - position."""
        try:
            return dict(self.consumer.end_offsets(list(partitions), timeout_ms=int(timeout_secs * 1000)))
        except KafkaError as error:
            raise refusal(error, self._kafka, "listing offsets") or SourceError(
                f"cannot read end offsets: {error}"
            ) from None

    def highwater(self, partition: TopicPartition) -> int | None:
        """The end as of the last fetch response (no request; None before the first fetch)."""
        try:
            end: int | None = self.consumer.highwater(partition)
        except KafkaError:
            return None
        return end

    def position(self, partition: TopicPartition) -> int | None:
        """The next offset ``poll`` hands out for ``partition`` (None before it was sought)."""
        return self._positions.get(partition)

    def close(self) -> None:
        """Leave the group at once, without committing anything."""
        try:
            self.consumer.close(autocommit=False)
        except KafkaError:
            pass
