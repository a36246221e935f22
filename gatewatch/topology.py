"""The wiring: the one module that knows every stage.

    RawRecord --parse/normalize--> Event | DeadLetter
    Event --detect on arrival--> Finding
    Event --order--> event-time order --correlate--> Transaction
    Event, Transaction --detect--> Finding --alert book--> Alert
                                           --lifecycle (each tick)--> AlertEvent

:class:`Pipeline` is driven the same way by ``replay`` (files) and ``serve``
(Kafka): ``feed`` records of an input, ``process`` what the watermark allows,
``drain`` the outputs into a :class:`Batch` for the sinks. Event time advances
in whole-second ticks derived from the ordered events alone, so closing a
request and advancing a detector happen at the same points of the stream
however the input was batched.
"""

from __future__ import annotations

import bisect
import functools
import gc
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from operator import attrgetter
from typing import TYPE_CHECKING, Any

import msgspec

from detectors.alerts import Alert, AlertBook
from detectors.base import NO_REVOCATIONS, Detector, DetectorContext, Finding
from detectors.lifecycle import AlertLifecycle
from detectors.runner import DetectorSet
from detectors.trust import TrustPolicy
from ingest.codec import Ts, decode_state, decode_versioned, encode, encode_state
from ingest.correlate import Correlator
from ingest.order import EventOrder
from ingest.parsers import Parser, build_app_parser, build_gateway_parser, gateway_labelled_values
from ingest.records import Dataset, DeadLetter, Event, Origin, RawRecord, Transaction, record_id
from ingest.redact import Labelled, Redactor, build_redactor
from ingest.redact_batch import redact_events
from ingest.sinks.base import Batch
from ingest.sources.revocations import shared_revocations
from ingest.sources.unwrap import RUNTIME_WRAPPERS
from gatewatch.config import DEFAULT_MAX_LINE_BYTES
from gatewatch.unread import InputNote, InputWatch

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig

log = logging.getLogger(__name__)

# A gap in event time longer than this is crossed in one step instead of one
# tick a second (a replay of logs with a day missing would otherwise spin).
_MAX_TICKED_GAP_SECS = 86_400
_TS = attrgetter("ts")


@dataclass(slots=True)
class RunStats:
    """A pipeline's running totals (``Pipeline.stats``), or what was counted between two reports."""

    records_in: int = 0
    events: int = 0
    dead_letters: int = 0
    transactions: int = 0
    late_events: int = 0
    future_events: int = 0
    redelivered: int = 0
    ts_from_runtime: int = 0  # events dated by the container runtime's timestamp: their format had no date
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    detector_errors: dict[str, int] = field(default_factory=dict)
    input_notes: list[InputNote] = field(default_factory=list)  # an input or a field no line gave (unread.py)

    def since(self, earlier: RunStats) -> RunStats:
        """What was counted after ``earlier`` (a copy of these totals taken before)."""
        counts = RunStats(
            dead_letter_reasons=_grown(self.dead_letter_reasons, earlier.dead_letter_reasons),
            detector_errors=_grown(self.detector_errors, earlier.detector_errors),
        )
        for name in _RUN_COUNTS:
            setattr(counts, name, getattr(self, name) - getattr(earlier, name))
        return counts

    def copy(self) -> RunStats:
        return replace(self, dead_letter_reasons=dict(self.dead_letter_reasons),
                       detector_errors=dict(self.detector_errors), input_notes=list(self.input_notes))  # fmt: skip


_RUN_COUNTS = tuple(f.name for f in fields(RunStats) if f.type == "int")


def _grown(now: dict[str, int], earlier: dict[str, int]) -> dict[str, int]:
    return {key: count - earlier.get(key, 0) for key, count in now.items() if count > earlier.get(key, 0)}


