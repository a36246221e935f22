"""The messages of serve's internal topics and the tasks' checkpoint bodies.

Each is an :mod:`ingest.codec` envelope ``[version, kind, body]``; partitioned
detection (:mod:`gatewatch.tasks`) reads three internal topics:

==================  =======  ==========================================================
topic / kind        version  body
==================  =======  ==========================================================
requests
  ``poll_events``   2        :class:`PollEventsMessage`: wall time and, per input stream,
                             its events for one requests partition (whole
                             :class:`~ingest.records.Event` arrays): one message per
                             requests partition and poll, whatever the number of inputs
  ``poll_events``   1        :class:`PollRowsMessage`: the same with :class:`EventRow`
                             rows; no longer written, still read
  ``events``        1        :class:`EventsMessage`: wall time, input stream, the event
                             rows of that input for one requests partition; no longer
                             written, still read (a topic written by an older gatewatch
                             is consumed as it was)
  ``progress``      2        :class:`IngestProgress`: wall time and, per input stream,
                             position, end, credible event-time clock, last wall time
keyed
  ``keyed_rows``    1        :class:`KeyedRowsMessage`: source task, seq, tick, events and
                             transactions for the keyed rules as :class:`KeyedRow`
                             (only the fields those rules read), with rule masks
  ``keyed``         1        :class:`KeyedMessage`: the same with whole event rows; no
                             longer written, still read (a topic written by an older
                             gatewatch is consumed as it was)
findings
  ``findings``      1        :class:`FindingsMessage`: source task, seq, tick, findings,
                             gathered rows (behaviour_outlier's feature rows)
checkpoints
  ``join_state``    1        :class:`JoinState`: a JOIN task (see gatewatch.tasks.join),
                             around a ``pipeline`` v2 (or v1) body
                             (:class:`gatewatch.topology.PipelineState`)
  ``keyed_state``   2        :class:`KeyedState`: a KEYED task, its buffered events as
                             Event arrays (v1, EventTables, is still read)
  ``alert_state``   1        :class:`AlertTaskState`: the ALERT task
==================  =======  ==========================================================

The single detect topic's messages (``progress`` v1, ``detect_state``) are
retired: a ``progress`` v1 message is refused as ``unknown_version``, never
misread, and an old ``detect_state`` checkpoint is never looked up (the tasks'
checkpoints are keyed by their own partitions).
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from detectors.base import Finding, Severity
from ingest.codec import EventRow, EventTable, Ts, decode, decode_versioned, encode
from ingest.records import AMBIGUOUS_CLIENTS_LABEL, Dataset, Event, Origin

__all__ = [
    "AlertTaskState", "EventsMessage", "FindingRow", "FindingsMessage", "GatheredRows", "IngestProgress", "JoinState",
    "KeyedMessage", "KeyedRow", "KeyedRowsMessage", "KeyedState", "KeyedTxn", "PollEventsMessage", "PollRowsMessage",
    "StreamEvents", "StreamProgress", "StreamRows", "decode_findings_message", "decode_keyed_message",
    "decode_requests_message", "decode_task_state", "encode_events", "encode_findings", "encode_ingest_progress",
    "encode_keyed", "encode_poll_events", "encode_poll_rows", "encode_task_state", "keyed_event", "keyed_row",
]  # fmt: skip

EVENTS_VERSION = 1
POLL_ROWS_VERSION = 1
POLL_EVENTS_VERSION = 2

# Wall-clock seconds written by an ingest stage; finite, as the idle rules subtract them.
WallSecs = Annotated[float, msgspec.Meta(ge=0.0, le=1e12)]


class EventsMessage(msgspec.Struct, array_like=True, gc=False):
    """``events`` v1: events of one input partition, in offset order. Read, no longer written."""

    wall_secs: WallSecs  # when the ingest stage produced it
    stream: str  # the input partition, "topic/partition"
    events: list[EventRow]


def encode_events(wall_secs: float, stream: str, rows: msgspec.Raw) -> bytes:
    """One ``events`` message (as an older gatewatch wrote): events of one input in offset order."""
    return encode("events", EVENTS_VERSION, (wall_secs, stream, rows))


class StreamEvents(msgspec.Struct, array_like=True, gc=False):
    """The events of one input stream within a :class:`PollEventsMessage`, in offset order.

    Each event's origin names ``stream`` and its dataset again (the JOIN task refuses
    a part where it names others): ~20 bytes an event (bench/serve_path.py's traffic:
    289 -> 310 bytes a record), for decoding the whole Event in C, where rows were
    made into events one by one in Python.
    """

    stream: str  # the input partition, "topic/partition"
    events: list[Event]


class PollEventsMessage(msgspec.Struct, array_like=True, gc=False):
    """``poll_events`` v2: one poll's events for one requests partition, every input stream's in one message.

    ``events`` was one message per input stream and requests partition: with 8 inputs
    and 6 requests partitions, 48 a poll, each paying kafka-python's produce
    and fetch and a JOIN task's apply (and the keyed and findings messages its
    arrival findings sent at once); this is 6. The JOIN task orders the parts'
    events as it ordered the ``events`` messages' (stream by stream, offset order).
    """

    wall_secs: WallSecs  # when the ingest stage produced it
    parts: list[StreamEvents]  # split past 5,000 events; a stream appears once per message


def encode_poll_events(wall_secs: float, parts: list[tuple[str, msgspec.Raw]]) -> bytes:
    """One ``poll_events`` message: ``(stream, events)`` per input, as
    :func:`~ingest.codec.encode_event_list` encoded them.

    The events are encoded once, when the poll is handled (an event that cannot
    be encoded becomes a dead letter before anything is stored); the message
    around them is made at each send attempt, with that attempt's wall time.
    """
    return encode("poll_events", POLL_EVENTS_VERSION, (wall_secs, parts))


class StreamRows(msgspec.Struct, array_like=True, gc=False):
    """The events of one input stream within a :class:`PollRowsMessage`, in offset order."""

    stream: str  # the input partition, "topic/partition"
    events: list[EventRow]


class PollRowsMessage(msgspec.Struct, array_like=True, gc=False):
    """``poll_events`` v1: :class:`PollEventsMessage` with :class:`EventRow` rows. Read, no longer written."""

    wall_secs: WallSecs
    parts: list[StreamRows]


def encode_poll_rows(wall_secs: float, parts: list[tuple[str, msgspec.Raw]]) -> bytes:
    """One ``poll_events`` v1 message (as an older gatewatch wrote): ``(stream, rows)`` per input, as
    :func:`~ingest.codec.encode_rows` encoded them."""
    return encode("poll_events", POLL_ROWS_VERSION, (wall_secs, parts))


INGEST_PROGRESS_VERSION = 2
KEYED_VERSION = 1
KEYED_ROWS_VERSION = 1
FINDINGS_VERSION = 1
TASK_STATE_VERSION = 1
KEYED_STATE_VERSION = 2

Seq = Annotated[int, msgspec.Meta(ge=0)]
Mask = Annotated[int, msgspec.Meta(ge=0)]


class StreamProgress(msgspec.Struct, array_like=True, gc=False):
    """How far an ingest stage has read one input stream, and the event time it has shown.

    ``clock``: the newest *credible* event time read on the stream (see
    :class:`gatewatch.tasks.route.StreamClocks`), None before the first;
    ``last_wall``: the ingest wall time of the stream's last poll with events, None if never.
    """

    position: Annotated[int, msgspec.Meta(ge=0)]
    end_offset: Annotated[int, msgspec.Meta(ge=0)]
    clock: Ts | None = None
    last_wall: WallSecs | None = None


class IngestProgress(msgspec.Struct, array_like=True, gc=False):
    """``progress`` v2: sent by every ingest stage to every requests partition after each poll and when idle."""

    wall_secs: WallSecs
    streams: dict[str, StreamProgress]


class KeyedTxn(msgspec.Struct, array_like=True, gc=False):
    """A closed transaction for the keyed rules; its events follow in the message's ``txn_events``."""

    request_id: str
    deadline: Ts  # the correlator's deadline: a KEYED task closes it at the first tick >= deadline
    mask: Mask  # the rules it is for (bit = the rule's index in detectors.registry())
    gateway: Annotated[int, msgspec.Meta(ge=0)]  # how many of txn_events are its gateway events, then its app events
    app: Annotated[int, msgspec.Meta(ge=0)]


