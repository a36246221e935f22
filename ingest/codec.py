"""Typed MessagePack for what gatewatch writes to Kafka and reads back: events, messages, checkpoints.

Everything crosses as msgspec Structs: named, typed fields, checked when
decoded, never an arbitrary object (no pickle, no class named by the data).
Rows are ``array_like`` — positional on the wire, like Protobuf field numbers,
and named in the Struct — so 5,000 events do not repeat 37 field names.

An encoded value is an :class:`Envelope`, ``[version, kind, body]``: the body
is decoded only once its version and kind are known, so a message from a
newer (or an older, retired) format is refused as ``unknown_version`` rather
than misread. Adding a field at the end of a Struct with a default is
compatible; anything else bumps the version.

:func:`decode` raises :class:`~ingest.errors.WireError` with a
low-cardinality ``reason`` (``undecodable``, ``unknown_version``,
``unknown_kind``) and nothing else, whatever the bytes hold.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, TypeVar

import msgspec

from ingest.errors import WireError
from ingest.records import MAX_TS_SECS, Dataset, Event, Origin

__all__ = [
    "EventRow", "EventTable", "Envelope", "MAX_TS_SECS", "decode", "decode_event_state", "decode_state",
    "decode_versioned", "encode", "encode_event_list", "encode_event_state", "encode_rows", "encode_state",
    "event_rows", "events_from_rows", "pack_events", "split_unencodable", "unpack_events",
]  # fmt: skip

T = TypeVar("T")

Ts = Annotated[float, msgspec.Meta(ge=-MAX_TS_SECS, le=MAX_TS_SECS)]
Offset = Annotated[int, msgspec.Meta(ge=0)]


class EventRow(msgspec.Struct, array_like=True, frozen=True, gc=False):
    """One :class:`~ingest.records.Event` on the wire; its origin's stream travels once per message or table."""

    id: str
    dataset: Dataset
    ts: Ts
    offset: Offset
    request_id: str | None = None
    method: str | None = None
    path: str | None = None
    protocol: str | None = None
    status: int | None = None
    response_flags: tuple[str, ...] = ()
    response_code_details: str | None = None
    bytes_received: int | None = None
    bytes_sent: int | None = None
    duration_ms: float | None = None
    upstream_service_time_ms: float | None = None
    upstream_host: str | None = None
    upstream_cluster: str | None = None
    route_name: str | None = None
    authority: str | None = None
    user_agent: str | None = None
    forwarded_for: str | None = None
    source_ip: str | None = None
    peer_identity: str | None = None
    tls_version: str | None = None
    user_id: str | None = None
    org_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    level: str | None = None
    message: str | None = None
    token_jti: str | None = None
    token_sub: str | None = None
    token_org: str | None = None
    token_exp: float | None = None
    token_iat: float | None = None
    labels: tuple[tuple[str, str], ...] = ()
    created: float | None = None


_EVENT_FIELDS = list(Event.__struct_fields__)
# The row is the event with its origin flattened to the offset; tests/ingest/test_codec.py
# holds the two field lists together, so a field added to Event fails until it is added here.
assert list(EventRow.__struct_fields__) == [*_EVENT_FIELDS[:3], "offset", *_EVENT_FIELDS[4:]], "EventRow != Event"
# One getter for the whole row, the origin read through its dotted name: it builds the
# row's tuple in one C call, where a getter of the rest star-unpacked into a second
# tuple built it twice.
_row_of = operator.attrgetter(*_EVENT_FIELDS[:3], "origin.offset", *_EVENT_FIELDS[4:])
_row_values = msgspec.structs.astuple


def event_rows(events: Iterable[Event]) -> list[tuple[Any, ...]]:
    """The events as :class:`EventRow` arrays, ready to encode (plain tuples: a Struct per event would cost more)."""
    return list(map(_row_of, events))


def events_from_rows(stream: str, rows: Sequence[EventRow]) -> list[Event]:
    """The events of decoded rows, all read from ``stream``."""
    return [_event(stream, row) for row in rows]


def _event(stream: str, row: EventRow) -> Event:
    # The row's values in a list, the offset replaced by the origin in place: the
    # event's arguments in order, without slicing the rest into a second tuple.
    values = list(_row_values(row))
    values[3] = Origin(values[1], stream, values[3])
    return Event(*values)


def encode_event_list(events: Sequence[Event]) -> msgspec.Raw:
    """The events, encoded once as a list of their arrays, to embed in a message (``encode(..., (..., events))``).

    :class:`~ingest.records.Event` is ``array_like``: msgspec writes each one
    from the Struct in C (its origin as ``[dataset, stream, offset]``), and a
    ``list[Event]`` decodes straight back into events, bounds checked.

    Raises :class:`~ingest.errors.WireError` (reason ``invalid_value``) if an
    event cannot cross the wire: an integer past uint64 or an event time
    outside ±:data:`MAX_TS_SECS`. :func:`split_unencodable` tells which.
    """
    _check_times(events)
    try:
        return msgspec.Raw(_encoder.encode(events))
    except OverflowError as error:
        raise WireError("invalid_value", str(error)) from None


def encode_rows(events: Sequence[Event]) -> msgspec.Raw:
    """The events as :class:`EventRow` arrays, encoded once, as an older gatewatch embedded them in a
    message; raises as :func:`encode_event_list` does."""
    _check_times(events)
    try:
        return msgspec.Raw(_encoder.encode(event_rows(events)))
    except OverflowError as error:
        raise WireError("invalid_value", str(error)) from None


def _check_times(events: Sequence[Event]) -> None:
    if not all(-MAX_TS_SECS <= e.ts <= MAX_TS_SECS for e in events):  # NaN fails it too
        raise WireError("invalid_value", "event time out of range")


