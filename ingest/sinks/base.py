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

import logging
from dataclasses import dataclass, field
from typing import Protocol

from ingest.alerts import Alert, AlertEvent
from ingest.escape import quoted
from ingest.records import DeadLetter, Event, Transaction

CURRENT_STREAMS = r"(file:|http:|follow:).*|[A-Za-z0-9._\-]+/[0-9]+"  # "\-": Lucene reads "_-]" as a range
"""Every ``origin.stream`` this release writes: a file's ``file:<fingerprint>``, an HTTP batch's ``http:...``,
serve's ``follow:<side>`` without Kafka, a Kafka partition's ``<topic>/<partition>`` (a topic name has no "/")."""


def warn_of_older_streams(store: str, stream: str) -> None:
    """A store holding a stream this release does not write: a release before fd8857a named a file's records by
    its path, so the same file replayed now is stored again beside them, under new ids (an upgrade trial:
    every event and transaction twice, and no word of it)."""
    logging.getLogger(__name__).warning(
        "store_written_by_older_release store=%s stream=%s note=%s", quoted(store), quoted(stream),
        quoted("records of files an earlier release stored are stored again if replayed: replay into a new store "
               "or store.index_prefix (README: What changed for stored data)"),
    )  # fmt: skip


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