class KeyedMessage(msgspec.Struct, array_like=True, gc=False):
    """``keyed`` v1: :class:`KeyedRowsMessage` with whole event rows. Read, no longer written."""

    source: str  # the sending task's input partition, "topic/partition"
    seq: Seq  # per (source, destination partition), from 1; a repeat (seq <= last seen) is skipped
    tick: Ts | None
    events: EventTable  # in the order processed, fields the keyed rules read only
    event_masks: list[Mask]  # one per event
    transactions: list[KeyedTxn]
    txn_events: EventTable
    final: bool = False


class KeyedRow(msgspec.Struct, array_like=True, gc=False):
    """An event for the keyed rules: the fields they read (and id, dataset, time, origin), nothing else.

    http_4xx_burst, http_5xx_burst, behaviour_outlier, token_replay and the trust
    policy token_replay asks read only these; tests/tasks run every rule's
    examples through the partitioned path, so a rule reading another field
    fails there. A third of an event's fields, and the KEYED task builds each
    event from it without the others' decoding (see :func:`keyed_event`).
    """

    id: str
    dataset: Dataset
    ts: Ts
    stream: Annotated[int, msgspec.Meta(ge=0)]  # index into the message's ``streams``
    offset: Annotated[int, msgspec.Meta(ge=0)]
    request_id: str | None
    path: str | None
    status: int | None
    bytes_sent: int | None
    upstream_host: str | None
    upstream_cluster: str | None
    route_name: str | None
    authority: str | None
    source_ip: str | None
    peer_identity: str | None
    token_jti: str | None
    token_sub: str | None
    token_exp: float | None
    # the label of a line whose client address reads two ways (token_replay's client then); absent before session 25
    ambiguous_clients: str | None = None


