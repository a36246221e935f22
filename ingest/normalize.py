"""Normalize: turn a parser's field mapping into a typed :class:`Event`.

Parsers only find values; they hand over a dict keyed by :class:`Event` field
names whose values are strings as logged (or numbers, from typed JSON). This
stage owns every type coercion and the few derivations both log kinds share, so
a new log format is one new parser and never a second copy of these rules.
"""

from __future__ import annotations

import math
from sys import intern
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from ingest.records import Dataset, DeadLetter, Event, Origin, record_id


class InvalidValueError(ValueError):
    """A field's value cannot be read as its type; the record becomes a dead letter."""


def parse_timestamp(value: Any) -> float:
    """Seconds since the epoch from ISO 8601 text (any fraction, ``Z`` or offset) or a number.

    A naive timestamp is taken as UTC, which is what Envoy and most app loggers
    write; numbers above 1e11 are epoch milliseconds.
    """
    if type(value) is str:  # the common case first
        return _parse_iso(value)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if not math.isfinite(seconds):
            raise InvalidValueError(f"timestamp {value!r} is not finite")
        return seconds / 1000.0 if seconds > 1e11 else seconds
    if not isinstance(value, str):
        raise InvalidValueError(f"timestamp {value!r} is not text or a number")
    return _parse_iso(value)  # a str subclass


def _parse_iso(text: str) -> float:
    # Not cached: log timestamps carry milliseconds, so nearly every one is new and a
    # cache miss cost more (0.5 us) than the parse. An extended ISO date ("2026-...")
    # skips the epoch checks; all digits is an epoch number, not a compact ISO date
    # ("14640601" is not 1464-06-01).
    if text[4:5] != "-" and (text.isdigit() or _looks_decimal(text)):
        return parse_timestamp(float(text))
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidValueError(f"timestamp {text!r} is not ISO 8601 or epoch seconds") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def _looks_decimal(text: str) -> bool:
    whole, dot, fraction = text.partition(".")
    return bool(dot) and whole.isdigit() and fraction.isdigit()


def _to_int(value: Any) -> int:
    if isinstance(value, bool):
        raise InvalidValueError(f"{value!r} is not a number")
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not value.is_integer():
            raise InvalidValueError(f"{value!r} is not a whole number")
        return int(value)
    try:
        return int(value)
    except (TypeError, ValueError):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InvalidValueError(f"{value!r} is not a whole number") from None
        if not number.is_integer():
            raise InvalidValueError(f"{value!r} is not a whole number") from None
        return int(number)


def _to_float(value: Any) -> float:
    if isinstance(value, bool):
        raise InvalidValueError(f"{value!r} is not a number")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise InvalidValueError(f"{value!r} is not a number") from None


def _to_str(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (dict, list)):
        raise InvalidValueError(f"{value!r} is not a scalar")
    return str(value)


def _to_flags(value: Any) -> tuple[str, ...]:
    # Envoy joins several response flags with commas ("UF,URX"); unknown
    # (custom or newer) flags are kept as they are.
    if isinstance(value, (list, tuple)):
        return tuple(_to_str(v) for v in value)
    return tuple(flag for flag in _to_str(value).split(",") if flag and flag != "-")


def _to_epoch(value: Any) -> float:
    return parse_timestamp(value)


# Fields that are not plain text, and how to read them; every other Event field is text.
_COERCE: dict[str, Callable[[Any], Any]] = {
    "status": _to_int,
    "bytes_received": _to_int,
    "bytes_sent": _to_int,
    "duration_ms": _to_float,
    "upstream_service_time_ms": _to_float,
    "token_exp": _to_epoch,
    "token_iat": _to_epoch,
    "response_flags": _to_flags,
}
_TEXT_FIELDS = frozenset(Event.__slots__) - {"id", "dataset", "ts", "origin", "labels", "created"} - _COERCE.keys()


SHARED_TEXT_FIELDS = frozenset({
    "method", "protocol", "authority", "user_agent", "route_name", "upstream_cluster", "upstream_host",
    "tls_version", "response_code_details", "peer_identity", "level", "message", "action", "outcome",
    "org_id", "token_org", "source_ip", "forwarded_for", "user_id", "token_sub",
})  # fmt: skip
"""Text fields with few distinct values, or values one client repeats: interned, so the events
held in the reorder buffer and the join share one copy of each (a decoder makes a new string
for every line): 1,645 -> 925 bytes per buffered event on the bench's JSON data. Python frees an
interned string with its last user, so hostile variety costs no more than without."""


def normalize(fields: dict[str, Any], origin: Origin, raw: bytes, created: float | None = None) -> Event | DeadLetter:
    """Build the event for ``fields`` read from the record at ``origin``.

    ``fields`` holds Event field names; ``ts`` is required unless the line
    came with the runtime's timestamp ``created``, which then stands in for it.
    Keys that are not Event fields are kept as string ``labels`` (custom
    headers and operators). Absent values are simply missing keys or ``None``.
    """
    try:
        ts = parse_timestamp(fields.pop("ts"))
    except KeyError:
        if created is None:
            return DeadLetter(origin, "missing_timestamp", "record has no timestamp", raw)
        ts = created
    except InvalidValueError as error:
        return DeadLetter(origin, "invalid_value", f"ts: {error}", raw)
    # The parser's dict becomes the Event's arguments: most values are text already
    # and stay where they are, so only the others are rewritten (same keys: safe while
    # iterating) and the rest removed afterwards.
    values = fields
    dropped: list[str] = []
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
        except InvalidValueError as error:
            return DeadLetter(origin, "invalid_value", f"{name}: {error}", raw)
    for name in dropped:
        del values[name]
    if created is not None:
        values["created"] = created
    if labels:
        values["labels"] = tuple(sorted(labels))
    return make_event(values, ts, origin)


def make_event(values: dict[str, Any], ts: float, origin: Origin) -> Event:
    """The event of ``values`` (Event field names, values of their types) read at ``origin``.

    The one place every event is built, by :func:`normalize` and by the parsers'
    fused paths (:mod:`ingest.parsers.fused`): what all events need belongs here.
    """
    if origin.dataset is Dataset.GATEWAY:
        # RESPONSE_CODE 0: Envoy never started a response (downstream reset).
        if values.get("status") == 0:
            values["status"] = None
        if "source_ip" not in values and "forwarded_for" in values:
            values["source_ip"] = values["forwarded_for"].split(",", 1)[0].strip()
    return Event(id=record_id(origin), dataset=origin.dataset, ts=ts, origin=origin, **values)
