"""Wrappers around a log line, taken off before it is parsed.

Lines collected from Kubernetes nodes are wrapped by the container runtime,
and lines shipped to Kafka often by the shipper:

- ``docker``: Docker's json-file driver, one JSON object a line,
  ``{"log": "<line>\\n", "stream": "stdout", "time": "<RFC 3339>"}``; a line
  longer than 16 KiB is split into pieces whose ``log`` lacks the final ``\\n``.
- ``cri``: containerd and CRI-O, ``<RFC 3339 time> <stream> <tag> <line>``,
  the tag ``P`` for a piece of a longer line and ``F`` for its last piece.
- any other name: the key of a shipper's JSON record that holds the line
  (Fluent Bit's ``log``, Fluentd's ``message``), as a string or as the map a
  shipper's JSON decoder made of it. An object under ``log`` that holds only
  ECS ``log.*`` fields (``level``, ``logger``, ``origin``…, as ecs-logging
  libraries write them) is part of the record, not the line: the record is.
- ``none`` (or null): the line itself.

The runtime's time is kept (``RawRecord.created``, ECS ``event.created``).
A line that is not wrapped as configured is handed over as it is, so the
parser turns it into a dead letter that shows it, instead of it being lost.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import orjson

from ingest.normalize import InvalidValueError, parse_timestamp
from ingest.parsers.decode import json_value
from ingest.records import Dataset, Origin, RawRecord

__all__ = [
    "RUNTIME_WRAPPERS", "Unwrap", "Unwrapped", "compile_unwrap", "is_ecs_log_field_set", "join_pieces", "unwrap_key"
]

RUNTIME_WRAPPERS = frozenset({"docker", "cri"})
"""Wrappers that carry the time the line was written."""

# The fields ECS nests under ``log`` (ECS 8.x field reference, "Log Fields").
_ECS_LOG_FIELDS = frozenset({"level", "logger", "origin", "original", "file", "syslog"})

# <time> <stream> <P|F>[:more tags] <line>; the line may be empty.
_CRI = re.compile(rb"(\S+) (stdout|stderr) ([PF])(?::\S*)?(?: (.*))?", re.DOTALL)


@dataclass(frozen=True, slots=True)
class Unwrapped:
    """The line inside a wrapper, the runtime's time, and whether more of the line follows."""

    line: bytes
    created: float | None = None
    stream: str = ""
    partial: bool = False


Unwrap = Callable[[bytes], Unwrapped | None]
"""One wrapped line in, its content out; ``None`` when it is not wrapped as expected."""


def compile_unwrap(mode: str | None) -> Unwrap | None:
    """The unwrapper for an ``unwrap`` setting; ``None`` for ``none`` / null (nothing to take off)."""
    if mode is None or mode == "none":
        return None
    if mode == "docker":
        return _docker
    if mode == "cri":
        return _cri
    return lambda value: _key(value, mode)


def unwrap_key(value: bytes, key: str) -> bytes | None:
    """The log line under ``key`` of a shipper's JSON record, or None when ``value`` is not such a record."""
    found = _key(value, key)
    return None if found is None else found.line


def is_ecs_log_field_set(key: str, value: dict[str, object]) -> bool:
    """Whether an object found under a record's ``key`` is ECS's ``log.*`` field set, not a log line."""
    return key == "log" and bool(value) and value.keys() <= _ECS_LOG_FIELDS


def join_pieces(
    lines: Iterable[tuple[int, bytes]], unwrap: Unwrap, dataset: Dataset, stream: str, max_line_bytes: int
) -> Iterator[RawRecord]:
    """Raw records for the wrapped lines of one file (with their byte offsets), pieces of a split line joined.

    A joined line takes the offset of its last piece as its offset, so records
    still come out in increasing offset order (the pipeline skips an offset it
    has passed as a re-delivery). Pieces of a line interrupted by the other
    output stream, or cut off by the end of the file, are handed over as far
    as they go: the parser dead-letters them as cut short.
    """
    pieces: list[bytes] = []
    size = 0
    created: float | None = None
    piece_stream = ""
    last = 0
    for offset, raw in lines:
        found = unwrap(raw)
        if pieces and (found is None or found.stream != piece_stream):
            yield RawRecord(Origin(dataset, stream, last), b"".join(pieces), created)
            pieces, size = [], 0
        if found is None:
            yield RawRecord(Origin(dataset, stream, offset), raw)
            continue
        if not pieces:
            created, piece_stream = found.created, found.stream
        if size <= max_line_bytes:  # past the limit the line is oversized anyway: keep its head only
            pieces.append(found.line)
            size += len(found.line)
        last = offset
        if not found.partial:
            yield RawRecord(Origin(dataset, stream, offset), b"".join(pieces), created)
            pieces, size = [], 0
    if pieces:
        yield RawRecord(Origin(dataset, stream, last), b"".join(pieces), created)


def _time(value: object) -> float | None:
    try:
        return parse_timestamp(value.decode() if isinstance(value, bytes) else value)
    except (InvalidValueError, UnicodeDecodeError):
        return None


def _docker(value: bytes) -> Unwrapped | None:
    if value[:1] != b"{":
        return None
    record = json_value(value)  # as the parsers read a line: a bad character costs itself, not the unwrapping
    if type(record) is not dict or type(log := record.get("log")) is not str:
        return None
    stream = record.get("stream")
    return Unwrapped(
        log.removesuffix("\n").encode(),
        _time(record.get("time")),
        stream if isinstance(stream, str) else "",
        partial=not log.endswith("\n"),
    )


def _cri(value: bytes) -> Unwrapped | None:
    found = _CRI.fullmatch(value)
    if found is None:
        return None
    created = _time(found.group(1))
    if created is None:
        return None
    stream, tag, line = found.group(2, 3, 4)
    return Unwrapped(line or b"", created, stream.decode(), partial=tag == b"P")


def _key(value: bytes, key: str) -> Unwrapped | None:
    # Cheap test first: a shipper's record is a JSON object.
    if value[:1] != b"{":
        return None
    record = json_value(value)
    if type(record) is dict:
        line = record.get(key)
        if type(line) is str:
            return Unwrapped(line.encode())
        if type(line) is dict:  # the shipper already parsed a JSON line into a map
            return Unwrapped(value if is_ecs_log_field_set(key, line) else orjson.dumps(line))
    return None