def keyed_row(event: Event, stream: int) -> tuple[object, ...]:
    """``event`` as a :class:`KeyedRow` array (a plain tuple: it encodes the same, and costs less than a Struct)."""
    return (event.id, event.dataset, event.ts, stream, event.origin.offset, event.request_id, event.path,
            event.status, event.bytes_sent, event.upstream_host, event.upstream_cluster, event.route_name,
            event.authority, event.source_ip, event.peer_identity, event.token_jti, event.token_sub,
            event.token_exp, event.label(AMBIGUOUS_CLIENTS_LABEL) if event.labels else None)  # fmt: skip


def keyed_event(row: KeyedRow, stream: str) -> Event:
    """The event a :class:`KeyedRow` stands for; the fields it does not carry have their defaults.

    Positional, as :func:`ingest.codec.events_from_rows` builds events: this runs
    once per event and keyed rule partition.
    """
    dataset = row.dataset
    return Event(
        row.id, dataset, row.ts, Origin(dataset, stream, row.offset), row.request_id,
        None, row.path, None,  # method, path, protocol
        row.status, (), None, None, row.bytes_sent,  # status, response_flags, response_code_details, bytes_*
        None, None,  # duration_ms, upstream_service_time_ms
        row.upstream_host, row.upstream_cluster, row.route_name, row.authority,
        None, None,  # user_agent, forwarded_for
        row.source_ip, row.peer_identity,
        None, None, None, None, None, None, None,  # tls_version, user_id, org_id, action, outcome, level, message
        row.token_jti, row.token_sub,
        None, row.token_exp, None,  # token_org, token_exp, token_iat
        () if row.ambiguous_clients is None else ((AMBIGUOUS_CLIENTS_LABEL, row.ambiguous_clients),),  # labels
        None,  # created
    )  # fmt: skip


