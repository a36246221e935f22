"""The sink contract: where the pipeline's outputs go.

A sink receives a :class:`Batch` at a time. ``write`` returns only once the
batch is durable in the sink (a Kafka source commits offsets after every sink
has returned); it raises :class:`~ingest.errors.StoreUnavailableError` when
the store cannot be reached, after which the caller pauses and retries the
same batch — so every write must be idempotent: events, transactions and dead
letters are keyed by deterministic ids, and an alert that grew replaces its
earlier version under the same id.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from ingest.alerts import Alert, AlertEvent
from ingest.records import DeadLetter, Event, Transaction


@dataclass(slots=True)
class Batch:
    """What the pipeline produced since the last drain."""

    events: list[Event] = field(default_factory=list)
    transactions: list[Transaction] = field(default_factory=list)
    alerts: dict[str, Alert] = field(default_factory=dict)  # latest version by id
    dead_letters: list[DeadLetter] = field(default_factory=list)
    alert_events: list[AlertEvent] = field(default_factory=list)  # lifecycle transitions, in emission order

    def add(self, other: Batch) -> None:
        """Take in everything of ``other``, after what this batch holds; a later version of an alert replaces
        an earlier one."""
        self.events += other.events
        self.transactions += other.transactions
        self.alerts.update(other.alerts)
        self.dead_letters += other.dead_letters
        self.alert_events += other.alert_events

    def __len__(self) -> int:
        return (
            len(self.events) + len(self.transactions) + len(self.alerts) + len(self.dead_letters)
            + len(self.alert_events)
        )  # fmt: skip


class Sink(Protocol):
    def write(self, batch: Batch) -> None:
        """Store ``batch`` durably and idempotently; called from one thread at a time.

        A sink whose class sets ``thread_safe = True`` may be written from
        several threads at once (serve's store writer then runs two).
        """

    def close(self) -> None:
        """Release connections and files; called once, after the last write."""
