"""Test doubles shipped with gatewatch: an in-memory source and sink that keep the contracts.

They let a test drive the pipeline's rules (progress, commit after store,
restart from the last commit, a store outage) in milliseconds, without
Kafka or a store:

- :class:`MemoryLog` is the durable side (a broker's part): the records of
  each partition and the offsets committed to it;
- :class:`MemorySource` is one reader of it (a group member), resuming at the
  committed offsets: a new one after a "crash" re-reads what was not committed;
- :class:`MemorySink` stores by id, as the real sinks do, so a batch written
  twice is stored once; it can be told to fail its next writes;
- :class:`MemoryKafkaConsumer` stands in for kafka-python's ``KafkaConsumer``
  under the real :class:`~ingest.sources.kafka.KafkaSource` (``KafkaSource(kafka,
  consumer=...)``): partitions as lists, a group's committed offsets, pauses,
  and rebalances when the test says so.

Both raise what the real ones raise (:mod:`ingest.errors`), queued with
``fail_next``. A caller that breaks a contract (polls after close, commits
past what it was given) gets an ``AssertionError``: that is a bug to fix,
not a failure to handle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.alerts import Alert, AlertEvent
from ingest.records import Dataset, DeadLetter, Event, Origin, RawRecord, Transaction
from ingest.sinks.base import Batch

if TYPE_CHECKING:
    from kafka import TopicPartition

    from ingest.sinks.base import Sink
    from ingest.sources.base import Source
    from ingest.sources.files import FileSource
    from ingest.sources.kafka import KafkaSource

__all__ = ["MemoryKafkaConsumer", "MemoryLog", "MemoryMessage", "MemorySink", "MemorySource"]


class MemoryLog:
    """Partitions of raw lines and their committed offsets; what outlives a :class:`MemorySource`."""

    def __init__(self) -> None:
        self.lines: dict[str, list[bytes]] = {}
        self.datasets: dict[str, Dataset] = {}
        self.committed: dict[str, int] = {}

    def append(self, stream: str, dataset: Dataset, *lines: bytes) -> None:
        """Add ``lines`` at the end of partition ``stream`` (created on first use)."""
        known = self.datasets.setdefault(stream, dataset)
        if known is not dataset:
            raise AssertionError(f"partition {stream} holds {known} records, not {dataset}")
        self.lines.setdefault(stream, []).extend(lines)

    def source(self, max_poll_records: int = 500, finite: bool = False) -> MemorySource:
        """A new reader, starting at the committed offsets (0 where none)."""
        return MemorySource(self, max_poll_records, finite)


class MemorySource:
    """A :class:`~ingest.sources.base.Source` over a :class:`MemoryLog`; partitions are stream names.

    A record's origin is ``(dataset, stream, offset)`` with 0-based offsets,
    like Kafka's. ``poll`` hands out records partition by partition in name
    order and never waits. ``finite``: the source is :attr:`at_end` once it has
    handed out every line of the log (a live one never is).
    """

    def __init__(self, log: MemoryLog, max_poll_records: int = 500, finite: bool = False) -> None:
        self.log = log
        self.max_poll_records = max_poll_records
        self.finite = finite
        self.positions: dict[str, int] = dict(log.committed)
        self.polls = 0
        self.closed = False
        self._failures: deque[Exception] = deque()

    def fail_next(self, *errors: Exception) -> None:
        """Make the next ``poll`` or ``commit`` calls raise ``errors``, one each, in order."""
        self._failures.extend(errors)

    @property
    def at_end(self) -> bool:
        return self.finite and all(self.positions.get(s, 0) >= len(lines) for s, lines in self.log.lines.items())

    def poll(self, timeout_secs: float = 0.0, max_records: int | None = None) -> list[RawRecord]:
        if self.closed:
            raise AssertionError("poll after close")
        self.polls += 1
        if self._failures:
            raise self._failures.popleft()  # nothing consumed: the same records come next time
        budget = min(max_records or self.max_poll_records, self.max_poll_records)
        records: list[RawRecord] = []
        for stream in sorted(self.log.lines):
            lines, dataset = self.log.lines[stream], self.log.datasets[stream]
            start = self.positions.get(stream, 0)
            taken = lines[start : start + budget - len(records)]
            records.extend(RawRecord(Origin(dataset, stream, start + i), line) for i, line in enumerate(taken))
            self.positions[stream] = start + len(taken)
            if len(records) >= budget:
                break
        return records

    def commit(self, offsets: Mapping[str, int]) -> None:
        if self.closed:
            raise AssertionError("commit after close")
        for stream, offset in offsets.items():
            if offset > self.positions.get(stream, 0):
                raise AssertionError(f"commit of {stream} at {offset}, past the {self.positions.get(stream, 0)} polled")
        if self._failures:
            raise self._failures.popleft()  # the previous commit stays in force
        self.log.committed.update(offsets)

    def close(self) -> None:
        self.closed = True


class MemorySink:
    """A :class:`~ingest.sinks.base.Sink` that keeps the latest version of everything by id.

    ``writes`` counts the calls that returned; ``fail_next`` makes the next
    ``write`` calls raise instead (then nothing of that batch is stored, as
    with a store that did not answer).
    """

    thread_safe = False

    def __init__(self) -> None:
        self.events: dict[str, Event] = {}
        self.transactions: dict[str, Transaction] = {}
        self.alerts: dict[str, Alert] = {}
        self.dead_letters: dict[str, DeadLetter] = {}
        self.alert_events: dict[str, AlertEvent] = {}
        self.writes = 0
        self.closed = False
        self._failures: deque[Exception] = deque()

    def fail_next(self, *errors: Exception) -> None:
        """Make the next ``write`` calls raise ``errors``, one each, in order."""
        self._failures.extend(errors)

    def write(self, batch: Batch) -> None:
        if self.closed:
            raise AssertionError("write after close")
        if self._failures:
            raise self._failures.popleft()
        self.events.update((event.id, event) for event in batch.events)
        self.transactions.update((txn.id, txn) for txn in batch.transactions)
        self.alerts.update(batch.alerts)
        self.dead_letters.update((letter.id, letter) for letter in batch.dead_letters)
        self.alert_events.update((event.id, event) for event in batch.alert_events)
        self.writes += 1

    def close(self) -> None:
        self.closed = True


@dataclass(frozen=True, slots=True)
class MemoryMessage:
    """The part of a kafka-python ``ConsumerRecord`` the sources read."""

    offset: int
    value: bytes
    key: bytes | None = None
    headers: tuple[tuple[str, bytes | None], ...] = ()


class MemoryKafkaConsumer:
    """kafka-python's ``KafkaConsumer`` as :class:`~ingest.sources.kafka.KafkaSource` uses it, in memory.

    ``logs`` holds each partition's message values (append to it to produce);
    ``committed_offsets`` is the group's. Nothing is assigned until
    :meth:`rebalance`, which calls the subscribed listener as the group
    coordinator would (revoked, then assigned) during the next ``poll``.
    ``highwater`` is the end as of the partition's last fetch, as in Kafka: a
    paused partition is not fetched, so its end stops moving. ``journal``
    lists the group calls (``commit``, ``committed``) in order. ``fail_next``
    makes the next ``poll`` or ``commit`` calls raise.
    """

    def __init__(self, logs: dict[TopicPartition, list[bytes]] | None = None) -> None:
        self.logs: dict[TopicPartition, list[bytes]] = logs if logs is not None else {}
        self.keys: dict[tuple[TopicPartition, int], bytes] = {}
        self.assigned: set[TopicPartition] = set()
        self.paused: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.journal: list[str] = []
        self.config: dict[str, Any] = {"group_instance_id": None}
        self.closed = False
        self._fetched_ends: dict[TopicPartition, int] = {}
        self._listener: Any = None
        self._rebalance_to: set[TopicPartition] | None = None
        self._failures: deque[Exception] = deque()

    # -- what a test does -------------------------------------------------------

    def rebalance(self, assigned: Iterable[TopicPartition]) -> None:
        """The group assigns ``assigned`` to this member during the next ``poll``."""
        self._rebalance_to = set(assigned)

    def fail_next(self, *errors: Exception) -> None:
        """Make the next ``poll`` or ``commit`` calls raise ``errors``, one each, in order."""
        self._failures.extend(errors)

    # -- the KafkaConsumer surface ------------------------------------------------

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self._listener = listener

    def topics(self) -> set[str]:
        return {tp.topic for tp in self.logs}

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[MemoryMessage]]:
        if self.closed:
            raise AssertionError("poll after close")
        if self._failures:
            raise self._failures.popleft()
        if self._rebalance_to is not None:
            assigned, self._rebalance_to = self._rebalance_to, None
            if self._listener is not None:
                self._listener.on_partitions_revoked(set(self.assigned))
            self.assigned, self.paused = assigned, self.paused & assigned
            if self._listener is not None:
                self._listener.on_partitions_assigned(set(assigned))
            return {}  # a poll that rebalanced hands out nothing here
        budget = max_records if max_records is not None else 500
        out: dict[TopicPartition, list[MemoryMessage]] = {}
        for tp in sorted(self.assigned - self.paused):
            values = self.logs.get(tp, [])
            self._fetched_ends[tp] = len(values)
            at = self.positions.get(tp, 0)
            taken = values[at : at + budget]
            if taken:
                out[tp] = [MemoryMessage(at + i, v, self.keys.get((tp, at + i))) for i, v in enumerate(taken)]
                self.positions[tp] = at + len(taken)
                budget -= len(taken)
            if budget <= 0:
                break
        return out

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        if tp not in self.assigned:
            raise AssertionError(f"seek of {tp}, not assigned")
        self.positions[tp] = offset

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    def commit(self, offsets: Mapping[TopicPartition, Any]) -> None:
        if self._failures:
            raise self._failures.popleft()
        for tp, meta in sorted(offsets.items()):
            self.committed_offsets[tp] = meta.offset
            self.journal.append(f"commit {tp.topic}/{tp.partition}@{meta.offset}")

    def committed(self, tp: TopicPartition, timeout_ms: int | None = None) -> int | None:
        self.journal.append(f"committed {tp.topic}/{tp.partition}")
        return self.committed_offsets.get(tp)

    def beginning_offsets(self, tps: list[TopicPartition], timeout_ms: int | None = None) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int | None = None) -> dict[TopicPartition, int]:
        return {tp: len(self.logs.get(tp, [])) for tp in tps}

    def highwater(self, tp: TopicPartition) -> int | None:
        return self._fetched_ends.get(tp)

    def close(self, autocommit: bool = True) -> None:
        self.closed = True


if TYPE_CHECKING:  # mypy holds the doubles and the real ones to the same contracts

    def _contracts(memory: MemorySource, file: FileSource, kafka: KafkaSource, sink: MemorySink) -> None:
        _sources: list[Source[str]] = [memory, file]
        _kafka: Source[TopicPartition] = kafka
        _sink: Sink = sink