class KeyedRowsMessage(msgspec.Struct, array_like=True, gc=False):
    """``keyed_rows`` v1: what one JOIN task sends one keyed partition after one input message.

    ``tick``: the sender's event-time tick after that message: every item for
    ticks <= tick has been sent (None until it has one). ``final``: end of input
    (the in-memory driver only; a live stream never ends).
    """

    source: str  # the sending task's input partition, "topic/partition"
    seq: Seq  # per (source, destination partition), from 1; a repeat (seq <= last seen) is skipped
    tick: Ts | None
    streams: list[str]  # the input streams the rows' ``stream`` indexes name
    events: list[KeyedRow]  # in the order processed
    event_masks: list[Mask]  # one per event
    transactions: list[KeyedTxn]
    txn_events: list[KeyedRow]
    final: bool = False


class FindingRow(msgspec.Struct, array_like=True, gc=False):
    """A :class:`~detectors.base.Finding` and the tick whose lifecycle step first sees it (None: at once)."""

    at_tick: Ts | None
    rule: str
    severity: Severity
    entity_type: str
    entity_value: str
    ts: Ts
    summary: str
    request_ids: tuple[str, ...] = ()
    reason: str | None = None
    details: dict[str, Any] = {}
    key: str | None = None
    window_ts: Ts | None = None  # the time whose alert window it folds into (None: ts); absent before session 25


def finding_row(at_tick: float | None, finding: Finding) -> FindingRow:
    """A finding for the findings topic, with the tick whose lifecycle step first sees it."""
    return FindingRow(None if at_tick is None else float(at_tick), finding.rule, finding.severity, finding.entity_type,
                      finding.entity_value, finding.ts, finding.summary, finding.request_ids, finding.reason,
                      dict(finding.details), finding.key, finding.window_ts)  # fmt: skip


class GatheredRows(msgspec.Struct, array_like=True, gc=False):
    """A gathering rule's rows (its ``Row`` type, decoded by the rule's own decoder), ready at ``at_tick``."""

    rule: str
    at_tick: Ts
    rows: msgspec.Raw


class FindingsMessage(msgspec.Struct, array_like=True, gc=False):
    """``findings`` v1: what a JOIN or KEYED task sends the ALERT task after one input message."""

    source: str
    seq: Seq
    tick: Ts | None
    findings: list[FindingRow]
    gathered: list[GatheredRows]
    final: bool = False


class JoinState(msgspec.Struct, array_like=True, gc=False):
    """A JOIN task's checkpoint: its pipeline, idle bookkeeping, output seqs, pending outputs."""

    next_offset: Annotated[int, msgspec.Meta(ge=0)]
    pipeline: msgspec.Raw  # Pipeline.snapshot(), itself an envelope
    last_wall: dict[str, float]
    last_ts: dict[str, float]
    caught_up_since: dict[str, float]
    seqs: dict[str, int]  # "role/partition" -> last seq sent
    sent_ticks: dict[str, Ts | None]  # "role/partition" -> tick of the last message sent there
    final: bool = False
    streams: list[str] = []  # the input streams it was opened with
    advanced: dict[str, tuple[Ts, Ts]] = {}  # IdleInputs.advanced; absent from a checkpoint written before it


class KeyedState(msgspec.Struct, array_like=True, gc=False):
    """A KEYED task's checkpoint: its rules' states, buffered items, tick, upstream and output seqs."""

    next_offset: Annotated[int, msgspec.Meta(ge=0)]
    detectors: dict[str, msgspec.Raw]  # rule_id -> its State
    tick: Ts | None
    events: msgspec.Raw  # buffered, any order: encode_event_state (v1: an EventTable)
    event_masks: list[Mask]
    transactions: list[KeyedTxn]  # buffered
    txn_events: msgspec.Raw  # as events
    upstream_seqs: dict[str, int]
    upstream_ticks: dict[str, Ts | None]
    upstream_final: list[str]
    seq: int  # last seq sent to the findings topic
    sent_tick: Ts | None
    final: bool = False


