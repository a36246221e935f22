"""The source contract: where raw records come from, and how far they have been used.

A source is read from one thread. It hands out raw records in batches; every
record carries its origin (dataset, stream, offset), from which its id is
derived, so a record read twice gets the same id twice and a store that
upserts by id keeps one copy. A source is split into *partitions* (a Kafka
topic-partition, a file's stream name): offsets count within one partition.

The caller's cycle is poll -> process -> store -> commit:

- :meth:`Source.poll` returns the next records, in offset order within each
  partition; ``[]`` when nothing arrived within ``timeout_secs`` (or, for a
  finite source, once it is :attr:`~Source.at_end`). It never returns a
  record twice in one run, unless the caller moved back (a Kafka ``seek``).
- :meth:`Source.commit` is called with, per partition, the offset of the next
  record to read, *only after* every sink has returned from ``write`` for all
  records before it (so what is committed is durable downstream). A source
  whose positions are durable (Kafka) starts the next process there: records
  polled but not committed are read again after a crash, which is why every
  sink write must be idempotent. A source without durable positions (files)
  only remembers them.
- A raise from :meth:`~Source.poll` is a :class:`~ingest.errors.GatewatchError`:
  :class:`~ingest.errors.SourceError` when the input failed (nothing was
  consumed: polling again retries, the caller decides how long),
  :class:`~ingest.errors.SourceAuthError` when the input refuses gatewatch's
  credentials or ACLs (retrying cannot help: stop),
  :class:`~ingest.errors.FencedError` when another process took this one's
  place. A raise from :meth:`~Source.commit` leaves the previous commit in
  force: the records after it are read again by whoever resumes.
- :meth:`Source.close` releases the input; called once, last. It commits
  nothing.

Implementations: :class:`ingest.sources.files.FileSource` (a log file read to
its end), :class:`ingest.sources.kafka.KafkaSource` (a consumer-group member),
and :class:`ingest.testing.MemorySource` (the test double).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Protocol, TypeVar, runtime_checkable

from ingest.records import RawRecord

PartitionT = TypeVar("PartitionT", bound=Hashable)


@runtime_checkable
class Source(Protocol[PartitionT]):
    """A partitioned input of raw records; see the module docstring for the contract."""

    @property
    def at_end(self) -> bool:
        """True once a finite source has handed out its last record (a live source: always False)."""
        ...

    def poll(self, timeout_secs: float, max_records: int | None = None) -> list[RawRecord]:
        """Up to ``max_records`` next records (the source's own cap if None), waiting at most ``timeout_secs``.

        Raises :class:`~ingest.errors.SourceError` (retry), or
        :class:`~ingest.errors.SourceAuthError` / :class:`~ingest.errors.FencedError` (stop).
        """
        ...

    def commit(self, offsets: Mapping[PartitionT, int]) -> None:
        """Record that every record before ``offsets[partition]`` is durable downstream.

        Called after the sinks returned; raises :class:`~ingest.errors.SourceError`
        when the commit failed (the previous one stays in force).
        """
        ...

    def close(self) -> None:
        """Release the input without committing; called once, after the last poll."""
        ...
