"""Stage 1 of ``gatewatch serve``, "ingest": parse, store and route, split across processes by Kafka.

Consumer group ``kafka.group_id`` on the gateway and app topics; Kafka spreads
their partitions over the serve processes. One step::

    poll -> parse_records -> hand events + dead letters to the store writer
         -> events to <group_id>-requests, partition crc32(request id) % P
         -> progress to every requests partition -> flush
         -> commit the polls whose batches the store acknowledged

Correctness never depends on how the shippers keyed the input topics: every
event is routed by its own request id (:func:`gatewatch.tasks.route.requests_partition`;
an event without one by its input stream), so the two sides of a request
always meet in the same JOIN task, whatever partition each side was read
from. How the inputs were keyed is still counted
(``gatewatch_input_unkeyed_records_total``, ``/readyz`` ``input_keying``).

The store writer (:mod:`gatewatch.store_writer`) indexes while this thread
parses the next polls; up to IN_FLIGHT_BULKS x ``store.bulk_max_docs``
documents may wait for it, then the stage waits for the oldest.

The stage keeps no state across polls but those writes in flight, which it
finishes and commits before a rebalance is handled and on stop. After a crash
(or a rebalance) the partition's next owner re-reads from the committed
offsets, stores the same ids again (idempotent) and produces the same events
again; the join tasks drop those repeats by input offset.

Messages to ``<group_id>-requests`` (:mod:`gatewatch.serve_topics`; typed
MessagePack, versioned: :mod:`gatewatch.wire`; nothing in them can run code):

- ``poll_events`` (wall time; per input partition, its event rows in offset
  order): one per requests partition and poll, every input's events in it
  (an input's rows split every EVENTS_PER_MESSAGE, a message closed past
  EVENTS_MESSAGE_BYTES). The rows are encoded once when the poll is handled; an
  event that cannot cross the wire (an integer past 64 bits, an event time
  past ±1e15 s) becomes an ``invalid_value`` dead letter there, before
  anything is stored;
- ``progress`` v2 (wall time; per assigned input partition whose end is
  known: position, end offset, its credible clock and the wall time of its
  last poll with events, :class:`gatewatch.tasks.route.StreamClocks`): to
  EVERY requests partition, after each poll and every PROGRESS_INTERVAL_SECS
  when idle. A join task learns from it how far each input has got even when
  none of that input's events hash to its partition; a record dated far in
  the future never moves a clock (credible only within
  ``correlate.max_future_secs`` of the newest credible time).

The producer keeps one request in flight and sends a poll's events before
its progress, so a join task sees an input's events before the progress that
covers them.

Catching up a backlog, partitions are read abreast in event time (those
ALIGN_AHEAD_SECS ahead of the slowest with unread data are paused), which
keeps the join tasks' reorder buffers small. Back-pressure: while the store
is down every partition is paused and the same batch is retried.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgspec
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from gatewatch.errors import SourceError, StoreUnavailableError, WireError
from gatewatch.serve_stage import Shared, deliver, kv, log_input_notes
from gatewatch.store_writer import PendingWrite
from gatewatch.serve_topics import InternalTopics, internal_producer
from gatewatch.topology import build_parsers, parse_records
from gatewatch.unread import InputWatch
from ingest.redact_key import origin_key
from gatewatch.tasks.route import StreamClocks, progress_message, requests_partition
from gatewatch.wire import encode_poll_events
from ingest.codec import encode_event_list, split_unencodable
from ingest.records import DeadLetter, Event, RawRecord
from ingest.sinks.base import Batch
from ingest.sources.kafka import KafkaSource, stream_name

log = logging.getLogger("gatewatch.serve")
UNWRAP_WARNING_SECS = 60.0
"""At most one ``unwrap_missed`` warning in this (the count is in ``component_errors_total`` all along)."""

EVENTS_PER_MESSAGE = 5_000
# An events message takes the next input's rows while it is below this (an input's rows alone may pass it:
# EVENTS_PER_MESSAGE bounds them); internal topics take 64 MiB a message.
EVENTS_MESSAGE_BYTES = 8 * 1024 * 1024
PROGRESS_INTERVAL_SECS = 1.0
ALIGN_AHEAD_SECS = 30.0
ALIGNED_POLL_RECORDS = 2_000  # per poll while partitions are behind
POLL_TIMEOUT_SECS = 0.2
LAG_INTERVAL_SECS = 5.0
IN_FLIGHT_BULKS = 2  # documents handed to the store writer and not yet stored, in store.bulk_max_docs


def _encode_chunks(
    by_partition: dict[tuple[str, int], list[Event]],
) -> tuple[list[tuple[str, int, msgspec.Raw]], list[tuple[Event, str]]]:
    """Each (input, requests partition)'s events as encoded rows, EVENTS_PER_MESSAGE a chunk; and those that
    cannot be encoded."""
    chunks: list[tuple[str, int, msgspec.Raw]] = []
    rejected: list[tuple[Event, str]] = []
    for (stream, partition), events in by_partition.items():
        for i in range(0, len(events), EVENTS_PER_MESSAGE):
            chunk = events[i : i + EVENTS_PER_MESSAGE]
            try:
                chunks.append((stream, partition, encode_event_list(chunk)))
            except WireError:
                good, bad = split_unencodable(chunk)
                rejected += bad
                if good:
                    chunks.append((stream, partition, encode_event_list(good)))
    return chunks, rejected


def _events_messages(chunks: list[tuple[str, int, msgspec.Raw]]) -> list[tuple[int, list[tuple[str, msgspec.Raw]]]]:
    """The encoded chunks as ``poll_events`` bodies: ``(requests partition, [(stream, rows), ...])``, in chunk order."""
    messages: list[tuple[int, list[tuple[str, msgspec.Raw]]]] = []
    sizes: list[int] = []  # bytes of rows in each message
    open_at: dict[int, int] = {}  # requests partition -> its message being filled
    for stream, partition, rows in chunks:
        at = open_at.get(partition)
        if at is None or sizes[at] >= EVENTS_MESSAGE_BYTES:
            at = open_at[partition] = len(messages)
            messages.append((partition, []))
            sizes.append(0)
        messages[at][1].append((stream, rows))
        sizes[at] += len(rows)
    return messages


def _by_partition(events: list[Event], partitions: int) -> dict[tuple[str, int], list[Event]]:
    """Events grouped by (input stream, requests partition), each group in offset order."""
    grouped: dict[tuple[str, int], list[Event]] = {}
    for event in events:
        grouped.setdefault((event.origin.stream, requests_partition(event, partitions)), []).append(event)
    return grouped


def _reject_unencodable(
    records: list[RawRecord], events: list[Event], dead_letters: list[DeadLetter], rejected: list[tuple[Event, str]]
) -> tuple[list[Event], list[DeadLetter]]:
    """Turn the events that cannot cross the wire into ``invalid_value`` dead letters, with their lines."""
    lines = {record.origin: record.line for record in records}
    dropped = {id(event) for event, _ in rejected}
    letters = [DeadLetter(e.origin, "invalid_value", f"cannot be encoded: {why}", lines.get(e.origin, b""))
               for e, why in rejected]  # fmt: skip
    return [e for e in events if id(e) not in dropped], dead_letters + letters


@dataclass(slots=True, frozen=True)
class _InFlight:
    """A handled poll whose batch the store writer may still be writing."""

    batch: Batch
    pending: PendingWrite | None  # None: no store
    offsets: dict[TopicPartition, int]  # to commit once the batch is stored


def _done(pending: PendingWrite | None) -> bool:
    return pending is None or pending.done()


@dataclass(slots=True)
class _Partition:
    stream: str
    next_offset: int
    clock: float = float("-inf")  # newest event time read (alignment only)


class IngestStage:
    """The ingest consumer, its producer to the requests topic, and one :meth:`step` of the loop."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared
        self.config = shared.config
        self._parsers = build_parsers(self.config)
        self._source: KafkaSource | None = None
        self._producer: KafkaProducer | None = None
        self.topics: InternalTopics | None = None
        self._clocks = StreamClocks(self.config.correlate.max_future_secs)
        self._parts: dict[TopicPartition, _Partition] = {}
        self._paused = False  # back-pressure
        self._ahead: set[TopicPartition] = set()
        self._paused_now: set[TopicPartition] = set()
        # A paused partition is not fetched, so its high watermark stops moving while records keep
        # arriving: until a fetch with records or a ListOffsets answer after its resume, it is
        # never reported caught up (a join task would otherwise idle it past its backlog).
        self._stale_ends: set[TopicPartition] = set()
        self._listed_ends: dict[TopicPartition, int] = {}
        self._poll_records: int | None = ALIGNED_POLL_RECORDS
        self._assigned_at = time.monotonic()
        self._last_progress_at = 0.0
        self._last_lag_at = 0.0
        self._warned_at: dict[str, float] = {}  # by log event: when last said (_passed_through)
        self._inputs = InputWatch(self.config, early=True, unwrap_key="kafka.unwrap.{side}")
        self._resume_retry_at = 0.0
        self._pending_assignment: frozenset[TopicPartition] | None = None
        self._in_flight: deque[_InFlight] = deque()
        self._in_flight_docs = 0
        self._max_in_flight_docs = IN_FLIGHT_BULKS * self.config.store.bulk_max_docs
        self.loop_at = time.monotonic()

    @property
    def streams(self) -> list[str]:
        return sorted(part.stream for part in self._parts.values())

    def open(self, topics: InternalTopics) -> None:
        kafka = self.config.kafka
        self.topics = topics
        self._producer = internal_producer(kafka, "ingest")
        self._source = KafkaSource(kafka, origin_key=origin_key(self.config.redact))

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None
        if self._producer is not None:
            try:
                self._producer.close(timeout=5)
            except KafkaError:
                pass
            self._producer = None

    # -- the loop ---------------------------------------------------------------

    def step(self) -> None:
        source = self._source
        assert source is not None
        rebalance = source.take_rebalance()
        if rebalance is not None:
            self._settle()  # commit what is stored before reading the committed offsets again
            self._pending_assignment = rebalance.assigned
            log.info(kv("partitions_changed", stage="ingest", revoked=[stream_name(tp) for tp in rebalance.revoked],
                        assigned=[stream_name(tp) for tp in rebalance.assigned]))  # fmt: skip
            for tp in set(rebalance.revoked) - set(rebalance.assigned):
                try:  # its new owner reports its lag; a value left here would stay, and page, forever
                    self.shared.metrics.consumer_lag.remove(tp.topic, str(tp.partition))
                except KeyError:
                    pass
        if self._pending_assignment is not None and time.monotonic() >= self._resume_retry_at:
            try:
                self._resume(self._pending_assignment)
                self._pending_assignment = None
            except SourceError as error:
                self._resume_retry_at = time.monotonic() + 2.0
                self.shared.metrics.record_error("kafka", "committed")
                log.error(kv("resume_failed", stage="ingest", error=str(error), retry_in_secs=2.0))
        self.loop_at = time.monotonic()
        try:
            records = source.poll(POLL_TIMEOUT_SECS, self._poll_records)
        except SourceError as error:
            self.shared.metrics.record_error("kafka", "poll")
            log.warning(kv("poll_failed", error=str(error)))
            time.sleep(1.0)
            return
        if source.rebalance_pending:
            return  # positions are reset on the rebalance: these records are read again
        now = time.monotonic()
        if records:
            self.shared.kafka_ok_at = now
            self._handle(records)
        elif self._parts and now - self._last_progress_at >= PROGRESS_INTERVAL_SECS:
            self._send_progress_only()
        if self._in_flight:
            self._settle(keep_docs=self._max_in_flight_docs)  # commit the writes that finished meanwhile
        self._align()
        if now - self._last_lag_at >= LAG_INTERVAL_SECS:
            self._update_lag()

    def _passed_through(self, stage: str, error_type: str, event: str, records: int, hint: str) -> None:
        """Count records read otherwise than their message asked; say so at most once a minute per kind."""
        self.shared.metrics.record_error(stage, error_type, records)
        now = time.monotonic()
        if now - self._warned_at.get(event, -math.inf) >= UNWRAP_WARNING_SECS:
            self._warned_at[event] = now
            log.warning(kv(event, records=records, hint=hint))

    def _handle(self, records: list[Any]) -> None:
        source = self._source
        assert source is not None and self._producer is not None
        metrics = self.shared.metrics
        polled = dict(source.last_poll)
        for tp, info in polled.items():
            metrics.record_received(tp.topic, info.count, info.value_bytes)
        if source.unwrap_misses:
            # Each such record is parsed as it is, and its dead letter names the parse, not the key.
            self._passed_through("unwrap", "not_a_wrapped_record", "unwrap_missed", source.unwrap_misses,
                                 "messages not wrapped as kafka.unwrap says are parsed as they are: set "
                                 "kafka.unwrap.<side> to where the shipper puts the line (Fluent Bit: log, "
                                 "Fluentd: message; none: the message is the line)")  # fmt: skip
            source.unwrap_misses = 0
        if source.unsealed_origins:
            self._passed_through("kafka", "origin_unsealed", "origin_unsealed", source.unsealed_origins,
                                 "a gatewatch-origin header without a valid seal: its record keeps its Kafka "
                                 "origin and id. Give every gatewatch process the same redact key (redact."
                                 "hash_key_file or $GATEWATCH_REDACT_KEY); else a producer other than gatewatch "
                                 "sets that header")  # fmt: skip
            source.unsealed_origins = 0
        events, dead_letters = parse_records(self._parsers, records)
        assert self.topics is not None
        encoded, rejected = _encode_chunks(_by_partition(events, self.topics.partitions))
        messages = _events_messages(encoded)
        if rejected:
            events, dead_letters = _reject_unencodable(records, events, dead_letters, rejected)
        by_stream: dict[str, list[Event]] = {}
        for event in events:
            by_stream.setdefault(event.origin.stream, []).append(event)
        for tp, info in polled.items():
            metrics.record_keying(tp.topic, info.count, _keyed_by_request_id(info.keys, by_stream.get(stream_name(tp))))
        batch = Batch(events=events, dead_letters=dead_letters)
        pending = self.shared.submit(batch)  # stored by the writer thread while this one goes on
        if dead_letters:
            metrics.record_dead_letters(Counter(letter.reason for letter in dead_letters))
        log_input_notes(self._inputs.observe(events, dead_letters))
        wall = time.time()
        for stream, stream_events in by_stream.items():
            self._clocks.observe(stream, stream_events, wall)
        for tp, info in polled.items():
            part = self._parts.get(tp)
            if part is not None:
                part.next_offset = info.next_offset
                if tp not in self._paused_now:
                    self._stale_ends.discard(tp)  # fetched just now: its high watermark is current
                own = by_stream.get(part.stream)
                if own:
                    part.clock = max(part.clock, max(e.ts for e in own))
        deliver(self.shared, lambda: self._produce(messages), self._set_backpressure, self._idle_poll, log)
        offsets = {tp: self._parts[tp].next_offset for tp in polled if tp in self._parts}
        self._in_flight.append(_InFlight(batch, pending, offsets))
        self._in_flight_docs += len(batch)

    def _settle(self, keep_docs: int = 0) -> None:
        """Wait for the oldest writes until at most ``keep_docs`` documents are in flight; commit what is stored.

        Writes finish in submission order, and each poll's offsets are
        committed only once its batch is stored (and its events are in the
        requests topic, which ``_handle`` made sure of before queueing it). A
        write that failed because the store is unavailable is retried here,
        pausing consumption, exactly as a write in this thread would be.
        """
        offsets: dict[TopicPartition, int] = {}
        in_flight = self._in_flight
        while in_flight and (self._in_flight_docs > keep_docs or _done(in_flight[0].pending)):
            item = in_flight[0]
            deliver(self.shared, self._stored_once(item), self._set_backpressure, self._idle_poll, log)
            in_flight.popleft()
            self._in_flight_docs -= len(item.batch)
            self.shared.metrics.record_stored(item.batch)
            offsets.update(item.offsets)
        if offsets:
            self._commit(offsets)

    def _stored_once(self, item: _InFlight) -> Callable[[], None]:
        """A ``deliver`` attempt: the first waits for the queued write, and writes again at once if it failed.

        A queued write that failed for an unavailable store may have failed long ago, with the writes
        before it (one merged bulk): a fault trial's twelve batches in flight during a store block each
        waited the store's retry delay (5 s) after the block lifted, with a stale warning each. Only a
        failure now counts.
        """
        pending = item.pending

        def attempt() -> None:
            nonlocal pending
            if pending is not None:
                queued, pending = pending, None
                try:
                    queued.result()
                    return
                except StoreUnavailableError:
                    self.shared.metrics.record_error("store", "unavailable")
            self.shared.write(item.batch)

        return attempt

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self._source is not None
        try:
            self._source.commit(offsets)
        except SourceError as error:  # e.g. the partitions moved meanwhile: their new owner re-reads
            self.shared.metrics.record_error("kafka", "commit")
            log.warning(kv("commit_failed", stage="ingest", error=str(error)))

    def _produce(self, messages: list[tuple[int, list[tuple[str, msgspec.Raw]]]]) -> None:
        """Events, then the progress of every partition to every requests partition; flushed.

        Raises KafkaError (then retried whole: the join tasks drop repeated events by offset).
        """
        producer, topics = self._producer, self.topics
        assert producer is not None and topics is not None
        wall = time.time()
        futures = [producer.send(topics.requests, value=encode_poll_events(wall, parts), partition=partition)
                   for partition, parts in messages]  # fmt: skip
        positions = self._progress()
        if positions:
            progress = progress_message(wall, self._clocks, positions)  # the same bytes to every partition
            futures += [producer.send(topics.requests, value=progress, partition=p) for p in range(topics.partitions)]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=0)
        self._last_progress_at = self.shared.kafka_ok_at = time.monotonic()

    def _progress(self) -> dict[str, tuple[int, int]]:
        """``{stream: (position, end_offset)}`` of every assigned input partition whose end is known."""
        source = self._source
        assert source is not None
        progress = {}
        for tp, part in self._parts.items():
            end = source.highwater(tp)
            if end is None:
                continue
            end = max(end, self._listed_ends.get(tp, end))
            if tp in self._stale_ends:
                end = max(end, part.next_offset + 1)  # not known to be caught up (see _stale_ends)
            progress[part.stream] = (part.next_offset, end)
        return progress

    def _send_progress_only(self) -> None:
        try:
            self._produce([])
        except KafkaError as error:
            self.shared.metrics.record_error("kafka", "progress")
            log.warning(kv("progress_failed", error=str(error)))

    def _idle_poll(self, timeout_secs: float) -> None:
        """Paused: no new records, but the group sees a live member (records of a rebalance are re-read)."""
        assert self._source is not None
        self.loop_at = time.monotonic()
        try:
            records = self._source.poll(timeout_secs, self._poll_records)
        except SourceError:
            time.sleep(min(timeout_secs, 0.5))
            return
        if records and not self._source.rebalance_pending:
            # Not expected of paused partitions; never drop them: read them again later.
            first: dict[str, int] = {}
            for record in records:
                first.setdefault(record.origin.stream, record.origin.offset)
            self._source.seek({tp: first[part.stream] for tp, part in self._parts.items() if part.stream in first})

    # -- assignment -------------------------------------------------------------

    def _resume(self, assigned: frozenset[TopicPartition]) -> None:
        """Continue every assigned partition at the group's committed offset (else its beginning)."""
        source = self._source
        assert source is not None
        parts = sorted(assigned)
        committed = source.committed(parts)
        missing = [tp for tp in parts if committed.get(tp) is None]
        offsets: dict[TopicPartition, int] = {tp: o for tp, o in committed.items() if o is not None}
        if missing:
            offsets.update(source.beginning_offsets(missing))
        self._parts = {tp: _Partition(stream_name(tp), offsets[tp]) for tp in parts}
        self._assigned_at = time.monotonic()
        self._poll_records = ALIGNED_POLL_RECORDS
        if parts:
            source.seek(offsets)
        self._paused_now = set(parts)  # the listener paused them
        self._stale_ends = set(parts)
        self._listed_ends = {}
        self._ahead = set()
        self._apply_pauses()
        log.info(kv("resumed", stage="ingest", how="committed_offsets", partitions=len(parts),
                    offsets=[f"{stream_name(tp)}@{offsets[tp]}" for tp in parts]))  # fmt: skip

    # -- pauses: back-pressure and alignment -------------------------------------

    def _set_backpressure(self, paused: bool) -> None:
        self._paused = paused
        self._apply_pauses()
        if paused:
            log.warning(kv("backpressure_on", stage="ingest", partitions=len(self._parts)))
        else:
            log.info(kv("backpressure_off", stage="ingest", partitions=len(self._parts)))
        self.shared.metrics.set_backpressure("ingest", paused)

    def _apply_pauses(self) -> None:
        source = self._source
        assert source is not None
        want = set(self._parts) if self._paused else self._ahead & set(self._parts)
        if want - self._paused_now:
            source.pause(want - self._paused_now)
            self._stale_ends |= want - self._paused_now
        if self._paused_now - want:
            source.resume(self._paused_now - want)
        self._paused_now = want

    def _align(self) -> None:
        """Pause partitions more than ALIGN_AHEAD_SECS of event time ahead of the slowest one with unread data.

        Everything read ahead of the slowest input waits in the join tasks'
        reorder buffers (and in every checkpoint of them); reading abreast, as
        replay reads files, keeps that near ``allowed_lateness_secs`` of traffic.
        """
        source = self._source
        assert source is not None
        fresh = time.monotonic() - self._assigned_at < self.config.correlate.idle_timeout_secs
        behind = []
        for tp, part in self._parts.items():
            end = source.highwater(tp)
            if (end is None and fresh) or (end is not None and part.next_offset < end):
                behind.append(part.clock)
        ahead: set[TopicPartition] = set()
        if behind and len(self._parts) > 1:
            limit = min(behind) + ALIGN_AHEAD_SECS
            ahead = {tp for tp, part in self._parts.items() if part.clock > limit}
        self._poll_records = ALIGNED_POLL_RECORDS if ahead or behind else None
        if ahead != self._ahead:
            self._ahead = ahead
            self._apply_pauses()

    def _update_lag(self) -> None:
        source = self._source
        assert source is not None
        self._last_lag_at = time.monotonic()
        if not self._parts:
            return
        try:
            ends = source.end_offsets(list(self._parts))
        except SourceError as error:
            self.shared.metrics.record_error("kafka", "end_offsets")
            log.warning(kv("kafka_unreachable", error=str(error)))
            return
        self.shared.kafka_ok_at = time.monotonic()
        for tp, listed in ends.items():
            if listed is not None and tp not in self._paused_now:
                self._listed_ends[tp] = listed
                self._stale_ends.discard(tp)
        for tp, part in self._parts.items():
            end = ends.get(tp)
            if end is not None:
                self.shared.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, end - part.next_offset)
                )

    def shutdown(self) -> None:
        """Wait for the writes in flight and commit them: then every handled poll is stored and committed."""
        log.info(kv("stopping", stage="ingest", partitions=len(self._parts), in_flight_docs=self._in_flight_docs))
        self._settle()


def _keyed_by_request_id(keys: dict[int, bytes], events: list[Event] | None) -> int:
    """How many of a partition's polled ``events`` had their request id as Kafka message key."""
    if not keys or not events:
        return 0
    return sum(1 for e in events if e.request_id is not None and keys.get(e.origin.offset) == e.request_id.encode())
