"""Normalize: turn a parser's field mapping into a typed :class:`Event`.

Parsers only find values; they hand over a dict keyed by :class:`Event` field
names whose values are strings as logged (or numbers, from typed JSON). This
stage owns every type coercion and the few derivations both log kinds share, so
a new log format is one new parser and never a second copy of these rules.

It also owns every field's range, so no store, detector or alert writer ever
sees a value it cannot hold (a status past int32, a date past year 9999). A
value that reads fine but lies outside its range either costs the record (a
dead letter with reason ``out_of_range``) or is dropped from it (the field
left empty and named in the label ``gatewatch.out_of_range``):

==================================  =================================  ============================
field                               accepted                           otherwise
==================================  =================================  ============================
``ts``                              2000-01-01 <= ts < 2100-01-01 UTC  dead letter ``out_of_range``
``status``                          100-599, or 0 (no response)        dead letter ``out_of_range``
``bytes_received``, ``bytes_sent``  0 .. 2**63-1                       dropped, flagged
``duration_ms``,                    finite, 0 .. 1e12 (~31 years)      dropped, flagged
``upstream_service_time_ms``
``token_exp``, ``token_iat``        finite, 1970-01-01 .. 2100-01-01   dropped, flagged
==================================  =================================  ============================

A value that cannot be read as its type at all (an object or a list where text
goes, a time that is not one) costs the record only for ``ts`` and ``status``
(dead letter ``invalid_value``); anywhere else it is dropped and the field named
in the label ``gatewatch.invalid_value``. Those values come from clients: a
token claim sent as ``["forged"]`` must not hide its request from every rule.

Why the split: a record without a credible time cannot be ordered, and the
status is what most rules read, so a record with an impossible one is not what
it claims to be. The other numbers are details of a request that is otherwise
real (an attacker-minted token with ``exp: 1e300`` must still be seen making
its request), so only the value goes. A timestamp inside the window but far
ahead of the stream is a matter for :mod:`ingest.order`, not for this stage.
"""

from __future__ import annotations

import math
from sys import intern
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ingest.addresses import forwarded_client, without_port
from ingest.records import Dataset, DeadLetter, Event, Origin, record_id


class InvalidValueError(ValueError):
    """A field's value cannot be read as its type: the record becomes a dead letter (``ts``, ``status``),
    or the value is dropped (any other field)."""


class OutOfRangeError(InvalidValueError):
    """A value reads as its type but lies outside its field's range; the record becomes a dead letter."""


class _Dropped(InvalidValueError):
    """A value outside its field's range that the record can do without: the field is left empty.

    An InvalidValueError too, so a fused reader (:mod:`ingest.parsers.fused`) hands the line
    to :func:`normalize`, which flags the dropped field.
    """


MIN_TS = 946_684_800.0
"""2000-01-01T00:00:00Z: the earliest event time accepted."""
MAX_TS = 4_102_444_800.0
"""2100-01-01T00:00:00Z: event and token times from here on are refused."""
MAX_INT64 = 2**63 - 1
MAX_DURATION_MS = 1e12  # ~31 years; in nanoseconds (ECS event.duration) still inside int64
OUT_OF_RANGE_LABEL = "gatewatch.out_of_range"
"""The label naming the fields whose out-of-range values were dropped (comma-separated)."""
INVALID_VALUE_LABEL = "gatewatch.invalid_value"
"""The label naming the fields whose values could not be read as their type and were dropped."""