def tune_gc_for_streaming() -> None:
    """Collect garbage less often: the pipeline keeps a window of events alive on purpose.

    Reorder buffer and open requests hold ~150 s of traffic — hundreds of
    thousands of objects at a few hundred requests a second — and with the
    default thresholds every full collection rescanned them all: a third of
    replay time at 400 req/s. Records form no reference cycles, so collecting
    rarely loses nothing. Measured: 14.7k -> 21.8k events/s on one core. In
    serve, kafka-python's timed-out polls do (the exception kept in its
    selector's state references its frame, and with it the fetch's data): a
    soak measured up to ~25 MiB of glibc heap held that way, freed at each
    collection, ~9 minutes apart at 400 records/s.
    """
    gc.set_threshold(100_000, 50, 100)


class RecordParsers:
    """The gateway and app parsers a config describes, compiled once, and the redactor their results pass.

    ``parsers[dataset]`` is the parser of one record, its result redacted;
    :func:`parse_records` parses a batch and redacts its events together
    (:mod:`ingest.redact_batch`), for less. Either way every event and dead
    letter is redacted (``redact`` section) before anything stores, detects or
    logs it.
    """

    def __init__(
        self, plain: dict[Dataset, Parser], redactor: Redactor, labelled: dict[Dataset, Labelled] | None = None
    ) -> None:
        self.plain = plain  # unredacted: read only through parse_records or parsers[dataset]
        self.redactor = redactor
        self.labelled = labelled or {}  # a format's label values in a dead letter's line, by dataset
        self._redacted = {dataset: redactor.wrap(parse, self.labelled.get(dataset)) for dataset, parse in plain.items()}

    def __getitem__(self, dataset: Dataset) -> Parser:
        return self._redacted[dataset]


def build_parsers(config: GatewatchConfig) -> RecordParsers:
    """The gateway and app parsers the config describes, compiled once, with its redactor."""
    if config.gateway.max_line_bytes < DEFAULT_MAX_LINE_BYTES:
        # An earlier release's deploy config set 65536: an upgrade kept it without a word.
        _warn_once(
            f"gateway_line_limit_low: gateway.max_line_bytes {config.gateway.max_line_bytes} is below the 1 MiB "
            "default: a client whose headers (up to Envoy's 60 KiB) pass it once Envoy escapes them makes its "
            "request's gateway line a dead letter, so its token goes unseen and Billing's line is a false "
            "gateway_bypass; remove the key unless your lines are bounded below it"
        )
    return RecordParsers(
        {
            Dataset.GATEWAY: build_gateway_parser(
                config.gateway.format,
                config.gateway.json_format,
                config.gateway.max_line_bytes,
                config.gateway.xff_num_trusted_hops,
            ),
            Dataset.APP: build_app_parser(config.app.fields, config.app.max_line_bytes),
        },
        build_redactor(config),
        {Dataset.GATEWAY: gateway_labelled_values(config.gateway.format, config.gateway.json_format)},
    )


