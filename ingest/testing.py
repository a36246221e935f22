"""Test doubles shipped with gatewatch: an in-memory source and sink that keep the contracts.

They let a test drive the pipeline's rules (progress, commit after store,
restart from the last commit, a store outage) in milliseconds, without
Kafka or a store:

- :class:`MemoryLog` is the durable side (a broker's part): the records of
  each partition and the offsets committed to it;
- :class:`MemorySource` is one reader of it (a group member), resuming at the
  committed offsets: a new one after a "crash" re-reads what was not committed;
- :class:`MemorySink` stores by id, as the real sinks do, so a batch written
  twice is stored once; it can be told to fail its next writes.

Both raise what the real ones raise (:mod:`ingest.errors`), queued with
``fail_next``. A caller that breaks a contract (polls after close, commits
past what it was given) gets an ``AssertionError``: that is a bug to fix,
not a failure to handle.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from ingest.alerts import Alert, AlertEvent
from ingest.records import Dataset, DeadLetter, Event, Origin, RawRecord, Transaction
from ingest.sinks.base import Batch

if TYPE_CHECKING:
    from kafka import TopicPartition

    from ingest.sinks.base import Sink
    from ingest.sources.base import Source
    from ingest.sources.files import FileSource
    from ingest.sources.kafka import KafkaSource

__all__ = ["MemoryLog", "MemorySink", "MemorySource"]


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


if TYPE_CHECKING:  # mypy holds the doubles and the real ones to the same contracts

    def _contracts(memory: MemorySource, file: FileSource, kafka: KafkaSource, sink: MemorySink) -> None:
        _sources: list[Source[str]] = [memory, file]
        _kafka: Source[TopicPartition] = kafka
        _sink: Sink = sink