class AlertTaskState(msgspec.Struct, array_like=True, gc=False):
    """The ALERT task's checkpoint: alert book, lifecycle, pending findings and rows, tick, upstream seqs."""

    next_offset: Annotated[int, msgspec.Meta(ge=0)]
    alert_book: msgspec.Raw  # AlertBook.State
    lifecycle: Any  # AlertLifecycle.to_state(): plain data only
    tick: Ts | None
    pending: list[tuple[FindingRow, str]]  # findings waiting for their lifecycle tick, with their alert id
    gathered: list[GatheredRows]  # rows waiting for their tick
    upstream_seqs: dict[str, int]
    upstream_ticks: dict[str, Ts | None]
    upstream_final: list[str]
    final: bool = False


_REQUESTS: dict[str, tuple[int, type] | dict[int, type]] = {
    "poll_events": {POLL_EVENTS_VERSION: PollEventsMessage, POLL_ROWS_VERSION: PollRowsMessage},
    "events": (EVENTS_VERSION, EventsMessage),
    "progress": (INGEST_PROGRESS_VERSION, IngestProgress),
}
_TASK_STATES: dict[str, tuple[int, type] | dict[int, type]] = {
    "join_state": (TASK_STATE_VERSION, JoinState),
    "keyed_state": {TASK_STATE_VERSION: KeyedState, KEYED_STATE_VERSION: KeyedState},
    "alert_state": (TASK_STATE_VERSION, AlertTaskState),
}
_STATE_KINDS = {JoinState: ("join_state", TASK_STATE_VERSION), KeyedState: ("keyed_state", KEYED_STATE_VERSION),
                AlertTaskState: ("alert_state", TASK_STATE_VERSION)}  # fmt: skip


def encode_ingest_progress(wall_secs: float, streams: dict[str, tuple[int, int, float | None, float | None]]) -> bytes:
    """One ``progress`` v2 message: ``{stream: (position, end_offset, clock, last_wall)}``."""
    return encode("progress", INGEST_PROGRESS_VERSION, (wall_secs, streams))


def decode_requests_message(
    data: bytes | memoryview,
) -> PollEventsMessage | PollRowsMessage | EventsMessage | IngestProgress:
    """A requests-topic message (``poll_events`` v2 or v1, ``events``, ``progress``). Raises WireError
    (``undecodable``, ``unknown_version``, ``unknown_kind``)."""
    return decode(data, _REQUESTS)[1]


_KEYED: dict[str, tuple[int, type]] = {"keyed_rows": (KEYED_ROWS_VERSION, KeyedRowsMessage),
                                       "keyed": (KEYED_VERSION, KeyedMessage)}  # fmt: skip


def encode_keyed(message: KeyedRowsMessage | KeyedMessage) -> bytes:
    """One ``keyed_rows`` message (or a ``keyed`` v1 one, as an older gatewatch wrote)."""
    if type(message) is KeyedMessage:
        return encode("keyed", KEYED_VERSION, message)
    return encode("keyed_rows", KEYED_ROWS_VERSION, message)


def decode_keyed_message(data: bytes | memoryview) -> KeyedRowsMessage | KeyedMessage:
    """A keyed-topic message, either kind. Raises WireError."""
    return decode(data, _KEYED)[1]


def encode_findings(message: FindingsMessage) -> bytes:
    """One ``findings`` message."""
    return encode("findings", FINDINGS_VERSION, message)


def decode_findings_message(data: bytes | memoryview) -> FindingsMessage:
    """A findings-topic message. Raises WireError."""
    return decode(data, {"findings": (FINDINGS_VERSION, FindingsMessage)})[1]


def encode_task_state(state: JoinState | KeyedState | AlertTaskState) -> bytes:
    """A task's checkpoint body, in its kind's envelope."""
    kind, version = _STATE_KINDS[type(state)]
    return encode(kind, version, state)


def decode_task_state(data: bytes | memoryview) -> tuple[int, JoinState | KeyedState | AlertTaskState]:
    """The inverse of :func:`encode_task_state`, and the version it was written in. Raises WireError."""
    _, version, state = decode_versioned(data, _TASK_STATES)  # type: ignore[var-annotated]  # the kinds' union
    return version, state