def split_unencodable(events: Iterable[Event]) -> tuple[list[Event], list[tuple[Event, str]]]:
    """The events that can cross the wire, and the others with what is wrong (one by one: the slow path)."""
    good: list[Event] = []
    bad: list[tuple[Event, str]] = []
    for event in events:
        try:
            encode_event_list((event,))
        except WireError as error:
            bad.append((event, error.detail))
        else:
            good.append(event)
    return good, bad


def encode_event_state(events: Iterable[Event]) -> msgspec.Raw:
    """Events a component holds, for its checkpoint state: a list of Event arrays, in their order.

    msgspec writes each Event in C, where :func:`pack_events` built a row tuple
    an event in Python first (a state v1 wrote those tables); a checkpoint
    writes every buffered event, tens of thousands, at every save. Raises
    OverflowError past uint64, as encoding the state around it would.
    """
    return msgspec.Raw(_encoder.encode(list(events)))


def decode_event_state(data: msgspec.Raw | bytes, packed: bool) -> list[Event]:
    """The events of :func:`encode_event_state`, or, ``packed``, of an :class:`EventTable` (a state v1's).

    Raises WireError ``undecodable``.
    """
    if packed:
        return unpack_events(decode_state(data, EventTable))
    return decode_state(data, _EventList)


_EventList = list[Event]


class EventTable(msgspec.Struct, array_like=True, gc=False):
    """Events of any streams, in a given order (a state v1's buffer): stream names once, then rows."""

    streams: list[str]
    stream_of: list[int]  # index into streams, one per row
    rows: list[EventRow]  # as written by pack_events: the rows' tuples, which encode the same


def pack_events(events: Iterable[Event]) -> EventTable:
    """``events`` as an :class:`EventTable`, in their order, ready to encode."""
    index: dict[str, int] = {}
    stream_of = []
    listed = list(events)
    for event in listed:
        stream = event.origin.stream
        i = index.get(stream)
        if i is None:
            i = index[stream] = len(index)
        stream_of.append(i)
    return EventTable(list(index), stream_of, event_rows(listed))  # type: ignore[arg-type]


def unpack_events(table: EventTable) -> list[Event]:
    """The events of a decoded table, in its order. Raises WireError if the table is inconsistent."""
    streams, stream_of, rows = table.streams, table.stream_of, table.rows
    if len(stream_of) != len(rows) or any(not 0 <= i < len(streams) for i in stream_of):
        raise WireError("undecodable", "event table: stream index out of range")
    return [_event(streams[i], row) for i, row in zip(stream_of, rows)]


class Envelope(msgspec.Struct, array_like=True, gc=False):
    """``[version, kind, body]``: what every encoded value is. The body is decoded once both are known."""

    version: int
    kind: str
    body: msgspec.Raw


_encoder = msgspec.msgpack.Encoder()
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)
_decoders: dict[type, msgspec.msgpack.Decoder[Any]] = {}


def encode(kind: str, version: int, body: object) -> bytes:
    """One envelope. ``body`` is a Struct or the tuple of its fields in order; raises OverflowError past uint64."""
    return _encoder.encode((version, kind, body))


Kinds = Mapping[str, tuple[int, type[T]] | Mapping[int, type[T]]]
"""What :func:`decode` reads: kind -> (version, body type), or kind -> {version: body type} for a kind
read in more than one version."""


def decode(data: bytes | memoryview, kinds: Kinds[T]) -> tuple[str, T]:
    """The kind and body of an envelope whose kind is one of ``kinds``.

    Raises WireError: ``undecodable`` (not an envelope, or a body that does not
    match its type), ``unknown_version``, ``unknown_kind``.
    """
    kind, _, body = decode_versioned(data, kinds)
    return kind, body


def decode_versioned(data: bytes | memoryview, kinds: Kinds[T]) -> tuple[str, int, T]:
    """:func:`decode`, and the version the envelope says: for a kind whose versions share a body type."""
    try:
        envelope = _envelope_decoder.decode(data)
    except msgspec.MsgspecError as error:
        raise WireError("undecodable", str(error)) from None
    expected = kinds.get(envelope.kind)
    if expected is None:
        raise WireError("unknown_kind", f"kind {envelope.kind[:64]!r}")
    versions: Mapping[int, type[T]] = {expected[0]: expected[1]} if isinstance(expected, tuple) else expected
    body_type = versions.get(envelope.version)
    if body_type is None:
        known = ", ".join(f"v{version}" for version in sorted(versions))
        raise WireError("unknown_version", f"{envelope.kind} v{envelope.version}, this gatewatch reads {known}")
    decoder = _decoders.get(body_type)
    if decoder is None:
        decoder = _decoders[body_type] = msgspec.msgpack.Decoder(body_type)
    try:
        return envelope.kind, envelope.version, decoder.decode(envelope.body)
    except msgspec.MsgspecError as error:
        raise WireError("undecodable", f"{envelope.kind}: {error}") from None


def encode_state(state: object) -> bytes:
    """A component's ``state()`` as bare MessagePack (it travels inside a checkpoint's envelope)."""
    return _encoder.encode(state)


def decode_state(data: bytes | memoryview, state_type: type[T]) -> T:
    """The inverse of :func:`encode_state`. Raises WireError ``undecodable``."""
    decoder = _decoders.get(state_type)
    if decoder is None:
        decoder = _decoders[state_type] = msgspec.msgpack.Decoder(state_type)
    try:
        state: T = decoder.decode(data)
    except msgspec.MsgspecError as error:
        raise WireError("undecodable", str(error)) from None
    return state