def read_position(events: Sequence[Event], default: float) -> float:
    """Where a reader of one input is, by the events it fed last: their median time (``default`` if none).

    replay reads next from the input furthest behind. Not by the newest time seen (the input's clock):
    one line dated minutes ahead (a clock step on the gateway host) made its input look ahead, the
    other input was read past the lines still to come, and those all came late (a verification trial:
    1,625 late lines, ~1,240 false no_gateway_record alerts, where serve on the same files had none).
    """
    if not events:
        return default
    times = sorted([event.ts for event in events])
    return times[len(times) // 2]


def parse_records(parsers: RecordParsers, records: Iterable[RawRecord]) -> tuple[list[Event], list[DeadLetter]]:
    """Parse, normalize and redact raw records: the stateless first stage, safe to split across processes."""
    events: list[Event] = []
    dead_letters: list[DeadLetter] = []
    plain, redactor, labelled = parsers.plain, parsers.redactor, parsers.labelled
    for record in records:
        result = plain[record.origin.dataset](record)
        if record.id_origin is not None:
            result = _with_id_origin(result, record.id_origin)
        if type(result) is Event:
            events.append(result)
        else:
            letter: DeadLetter = result  # type: ignore[assignment]
            dead_letters.append(redactor.redact_dead_letter(letter, labelled.get(record.origin.dataset)))
    return redact_events(redactor, events), dead_letters


def lifecycle_settings(config: GatewatchConfig, book: AlertBook) -> dict[str, Any]:
    """The alert lifecycle's settings: ``alerts.*`` of the config, and how long the book keeps a window open."""
    return {
        "update_interval_secs": config.alerts.update_interval_secs,
        "resolve_after_secs": config.alerts.resolve_after_secs,
        "forget_after_secs": book.suppression_window_secs + book.grace_secs,
        "max_request_ids": config.alerts.max_request_ids,
    }


PIPELINE_STATE_VERSION = 2
"""v2: the order buffer's and the correlator's events as Event arrays; v1 (EventTables) is still read."""


class PipelineState(msgspec.Struct, array_like=True, gc=False):
    """:meth:`Pipeline.snapshot`'s body: each component's ``state()`` (see detectors/base.py)."""

    order: EventOrder.State
    correlator: Correlator.State
    detectors: dict[str, msgspec.Raw]  # rule_id -> its State, decoded with the rule's own type
    alert_book: AlertBook.State
    tick: Ts | None
    stream_offsets: dict[str, int]
    # The alert lifecycle's own versioned plain data (dicts, lists, numbers, strings): decoded to builtins only.
    lifecycle: Any | None = None


PIPELINE_STATES: dict[str, dict[int, type[PipelineState]]] = {
    "pipeline": {1: PipelineState, PIPELINE_STATE_VERSION: PipelineState}
}
"""Every version a snapshot is read in: their bodies differ only inside the order's and correlator's events."""


def _with_id_origin(result: Event | DeadLetter, origin: Origin) -> Event | DeadLetter:
    # An event keeps its Kafka origin (its input's order and offsets) and takes its id from where it entered;
    # a dead letter, which is never ordered, names where it entered.
    if isinstance(result, Event):
        return msgspec.structs.replace(result, id=record_id(origin))
    return DeadLetter(origin, result.reason, result.detail, result.line)


@functools.cache
def _warn_once(message: str) -> None:
    # serve makes a context for each of its tasks (13 by default) and again at each rebalance
    log.warning(message)


def detector_context(config: GatewatchConfig) -> DetectorContext:
    """What the rules share: the trust policy and the revocation list the config names."""
    trust = TrustPolicy.build(
        gateway_identities=config.trust.gateway_identities,
        gateway_networks=config.trust.gateway_networks,
        allowlist_paths=config.trust.allowlist_paths,
        internal_callers=config.trust.internal_callers,
    )
    if not trust.knows_gateway:
        _warn_once(
            "trust_unconfigured: set trust.gateway_identities or trust.gateway_networks; "
            "until then gateway_bypass cannot tell the gateway's peers from others, and token_replay "
            "counts only the clients the gateway logged"
        )
    revoked = shared_revocations(config.tokens.revoked) if config.tokens.revoked else NO_REVOCATIONS
    return DetectorContext(trust=trust, revoked=revoked, join_window_secs=config.correlate.join_window_secs)


def detector_configs(config: GatewatchConfig) -> dict[str, Any]:
    """Each rule's config section, by rule id."""
    return {rule_id: getattr(config.detectors, rule_id) for rule_id in type(config.detectors).model_fields}


class Pipeline:
    """Parse, order, correlate and detect; everything in event time.

    ``select`` and ``sink`` run a share of the rules with findings handed to
    ``sink`` instead of the alert book and lifecycle: the JOIN task of
    partitioned detection (:mod:`gatewatch.tasks.join`) is this pipeline so.
    """

    def __init__(
        self,
        config: GatewatchConfig,
        *,
        select: Callable[[type[Detector]], bool] | None = None,
        sink: Callable[[Finding], None] | None = None,
    ) -> None:
        self.config = config
        book = AlertBook(config.alerts.suppression_window_secs, config.alerts.max_request_ids)
        self._lifecycle_settings = lifecycle_settings(config, book)
        self.context = detector_context(config)
        self.detectors = DetectorSet(
            detector_configs(config),
            self.context,
            book,
            AlertLifecycle(**self._lifecycle_settings) if sink is None else None,
            select=select,
            sink=sink,
        )
        self.order = EventOrder(config.correlate.allowed_lateness_secs, config.correlate.max_future_secs)
        self.correlator = Correlator(config.correlate.join_window_secs)
        self.inputs = InputWatch(config)
        self.stats = RunStats()  # running totals: the one count; others take what is new (take_counts)
        self._reported = RunStats()
        self._runtime_dated = bool(
            {config.gateway.unwrap, config.app.unwrap, config.kafka.unwrap.gateway, config.kafka.unwrap.app}
            & RUNTIME_WRAPPERS
        )
        self.stream_offsets: dict[str, int] = {}  # highest offset ordered, per input
        self._tick: float | None = None
        self._batch = Batch()
        # A subclass that handles each ordered event itself, and not each second's batch, is given them one
        # by one, as the order releases them; this class (and serve's JOIN task, which routes each second's
        # batch on in _process_second) takes a release a second at a time.
        cls = type(self)
        self._per_event = (
            cls._process_event is not Pipeline._process_event and cls._process_second is Pipeline._process_second
        )

    @functools.cached_property
    def _parsers(self) -> RecordParsers:
        # Compiled at the first feed, not here: serve's JOIN tasks take events the ingest stage
        # parsed, and a rebalance that hands a process six of them compiled twelve readers for
        # nothing (~8 ms of CPU a task).
        return build_parsers(self.config)

    # -- inputs ---------------------------------------------------------------

    def open_stream(self, stream: str) -> None:
        self.order.open_stream(stream)

    def close_stream(self, stream: str) -> None:
        self.order.close_stream(stream)

    def advance_stream(self, stream: str, ts: float) -> None:
        self.order.advance_stream(stream, ts)

    def stream_clock(self, stream: str) -> float:
        """The newest event time seen on ``stream`` (-inf before its first event)."""
        return self.order.stream_clock(stream)

    @property
    def watermark(self) -> float:
        """The newest time every open input has reached, less the allowed lateness (inf with none open)."""
        return self.order.watermark

    def feed(self, records: Iterable[RawRecord]) -> list[Event]:
        """Parse records of one or more inputs, queue their events for ordering, and return them."""
        events, dead_letters = parse_records(self._parsers, records)
        stats = self.stats
        stats.records_in += len(events) + len(dead_letters)
        if self._runtime_dated:
            # normalize takes the runtime's time as ts only when the line had none: then they are one float
            stats.ts_from_runtime += sum(1 for e in events if e.created is not None and e.ts == e.created)
        for letter in dead_letters:
            stats.dead_letter_reasons[letter.reason] = stats.dead_letter_reasons.get(letter.reason, 0) + 1
        notes = self.inputs.observe(events, dead_letters)
        if notes:
            stats.input_notes += notes
        self._batch.events.extend(events)
        self._batch.dead_letters.extend(dead_letters)
        self.order_events(events)
        return events

    def order_events(self, events: Iterable[Event]) -> None:
        """Run arrival detectors on parsed events (each input's in offset order), then queue them for ordering.

        An event at or below the highest offset already seen on its input is a
        re-delivery (a restarted producer re-sending) and is skipped, so state
        is never fed the same record twice. An event far ahead of every credible
        time is held by the order (stored, not yet detected) until something
        vouches for it; see :mod:`ingest.order`.
        """
        order = self.order
        offsets = self.stream_offsets
        add = order.add
        # The arrival rules are stateless: they are offered the events as one batch, in the order they
        # came, before anything else detects (a late event, processed at once; held events turned credible).
        arrived: list[Event] = []
        for event in events:
            origin = event.origin
            stream, offset = origin.stream, origin.offset
            if offset <= offsets.get(stream, -1):
                self.stats.redelivered += 1
                continue
            offsets[stream] = offset
            if event.ts > order.horizon:
                credible = order.hold(event)
                if credible:
                    self._arrive(arrived)
                    self._order_credible(credible)
                continue
            arrived.append(event)
            if not add(stream, event):
                self._arrive(arrived)
                self._process_event(event)
        self._arrive(arrived)
        self._order_credible(order.reached())

    def _order_credible(self, events: list[Event]) -> None:
        # Held events that became credible: the same path as any other, minus the checks done.
        arrived: list[Event] = []
        for event in events:
            arrived.append(event)
            if not self.order.add(event.origin.stream, event):
                self._arrive(arrived)
                self._process_event(event)
        self._arrive(arrived)

    def _arrive(self, arrived: list[Event]) -> None:
        # The arrival rules over the events queued in ``arrived``, which is then emptied (the rules get a copy).
        if arrived:
            events = arrived[:]
            arrived.clear()
            alerts = self.detectors.observe_arrivals(events)
            if alerts:
                self._collect(alerts)

    # -- processing -----------------------------------------------------------

    def process(self) -> None:
        """Move every event the watermark releases through correlation and detection.

        Event time then advances to the watermark even without events, so
        requests close and windows end on a quiet stream too.
        """
        if self._per_event:
            process_event = self._process_event
            for event in self.order.release():
                process_event(event)
        else:
            self._process_released(self.order.take())
        watermark = self.order.watermark
        if self._tick is not None and watermark != float("inf") and watermark >= self._tick + 1:
            self._advance_to(math.floor(watermark))

    def finish(self) -> None:
        """End of input: release and close everything, then let every window end.

        Events still held as far-future stay out of detection (they are stored
        like any other) and are counted in ``future_events``.
        """
        self._order_credible(self.order.settle())
        if self._per_event:
            for event in self.order.release(float("inf")):
                self._process_event(event)
        else:
            self._process_released(self.order.take(float("inf")))
        if self._tick is not None:
            self._advance_to(math.floor(self.order.clock) + self.config.correlate.join_window_secs + 1)
        self._emit_transactions(self.correlator.close_all())
        self._collect(self.detectors.advance(float("inf")))
        lifecycle = self.detectors.lifecycle
        if lifecycle is not None and self._tick is not None:
            self._batch.alert_events.extend(lifecycle.finish(self._tick))
        self.stats.input_notes += self.inputs.finish()

    def drain(self) -> Batch:
        batch, self._batch = self._batch, Batch()
        self.stats.events += len(batch.events)
        self.stats.dead_letters += len(batch.dead_letters)
        self.stats.transactions += len(batch.transactions)
        self._refresh_stats()
        return batch

    def take_counts(self) -> RunStats:
        """What :attr:`stats` counted since the previous call (or since :meth:`restore`).

        For counters kept elsewhere (serve's metrics, a task's output): they add
        these, so the pipeline's totals stay the one count and nobody else keeps
        a baseline of them.
        """
        self._refresh_stats()
        totals = self.stats.copy()
        counts, self._reported = totals.since(self._reported), totals
        return counts

    def _refresh_stats(self) -> None:
        stats = self.stats
        stats.late_events = self.order.late_events
        stats.future_events = self.order.future_events
        stats.detector_errors = dict(self.detectors.errors)

    def snapshot(self) -> bytes:
        """All event-time state (order buffer, open requests, detectors, alert book) as bytes.

        Taken right after :meth:`drain`, together with the input offsets it
        covers, it lets a restarted process continue exactly where this one was.
        A :class:`PipelineState` in an :mod:`ingest.codec` envelope: data only.
        """
        detectors = {d.rule_id: msgspec.Raw(encode_state(d.state())) for d in self.detectors.detectors}
        lifecycle = self.detectors.lifecycle.to_state() if self.detectors.lifecycle is not None else None
        book = self.detectors.alert_book
        assert book is not None  # a Pipeline always gives its detectors a book (a JOIN task's sink aside, it folds)
        body = (self.order.state(), self.correlator.state(), detectors, book.state(),
                self._tick, self.stream_offsets, lifecycle)  # fmt: skip
        return encode("pipeline", PIPELINE_STATE_VERSION, body)

    def restore(self, snapshot: bytes | memoryview) -> None:
        """Continue from a :meth:`snapshot` taken by a pipeline with the same config.

        Settings and the revocation list come from this process's config; a rule
        enabled since has fresh state, one disabled since is dropped. Raises
        WireError (or ValueError) if the snapshot does not decode, leaving this
        pipeline untouched.
        """
        _, version, state = decode_versioned(snapshot, PIPELINE_STATES)
        order = EventOrder(self.order.lateness_secs, self.order.max_future_secs)
        order.restore_state(state.order, packed=version == 1)
        correlator = Correlator(self.correlator.join_window_secs)
        correlator.restore_state(state.correlator, packed=version == 1)
        detectors = [type(d)(d.config, d.context) for d in self.detectors.detectors]
        for detector in detectors:
            saved = state.detectors.get(detector.rule_id)
            if saved is not None and detector.State is not None:
                detector.restore_state(decode_state(saved, detector.State))
        book = self.detectors.alert_book
        assert book is not None
        alert_book = AlertBook(book.suppression_window_secs, book.max_request_ids)
        alert_book.restore_state(state.alert_book)
        lifecycle = self.detectors.lifecycle
        if lifecycle is not None:
            lifecycle = (
                AlertLifecycle.from_state(state.lifecycle, **self._lifecycle_settings)
                if state.lifecycle is not None
                else AlertLifecycle(**self._lifecycle_settings)
            )
        self.order, self.correlator, self._tick = order, correlator, state.tick
        self.detectors.detectors, self.detectors.alert_book = detectors, alert_book
        self.detectors.lifecycle = lifecycle
        self.stream_offsets = dict(state.stream_offsets)
        self._refresh_stats()
        self._reported = self.stats.copy()  # what the checkpointed state counted was reported before it

    # -- internals ------------------------------------------------------------

    def _process_event(self, event: Event) -> None:
        tick = self._tick
        if tick is None:
            self._tick = math.floor(event.ts)
        elif event.ts >= tick + 1:  # a later second (the tick is a whole second): floor only then
            self._advance_to(math.floor(event.ts))
        if event.request_id is not None:
            self.correlator.add(event, self.order.clock)
        alerts = self.detectors.observe_event(event)
        if alerts:
            self._collect(alerts)

    def _process_released(self, events: list[Event]) -> None:
        """:meth:`_process_event` for each of ``events`` (one release, in event-time order), a second at a time.

        The events of one second of event time are correlated, then offered to the rules, as one
        batch; between two seconds, requests close and windows end (:meth:`_advance_to`) exactly
        where they would one event at a time. The correlator and the rules share nothing, so every
        rule sees the same sequence, and the alerts come in the same order.
        """
        process_second = self._process_second
        at, end = 0, len(events)
        while at < end:
            ts = events[at].ts
            tick = self._tick
            if tick is None:
                tick = self._tick = math.floor(ts)
            elif ts >= tick + 1:
                tick = math.floor(ts)
                self._advance_to(tick)  # which leaves the tick there
            upto = bisect.bisect_left(events, tick + 1, at, end, key=_TS)
            process_second(events[at:upto] if at or upto < end else events)
            at = upto

    def _process_second(self, second: list[Event]) -> None:
        # The released events of one second of event time (the tick's), after the tick's step: correlated,
        # then offered to the rules. A seam for serve's JOIN task, which routes them on after this.
        self.correlator.add_released(second)
        alerts = self.detectors.observe_events(second)
        if alerts:
            self._collect(alerts)

    def _advance_to(self, second: float) -> None:
        assert self._tick is not None
        if second - self._tick > _MAX_TICKED_GAP_SECS:
            self._tick = second - 1
        while self._tick < second:
            self._tick += 1
            self._emit_transactions(self.correlator.close_until(self._tick))
            alerts = self.detectors.advance(self._tick)
            if alerts:
                self._collect(alerts)
            lifecycle = self.detectors.lifecycle
            if lifecycle is not None:
                self._batch.alert_events.extend(lifecycle.advance(self._tick))

    def _emit_transactions(self, transactions: Iterable[Transaction]) -> None:
        txns = list(transactions)
        if txns:
            self._batch.transactions += txns
            alerts = self.detectors.observe_transactions(txns)
            if alerts:
                self._collect(alerts)

    def _collect(self, alerts: Iterable[Alert]) -> None:
        batch_alerts = self._batch.alerts
        for alert in alerts:
            batch_alerts[alert.id] = alert