def parse_timestamp(value: Any) -> float:
    """Seconds since the epoch from ISO 8601 text (any fraction, ``Z`` or offset) or a number.

    A naive timestamp is taken as UTC, which is what Envoy and most app loggers
    write. A number is read in the unit its size gives: seconds up to 1e11 (the
    year 5138), then milliseconds up to 1e14, microseconds up to 1e17, nanoseconds
    beyond (Go's ``UnixNano``, Java's ``Instant`` in µs).
    """
    if type(value) is str:  # the common case first
        return _parse_iso(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            seconds = float(value)
        except OverflowError:  # an int past any float
            raise InvalidValueError(f"timestamp {shown(value)} is not finite") from None
        if not math.isfinite(seconds):
            raise InvalidValueError(f"timestamp {shown(value)} is not finite")
        if seconds <= 1e11:
            return seconds
        return seconds / (1e3 if seconds <= 1e14 else 1e6 if seconds <= 1e17 else 1e9)
    if not isinstance(value, str):
        raise InvalidValueError(f"timestamp {shown(value)} is not text or a number")
    return _parse_iso(value)  # a str subclass


SHOWN_CHARS = 120
"""Most characters of a value a dead letter's detail quotes: the raw line holds it whole."""


def shown(value: Any) -> str:
    """``repr(value)`` for an error's text, cut to :data:`SHOWN_CHARS`: a 900 KB timestamp quoted whole
    was stored twice with its dead letter and redacted twice (2.2 s of CPU for a line of card-like digits)."""
    text = repr(value)
    return text if len(text) <= SHOWN_CHARS else f"{text[:SHOWN_CHARS]}... ({len(text)} characters)"


def _parse_iso(text: str) -> float:
    # Not cached: log timestamps carry milliseconds, so nearly every one is new and a
    # cache miss cost more (0.5 us) than the parse. An extended ISO date ("2026-...")
    # skips the epoch checks; all digits is an epoch number, not a compact ISO date
    # ("14640601" is not 1464-06-01). Decimal digits, which float() reads: str.isdigit() also
    # takes "²", which float() refuses with a ValueError that no caller expects.
    if text[4:5] != "-" and (text.isdecimal() or _looks_decimal(text)):
        return parse_timestamp(float(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidValueError(f"timestamp {shown(text)} is not ISO 8601 or epoch seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _looks_decimal(text: str) -> bool:
    whole, dot, fraction = text.partition(".")
    return bool(dot) and whole.isdecimal() and fraction.isdecimal()


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidValueError(f"{shown(value)} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidValueError(f"{shown(value)} is not a whole number")
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidValueError(f"{shown(value)} is not a whole number") from None
        if not number.is_integer():
            raise InvalidValueError(f"{shown(value)} is not a whole number") from None
        return int(number)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidValueError(f"{shown(value)} is not a number")
    try:
        return float(value)
    except OverflowError:
        raise _Dropped from None  # an int past any float: a number, out of every range
    except (TypeError, ValueError):
        raise InvalidValueError(f"{shown(value)} is not a number") from None


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        raise InvalidValueError(f"{shown(value)} is not a scalar")
    return str(value)


def _to_flags(value: Any) -> tuple[str, ...]:
    # Envoy joins several response flags with commas ("UF,URX"); unknown
    # (custom or newer) flags are kept as they are.
    if isinstance(value, (list, tuple)):
        return tuple(_to_str(v) for v in value)
    return tuple(flag for flag in _to_str(value).split(",") if flag and flag != "-")


def _to_epoch(value: Any) -> float:
    try:
        seconds = parse_timestamp(value)
    except InvalidValueError:
        if _looks_number(value):  # 1e400, inf: a time, just not a credible one
            raise _Dropped from None
        raise
    if not 0.0 <= seconds < MAX_TS:
        raise _Dropped
    return seconds


def _to_status(value: Any) -> int:
    status = _to_int(value)
    if not (100 <= status <= 599 or status == 0):
        raise OutOfRangeError(f"{status} is not an HTTP status (100-599, or 0)")
    return status


def _to_count(value: Any) -> int:
    try:
        count = _to_int(value)
    except InvalidValueError:
        if isinstance(value, float) or _looks_number(value):
            raise _Dropped from None  # 1e300, inf: a number, just not a count
        raise
    if not 0 <= count <= MAX_INT64:
        raise _Dropped
    return count


def _to_duration(value: Any) -> float:
    duration = _to_float(value)
    if not 0.0 <= duration <= MAX_DURATION_MS:  # NaN fails both comparisons
        raise _Dropped
    return duration


def _looks_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    try:
        float(value)
    except OverflowError:
        return True
    except (TypeError, ValueError):
        return False
    return True


# Fields that are not plain text, and how to read them; every other Event field is text.
_COERCE: dict[str, Callable[[Any], Any]] = {
    "status": _to_status,
    "bytes_received": _to_count,
    "bytes_sent": _to_count,
    "duration_ms": _to_duration,
    "upstream_service_time_ms": _to_duration,
    "token_exp": _to_epoch,
    "token_iat": _to_epoch,
    "response_flags": _to_flags,
}
_TEXT_FIELDS = frozenset(Event.__struct_fields__) - {"id", "dataset", "ts", "origin", "labels", "created"} - _COERCE.keys()


SHARED_TEXT_FIELDS = frozenset({
    "method", "protocol", "authority", "user_agent", "route_name", "upstream_cluster", "upstream_host",
    "tls_version", "response_code_details", "peer_identity", "level", "message", "action", "outcome",
    "org_id", "token_org", "source_ip", "forwarded_for", "user_id", "token_sub",
})  # fmt: skip
"""Text fields with few distinct values, or values one client repeats: interned, so the events
held in the reorder buffer and the join share one copy of each (a decoder makes a new string
for every line): 1,645 -> 925 bytes per buffered event on the bench's JSON data. Python frees an
interned string with its last user, so hostile variety costs no more than without."""


def normalize(
    fields: dict[str, Any], origin: Origin, raw: bytes, created: float | None = None, trusted_hops: int = 0
) -> Event | DeadLetter:
    """Build the event for ``fields`` read from the record at ``origin``.

    ``fields`` holds Event field names; ``ts`` is required unless the line
    came with the runtime's timestamp ``created``, which then stands in for it.
    Keys that are not Event fields are kept as string ``labels`` (custom
    headers and operators). Absent values are simply missing keys or ``None``.
    ``trusted_hops``: the gateway's ``xff_num_trusted_hops`` (see :func:`gateway_values`).
    """
    try:
        ts = parse_timestamp(fields.pop("ts"))
    except KeyError:
        if created is None:
            return DeadLetter(origin, "missing_timestamp", "record has no timestamp", raw)
        ts = created
    except InvalidValueError as error:
        return DeadLetter(origin, "invalid_value", f"ts: {error}", raw)
    if not MIN_TS <= ts < MAX_TS:
        return DeadLetter(origin, "out_of_range", f"ts: {ts!r} is outside 2000-01-01 .. 2100-01-01", raw)
    if created is not None and not MIN_TS <= created < MAX_TS:
        created = None  # a wrapper's absurd time is not kept; the line's own time decides
    # The parser's dict becomes the Event's arguments: most values are text already
    # and stay where they are, so only the others are rewritten (same keys: safe while
    # iterating) and the rest removed afterwards.
    values = fields
    dropped: list[str] = []  # keys to remove: absent values, labels, and values out of range
    out_of_range: list[str] = []
    invalid: list[str] = []
    labels: list[tuple[str, str]] = []
    for name, value in values.items():
        if type(value) is str and name in _TEXT_FIELDS:
            if name in SHARED_TEXT_FIELDS:
                values[name] = intern(value)
            continue
        if value is None:
            dropped.append(name)
            continue
        try:
            if name in _TEXT_FIELDS:
                values[name] = _to_str(value)
            elif (coerce := _COERCE.get(name)) is not None:
                values[name] = coerce(value)
            else:
                labels.append((name, _to_str(value)))
                dropped.append(name)
        except _Dropped:
            out_of_range.append(name)
            dropped.append(name)
        except OutOfRangeError as error:
            return DeadLetter(origin, "out_of_range", f"{name}: {error}", raw)
        except InvalidValueError as error:
            if name == "status":
                return DeadLetter(origin, "invalid_value", f"{name}: {error}", raw)
            invalid.append(name)
            dropped.append(name)
    for name in dropped:
        del values[name]
    if out_of_range:
        labels.append((OUT_OF_RANGE_LABEL, ",".join(sorted(out_of_range))))
    if invalid:
        labels.append((INVALID_VALUE_LABEL, ",".join(sorted(invalid))))
    if created is not None:
        values["created"] = created
    if labels:
        values["labels"] = tuple(sorted(labels))
    return make_event(values, ts, origin, trusted_hops)


def make_event(values: dict[str, Any], ts: float, origin: Origin, trusted_hops: int = 0) -> Event:
    """The event of ``values`` (Event field names, values of their types) read at ``origin``.

    The one place :func:`normalize` builds an event; the parsers' fused paths
    (:mod:`ingest.parsers.fused`) call the Event constructor themselves, with
    :func:`gateway_values` for the rules of gateway events: what all events need
    belongs in both.
    """
    if origin.dataset is Dataset.GATEWAY:
        status, source_ip = gateway_values(
            values.get("status"), values.get("source_ip"), values.get("forwarded_for"), trusted_hops
        )
        values["status"] = status
        if source_ip is not None:
            values["source_ip"] = source_ip
    elif (source_ip := values.get("source_ip")) is not None:
        # The app's peer: many servers log it as ip:port (Go's RemoteAddr), and the rules
        # compare it with the gateway's networks. The app parser's fused reader drops it too.
        values["source_ip"] = without_port(source_ip)
    return Event(id=record_id(origin), dataset=origin.dataset, ts=ts, origin=origin, **values)


def gateway_values(
    status: int | None, source_ip: str | None, forwarded_for: str | None, trusted_hops: int = 0
) -> tuple[int | None, str | None]:
    """A gateway event's ``status`` and ``source_ip`` from what its line held.

    The one place of these rules, for :func:`make_event` and the fused readers, which
    build their events without it. A fused reader calls it only for a status of 0 or a
    missing ``source_ip`` beside a ``forwarded_for`` (what it changes): a new rule here
    widens that test in :func:`ingest.parsers.fused.fuse` too.

    Without the downstream address in the line, the client is read from X-Forwarded-For
    from the right, ``trusted_hops`` entries left of the one the gateway appended
    (:func:`ingest.addresses.forwarded_client`): its left end is whatever the client wrote.
    """
    if status == 0:  # RESPONSE_CODE 0: Envoy never started a response (downstream reset)
        status = None
    if source_ip is None and forwarded_for is not None:
        source_ip = forwarded_client(forwarded_for, trusted_hops)
    return status, source_ip
