"""An HTTP ingest request's body: gunzipped (:func:`gunzip`) and split into records (:func:`decode_body`).

Pure functions of the bytes, run off the event loop; :mod:`gatewatch.http_ingest` answers the
request and makes the records durable.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from ingest.parsers.decode import DEFAULT_MAX_LINE_BYTES, NOT_JSON, json_value
from ingest.sources.unwrap import is_ecs_log_field_set

_READ_CHUNK_BYTES = 64 * 1024
_GZIP_MAGIC = b"\x1f\x8b"
MAX_GZIP_MEMBERS = 1000
"""More members than this in one body is refused (400): each one costs a pass, and ``cat a.gz b.gz`` needs few."""


@dataclass(slots=True)
class DecodedBatch:
    """A body split into records: the message value and key of each, and the numbers of those that did not decode."""

    values: list[bytes] = field(default_factory=list)
    keys: list[bytes | None] = field(default_factory=list)
    invalid_lines: list[int] = field(default_factory=list)
    max_records: int | None = None  # more raise TooManyRecordsError, before the rest is decoded
    max_record_bytes: int = DEFAULT_MAX_LINE_BYTES + 1  # a longer record is cut to this


def decode_body(
    body: bytes,
    unwrap: str | None,
    key_path: tuple[str, ...] | None,
    max_records: int | None = None,
    max_line_bytes: int = DEFAULT_MAX_LINE_BYTES,
) -> DecodedBatch:
    """Split ``body`` (a JSON array, else one JSON value a line) into message values and keys.

    A record that does not decode is kept as its raw bytes (downstream it becomes
    a dead letter with its origin) and its number is listed in ``invalid_lines``.
    An element of an array that does not decode is that element's record (see :func:`_add_elements`).
    More than ``max_records`` records raise :class:`TooManyRecordsError` as soon as there are: a
    10 MiB body of 2-byte lines is five million, and several at once held gigabytes.
    A record longer than ``max_line_bytes`` (the source's) is cut one byte past it, as replay's
    reader cuts a line: the parser makes it the same ``oversized`` dead letter, and a record up
    to it is taken whole.
    """
    batch = DecodedBatch(max_records=max_records, max_record_bytes=max_line_bytes + 1)
    start = body.lstrip()[:1]
    if start == b"[":
        try:
            items = orjson.loads(body)
        except orjson.JSONDecodeError:
            _add_elements(batch, body, unwrap, key_path)
            return batch
        if isinstance(items, list):
            for n, item in enumerate(items, start=1):
                _add_record(batch, item, orjson.dumps(item), n, unwrap, key_path)
            return batch
    for n, line in enumerate(_lines(body), start=1):
        if not line.strip():
            continue
        item = json_value(line)
        if item is NOT_JSON:
            _add(batch, line.rstrip(b"\r"), None, n, valid=False)
            continue
        _add_record(batch, item, line, n, unwrap, key_path)
    return batch


def _lines(body: bytes) -> Iterator[bytes]:
    """``body.split(b"\\n")``, a line at a time: a refused body stops before its millions of lines are made."""
    start = 0
    while (end := body.find(b"\n", start)) >= 0:
        yield body[start:end]
        start = end + 1
    yield body[start:]


def _add_elements(batch: DecodedBatch, body: bytes, unwrap: str | None, key_path: tuple[str, ...] | None) -> None:
    """An array orjson refused, element by element: an element it refuses is that element's invalid record,
    not the whole batch's (a red-team trial lost 2,999 records to one lone surrogate escape).

    The standard library's reader finds each element's end; where it cannot read one (``{nope: 1}``),
    the end is the next comma or bracket outside strings and brackets. Only an array cut off, whose
    last element has no end, makes the rest of the body one invalid record.
    """
    text = body.decode("utf-8", "surrogateescape")  # bytes that are not UTF-8 stay, and fail their element
    decoder = json.JSONDecoder()
    at = _skip_space(text, text.index("[") + 1)
    n = 0
    closed = text.startswith("]", at)
    while not closed:
        n += 1
        try:
            _, end = decoder.raw_decode(text, at)
        except (ValueError, RecursionError):
            found = _element_end(text, at)
            if found is None:
                break
            end = found
        raw = text[at:end].rstrip().encode("utf-8", "surrogateescape")
        item = json_value(raw)
        if item is NOT_JSON:
            _add(batch, raw, None, n, valid=False)
        else:
            _add_record(batch, item, raw, n, unwrap, key_path)
        at = _skip_space(text, end)
        if not text.startswith(",", at):
            closed = text.startswith("]", at)
            break
        at = _skip_space(text, at + 1)
    rest = text[at + 1 if closed else at :].strip()
    if rest:
        _add(batch, rest.encode("utf-8", "surrogateescape"), None, n + 1 if closed else max(n, 1), valid=False)


def _element_end(text: str, at: int) -> int | None:
    """Where the array element at ``at`` ends (the ``,`` or ``]`` after it), reading it as JSON's
    brackets and strings only; None if the text ends first."""
    depth, in_string, escaped = 0, False, False
    for i in range(at, len(text)):
        c = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                in_string = False
        elif c == '"':
            in_string = True
        elif c in "[{":
            depth += 1
        elif c in "]}":
            if depth == 0:
                return i if c == "]" else None
            depth -= 1
        elif c == "," and depth == 0:
            return i
    return None


def _skip_space(text: str, at: int) -> int:
    while at < len(text) and text[at] in " \t\r\n":
        at += 1
    return at


def _add_record(
    batch: DecodedBatch, item: Any, raw: bytes, n: int, unwrap: str | None, key_path: tuple[str, ...] | None
) -> None:
    if isinstance(item, str):
        _add_lines(batch, item, n, key_path)
        return
    if not isinstance(item, dict):
        _add(batch, raw, None, n, valid=False)
        return
    inner = item.get(unwrap) if unwrap is not None else None
    if isinstance(inner, str):
        _add_lines(batch, inner, n, key_path)
    elif isinstance(inner, dict) and not is_ecs_log_field_set(unwrap or "", inner):
        _add(batch, orjson.dumps(inner), record_key(inner, key_path), n, valid=True)
    else:  # the record as sent: a value only the parsers' lenient reader takes (1e400) is theirs to flag
        _add(batch, raw.strip(), record_key(item, key_path), n, valid=True)


def _add_lines(batch: DecodedBatch, text: str, n: int, key_path: tuple[str, ...] | None) -> None:
    """A log line given as a string: each line of it a record (a runtime's trailing newline dropped).

    A line holds no newline; a string with one is two lines a shipper put in one record, and read as one
    they would mix two requests' fields (a red-team trial), the first one lost without a dead letter.
    """
    if "\n" not in text:
        _add(batch, text.encode(), _line_key(text, key_path), n, valid=True)
        return
    for line in text.removesuffix("\n").split("\n"):
        line = line.removesuffix("\r")
        _add(batch, line.encode(), _line_key(line, key_path), n, valid=True)


def _line_key(line: str, key_path: tuple[str, ...] | None) -> bytes | None:
    # A line given as a string (bare, or under unwrap) may itself be a JSON record (an app line the
    # shipper did not parse): its request id is cheap to read. Only a line that opens an object is
    # decoded, and only for a source whose records carry a request id, so text lines cost nothing.
    if key_path is None or line[:1] != "{":
        return None
    try:
        return record_key(orjson.loads(line), key_path)
    except orjson.JSONDecodeError:
        return None


def record_key(record: Any, path: tuple[str, ...] | None) -> bytes | None:
    """The request id at ``path`` of a decoded JSON record, as a Kafka key (None: not there)."""
    if path is None or not isinstance(record, dict):
        return None
    value: Any = record
    for part in path:
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value.encode() if isinstance(value, str) and value and value != "-" else None


def _add(batch: DecodedBatch, value: bytes, key: bytes | None, n: int, valid: bool) -> None:
    if batch.max_records is not None and len(batch.values) >= batch.max_records:
        raise TooManyRecordsError(batch.max_records)
    batch.values.append(value[: batch.max_record_bytes])
    batch.keys.append(key)
    if not valid:
        batch.invalid_lines.append(n)


class TooLargeError(Exception):
    pass


class TrailingBytesError(Exception):
    """Bytes after the last gzip member that are not one (``args[0]``: how many)."""


class TooManyMembersError(Exception):
    pass


class TooManyRecordsError(Exception):
    """More records than a decode was allowed (``args[0]``)."""


def gunzip(body: bytes, limit: int) -> bytes:
    # RFC 1952: a gzip file is one or more members (``cat a.gz b.gz``); each is inflated in turn
    # and ``limit`` caps their total. Bytes after a member that do not start another are refused
    # (as Python's gzip.decompress does), never dropped unseen: they may be a shipper's records.
    # The body is fed in pieces, so what zlib copies past a member's end is one piece at most: fed
    # whole, a body of many empty members cost a copy of the rest for each (minutes for 2 MiB).
    out = bytearray()
    view = memoryview(body)
    at = 0
    for _ in range(MAX_GZIP_MEMBERS):
        decompressor = zlib.decompressobj(16 + zlib.MAX_WBITS)
        pending: bytes | memoryview = b""
        while not decompressor.eof:
            if not pending:
                pending = view[at : at + _READ_CHUNK_BYTES]
                at += len(pending)
                if not pending:
                    raise zlib.error("truncated gzip stream")
            # In steps, so a small body that inflates to gigabytes stops at the limit.
            out += decompressor.decompress(pending, _READ_CHUNK_BYTES)
            pending = decompressor.unconsumed_tail
            if len(out) > limit:
                raise TooLargeError
        at -= len(decompressor.unused_data)  # read past the member's end: the next one starts there
        if at >= len(body):
            return bytes(out)
        if view[at : at + 2] != _GZIP_MAGIC:
            raise TrailingBytesError(len(body) - at)
    raise TooManyMembersError
