"""The JOIN task (one per requests partition): order, correlate, the rules one record or request proves.

It is the single :class:`~gatewatch.topology.Pipeline` (replay's) over the
events routed to its partition, with the rules whose ``keyed_by`` is None;
their findings go to the findings topic instead of an alert book. Every event
it processes in event-time order, and every transaction it closes, goes on to
the keyed partitions of the keyed rules that need it (``partition_key``),
with a mask naming those rules.

Stream clocks come from the ingest stages' ``progress`` v2 as well as from
its own events, so a partition that holds few (or no) events of a stream
still sees that stream's event time; then :class:`~gatewatch.serve_idle.IdleInputs`
applies the idle rules. A ``poll_events`` message is buffered; ``process()`` runs
after every ``progress`` message (which follows each poll's events), so the
outputs are a pure function of the input sequence. Each output message
carries the task's tick after that input message: "everything for ticks <=
tick is sent" (see :mod:`gatewatch.tasks.keyed`). A task whose watermark is
finite but that has no events yet starts its tick at the watermark, so an
empty partition never stalls the others.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import msgspec

from detectors import registry
from detectors.base import Detector, Finding
from detectors.runner import rule_mask
from gatewatch.errors import WireError
from gatewatch.serve_idle import IdleInputs
from gatewatch.tasks.base import Role, TaskOutput, internal_topic, poison
from gatewatch.tasks.route import entity_partition
from gatewatch.topology import Pipeline, detector_configs
from gatewatch.wire import (
    EventsMessage, FindingRow, FindingsMessage, IngestProgress, JoinState, KeyedRowsMessage, KeyedTxn,
    PollEventsMessage, decode_requests_message, decode_task_state, encode_findings, encode_keyed,
    encode_task_state, finding_row, keyed_row,
)  # fmt: skip
from ingest.codec import events_from_rows
from ingest.order import MAX_HELD_EVENTS
from ingest.records import Dataset, Event, Transaction

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig

def keyed_rows(events: list[Event]) -> tuple[list[str], list[tuple[object, ...]]]:
    """``events`` as :class:`~gatewatch.wire.KeyedRow` arrays (only what the keyed rules read), and their streams."""
    index: dict[str, int] = {}
    rows = []
    for event in events:
        stream = event.origin.stream
        i = index.get(stream)
        if i is None:
            i = index[stream] = len(index)
        rows.append(keyed_row(event, i))
    return list(index), rows


def _check_origins(message: PollEventsMessage) -> None:
    """Raise WireError ``undecodable`` unless every event's origin is its part's stream and its own dataset.

    A ``poll_events`` v1 row had no origin of its own: it was built from the part's stream and the
    row's dataset. A v2 event carries one, which no other check reads.
    """
    for part in message.parts:
        stream = part.stream
        for event in part.events:
            origin = event.origin
            if origin.stream != stream or origin.dataset is not event.dataset:
                raise WireError("undecodable", f"poll_events: an event's origin is not {stream[:200]!r}")


class _Outbox:
    __slots__ = ("events", "masks", "txns", "txn_events")

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.masks: list[int] = []
        self.txns: list[KeyedTxn] = []
        self.txn_events: list[Event] = []

    def __bool__(self) -> bool:
        return bool(self.events or self.txns)


def _partition_masks(routes: Any, item: Any, partitions: int) -> dict[int, int]:
    """The keyed partitions ``item`` (an event or a transaction) goes to, each with the mask of the rules
    (``routes``: their bit and partition key) that send it there."""
    masks: dict[int, int] = {}
    for bit, partition_key in routes:
        key = partition_key(item)
        if key is not None:
            partition = entity_partition(key, partitions)
            masks[partition] = masks.get(partition, 0) | bit
    return masks


def _multi_partition_masks(
    routes: Any, item: Event | Transaction, partitions: int, masks: dict[int, int] | None = None
) -> dict[int, int]:
    """:func:`_partition_masks` where each rule may name several entities (``partition_keys``), added to ``masks``."""
    masks = {} if masks is None else masks
    for bit, partition_keys in routes:
        for key in partition_keys(item):
            partition = entity_partition(key, partitions)
            masks[partition] = masks.get(partition, 0) | bit
    return masks


class _JoinPipeline(Pipeline):
    """The single pipeline, with its processed events and closed transactions handed on."""

    def __init__(self, config: GatewatchConfig, task: JoinTask) -> None:
        super().__init__(config, select=lambda cls: cls.keyed_by is None, sink=task.on_finding)
        self.task = task
        self.in_tick = False  # inside _advance_to: findings belong to the tick being advanced to
        # Ids of the events in the open window (reorder buffer, held, open requests): a batch that
        # HTTP ingest produced twice (a shipper's retry after a lost 2xx) comes again under the
        # same ids at new offsets, and must not be counted twice by the rules.
        self.open_ids: set[str] = set()

    def order_events(self, events: Any) -> None:
        open_ids, offsets = self.open_ids, self.stream_offsets
        fresh = []
        for event in events:
            if event.id in open_ids or event.origin.offset <= offsets.get(event.origin.stream, -1):
                self.stats.redelivered += 1
                continue
            open_ids.add(event.id)
            fresh.append(event)
        super().order_events(fresh)
        # Far-future events past the order's cap are dropped there and would stay here: a flood of
        # them must not grow this set without bound, so it is rebuilt once it outgrows the window.
        if len(open_ids) > 8 * (len(self.order) + len(self.correlator)) + MAX_HELD_EVENTS + 10_000:
            self.open_ids = self._window_ids()

    def _window_ids(self) -> set[str]:
        return self.order.event_ids() | self.correlator.event_ids()

    def _process_event(self, event: Event) -> None:
        # A late event (processed as it arrives, not released): routed on alone.
        super()._process_event(event)
        self._hand_on([event])

    def _process_second(self, second: list[Event]) -> None:
        # A second's released events are routed on after the rules saw them and before the next tick's
        # step closes requests (whose transactions are routed then): where one event at a time routed them.
        super()._process_second(second)
        self._hand_on(second)

    def _hand_on(self, processed: list[Event]) -> None:
        """Route ``processed`` on; an event without a request id, never joined, is no longer open."""
        open_ids = self.open_ids
        for event in processed:
            if event.request_id is None:
                open_ids.discard(event.id)
        self.task.route_processed(processed)

    def restore(self, snapshot: bytes | memoryview) -> None:
        super().restore(snapshot)
        self.open_ids = self._window_ids()

    def _advance_to(self, second: float) -> None:
        self.in_tick = True
        try:
            super()._advance_to(second)
        finally:
            self.in_tick = False

    def _emit_transactions(self, transactions: Any) -> None:
        # Each transaction's deadline is the correlator's as it yields that one: taken while closing.
        correlator = self.correlator
        txns, deadlines = [], []
        for txn in transactions:
            txns.append(txn)
            deadlines.append(correlator.closing_deadline)
        if not txns:
            return
        super()._emit_transactions(txns)  # the rules see the tick's transactions as one batch
        self.task.route_transactions(txns, deadlines)
        open_ids = self.open_ids
        for txn in txns:
            for event in txn.gateway:
                open_ids.discard(event.id)
            for event in txn.app:
                open_ids.discard(event.id)

    def finish(self) -> None:
        self._order_credible(self.order.settle())
        self._process_released(self.order.take(float("inf")))
        if math.isinf(self.order.clock):
            self._tick = None  # a tick started at the watermark, and never an event: nothing to close
        super().finish()

    def credible(self) -> None:
        """Add held far-future events the horizon has now reached."""
        self._order_credible(self.order.reached())

    def start_tick(self) -> None:
        """No event yet but every input has a clock: start event time at the watermark."""
        watermark = self.order.watermark
        if self._tick is None and math.isfinite(watermark):
            self._tick = math.floor(watermark)

    @property
    def tick(self) -> float | None:
        return self._tick


class JoinTask:
    """Reads ``<group_id>-requests/<partition>``; writes keyed items and findings."""

    role: Role = "requests"

    def __init__(self, config: GatewatchConfig, partition: int, partitions: int, input_streams: list[str]) -> None:
        self.config = config
        self.partition = partition
        self.partitions = partitions
        self._stream = f"{internal_topic(config.kafka, 'requests')}/{partition}"
        self._streams = list(input_streams)
        self._topics = {stream.rpartition("/")[0] for stream in input_streams}
        self._findings: list[FindingRow] = []
        self._boxes = [_Outbox() for _ in range(partitions)]
        self._pipeline = _JoinPipeline(config, self)
        for stream in input_streams:
            self._pipeline.open_stream(stream)
        self._idle = IdleInputs(config.correlate.idle_timeout_secs)
        self._seqs: dict[str, int] = {}
        self._sent_ticks: dict[str, float | None] = {}
        self._next_offset = 0
        self._final = False
        self._out = TaskOutput()
        context = self._pipeline.context
        configs = detector_configs(config)
        keyed = [cls(configs[rule_id], context) for rule_id, cls in registry().items()
                 if cls.keyed_by is not None and configs[rule_id].enabled]  # fmt: skip
        by_event = [d for d in keyed if _overrides(d, "observe_event")]
        self._event_routes = {
            ds: [(rule_mask(d.rule_id), d.partition_key) for d in by_event
                 if ds in d.datasets and not _overrides(d, "partition_keys")]
            for ds in Dataset
        }  # fmt: skip
        # Rules for which an event may hold several entities (http_4xx_burst: a client that reads two ways).
        self._event_multi_routes = {
            ds: [(rule_mask(d.rule_id), d.partition_keys) for d in by_event
                 if ds in d.datasets and _overrides(d, "partition_keys")]
            for ds in Dataset
        }  # fmt: skip
        self._txn_routes = [(rule_mask(d.rule_id), d.partition_keys) for d in keyed
                            if _overrides(d, "observe_transaction")]  # fmt: skip

    # -- the contract (gatewatch.tasks.base) --------------------------------------------------

    @property
    def next_offset(self) -> int:
        return self._next_offset

    @property
    def watermark(self) -> float:
        return self._pipeline.watermark

    @property
    def tick(self) -> float | None:
        return self._pipeline.tick

    def apply(self, offset: int, value: bytes) -> None:
        """One requests-topic message: a poll's events (``poll_events``: of every input; ``events``: of one input),
        or an ingest stage's progress."""
        out = self._out
        if offset < self._next_offset:
            out.redelivered += 1
            return
        self._next_offset = offset + 1
        out.applied += 1
        try:
            message = decode_requests_message(value)
            events: list[Event] = []
            if isinstance(message, IngestProgress):
                streams = list(message.streams)
            elif isinstance(message, EventsMessage):
                streams = [message.stream]
                events = events_from_rows(message.stream, message.events)
            else:  # poll_events; stream by stream, each in offset order: as the events messages of a poll came
                streams = [part.stream for part in message.parts]
                if isinstance(message, PollEventsMessage):
                    _check_origins(message)
                    events = [event for part in message.parts for event in part.events]
                else:
                    events = [event for part in message.parts for event in events_from_rows(part.stream, part.events)]
            unknown = [stream for stream in streams if stream.rpartition("/")[0] not in self._topics]
            if unknown:
                raise WireError("unknown_stream", f"not an input partition: {unknown[0][:200]!r}")
        except WireError as error:
            out.rejected += 1
            out.batch.dead_letters.append(poison(self._stream, offset, value, error))
            return
        pipeline = self._pipeline
        if not isinstance(message, IngestProgress):
            if events:
                out.records += len(events)
                pipeline.order_events(events)
            # Buffered only: an ingest stage sends a poll's events, then its progress, so the progress
            # message right behind runs the pipeline once for the whole poll. Processing after each
            # events message as well sent every keyed partition and the ALERT task a message per input
            # stream and poll, each then applied downstream, for the same findings: the pipeline's
            # results do not depend on how its input is chunked (replay reads 512 records a chunk).
            # But what the events made at once (arrival findings, late events routed) goes now: a
            # checkpoint holds no outbox, so one taken before the progress would lose it.
            if self._findings or any(self._boxes):
                self._send()
            return
        self._on_progress(message)
        pipeline.process()
        pipeline.start_tick()
        self._send()

    def take(self) -> TaskOutput:
        pipeline = self._pipeline
        out, self._out = self._out, TaskOutput()
        batch = pipeline.drain()
        batch.dead_letters[:0] = out.batch.dead_letters
        out.batch = batch
        counts = pipeline.take_counts()
        out.late = counts.late_events
        out.redelivered += counts.redelivered
        out.detector_errors.update(counts.detector_errors)
        return out

    def snapshot(self) -> bytes:
        idle = self._idle
        state = JoinState(self._next_offset, msgspec.Raw(self._pipeline.snapshot()), idle.last_wall, idle.last_ts,
                          idle.caught_up_since, self._seqs, self._sent_ticks, self._final, self._streams,
                          idle.advanced)  # fmt: skip
        return encode_task_state(state)

    @classmethod
    def restore(cls, config: GatewatchConfig, partition: int, partitions: int, snapshot: bytes) -> JoinTask:
        _, state = decode_task_state(snapshot)
        if type(state) is not JoinState:
            raise WireError("unknown_kind", f"a {type(state).__name__} is no JOIN task's checkpoint")
        task = cls(config, partition, partitions, state.streams)
        task._pipeline.restore(state.pipeline)
        task._idle = IdleInputs(config.correlate.idle_timeout_secs, state.last_wall, state.last_ts,
                                state.caught_up_since, state.advanced)  # fmt: skip
        task._next_offset = state.next_offset
        task._seqs, task._sent_ticks, task._final = dict(state.seqs), dict(state.sent_ticks), state.final
        return task

    def finish(self) -> None:
        """End of input, as replay's :meth:`Pipeline.finish`; every output then says ``final``."""
        if self._final:
            return
        self._pipeline.finish()
        self._final = True
        self._send()

    # -- seams of _JoinPipeline ----------------------------------------------------------------

    def on_finding(self, finding: Finding) -> None:
        pipeline = self._pipeline
        tick = pipeline.tick
        # the tick whose lifecycle step first sees it in the single pipeline: the tick being advanced
        # to, else the next one (events of second T are processed after T's step)
        at_tick = None if tick is None else float(tick if pipeline.in_tick else tick + 1)
        self._findings.append(finding_row(at_tick, finding))

    def route_processed(self, events: list[Event]) -> None:
        """Put each of ``events`` (processed, in that order) in the outbox of every keyed partition it goes to."""
        event_routes, multi_routes = self._event_routes, self._event_multi_routes
        boxes, partitions = self._boxes, self.partitions
        for event in events:
            routes, multi = event_routes[event.dataset], multi_routes[event.dataset]
            if not routes and not multi:
                continue
            masks = _partition_masks(routes, event, partitions)
            if multi:
                _multi_partition_masks(multi, event, partitions, masks)
            for partition, mask in masks.items():
                box = boxes[partition]
                box.events.append(event)
                box.masks.append(mask)

    def route_transactions(self, txns: list[Transaction], deadlines: list[float]) -> None:
        """Put each of ``txns`` (closed at ``deadlines``, in that order) in the outboxes of the partitions it goes to."""
        routes, boxes, partitions = self._txn_routes, self._boxes, self.partitions
        for txn, deadline in zip(txns, deadlines, strict=True):
            for partition, mask in _multi_partition_masks(routes, txn, partitions).items():
                box = boxes[partition]
                box.txns.append(KeyedTxn(txn.request_id, deadline, mask, len(txn.gateway), len(txn.app)))
                box.txn_events += txn.gateway
                box.txn_events += txn.app

    # -- internals -----------------------------------------------------------------------------

    def _on_progress(self, message: IngestProgress) -> None:
        pipeline = self._pipeline
        order = pipeline.order
        idle = self._idle
        reach = order.max_future_secs
        for stream, progress in message.streams.items():
            clock = progress.clock
            if clock is None:
                continue
            order.advance_stream(stream, clock)
            if clock + reach > order.horizon:
                order.horizon = clock + reach
            if progress.last_wall is not None:
                idle.delivered(stream, progress.last_wall, clock)
        pipeline.credible()
        moves = idle.on_progress(message.wall_secs, {s: (p.position, p.end_offset) for s, p in message.streams.items()})
        for move in moves:
            if move.ts is not None:
                order.advance_stream(move.stream, move.ts)
            elif math.isinf(order.stream_clock(move.stream)):
                order.close_stream(move.stream)

    def _send(self) -> None:
        tick = self._pipeline.tick
        if tick is not None:
            tick = float(tick)  # floats on the wire whatever made them: a restored task re-makes the same bytes
        messages = self._out.messages
        for partition, box in enumerate(self._boxes):
            dest = f"keyed/{partition}"
            if not (box or self._final or (tick is not None and tick != self._sent_ticks.get(dest))):
                continue
            seq = self._seqs[dest] = self._seqs.get(dest, 0) + 1
            self._sent_ticks[dest] = tick
            # One stream table for the events and the transactions' events: the same few inputs.
            streams, rows = keyed_rows(box.events + box.txn_events)
            split = len(box.events)
            message = KeyedRowsMessage(self._stream, seq, tick, streams, rows[:split], box.masks,  # type: ignore[arg-type]
                                       box.txns, rows[split:], self._final)  # type: ignore[arg-type]  # fmt: skip
            messages.append(("keyed", partition, encode_keyed(message)))
            self._boxes[partition] = _Outbox()
        dest = "findings/0"
        if self._findings or self._final or (tick is not None and tick != self._sent_ticks.get(dest)):
            seq = self._seqs[dest] = self._seqs.get(dest, 0) + 1
            self._sent_ticks[dest] = tick
            findings = FindingsMessage(self._stream, seq, tick, self._findings, [], self._final)
            messages.append(("findings", 0, encode_findings(findings)))
            self._findings = []


def _overrides(detector: Detector, hook: str) -> bool:
    return getattr(type(detector), hook) is not getattr(Detector, hook)
