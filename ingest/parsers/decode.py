"""What every parser shares: the parser type and turning a raw line into text."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import orjson

from ingest.records import DeadLetter, Event, RawRecord

Parser = Callable[[RawRecord], Event | DeadLetter]
"""A compiled parser: one raw line in, one event or one dead letter out; never raises."""

DEFAULT_MAX_LINE_BYTES = 65_536
"""Longest record a parser reads, line ending included.

Envoy lines carrying a JWT payload or long URLs run to a few KiB; anything far
beyond that is corruption (two lines glued together) or abuse.
"""


def decode_line(record: RawRecord, max_line_bytes: int) -> str | DeadLetter:
    """The text of ``record`` without its line ending, or the reason it has none.

    - longer than ``max_line_bytes`` (counted on the raw bytes, line ending
      included, so the check costs nothing): ``oversized``;
    - not UTF-8: ``invalid_utf8``;
    - empty once trailing whitespace (``\\r``, ``\\n``, spaces) is stripped:
      ``format_mismatch`` -- a blank line matches no format; it is not cut
      short (``truncated``), there is nothing to cut.

    The dead letter keeps the record's bytes unchanged.
    """
    line = record.line
    if len(line) > max_line_bytes:
        return _oversized(record, max_line_bytes)
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError as error:
        return DeadLetter(record.origin, "invalid_utf8", f"byte {error.start}: {error.reason}", line)
    # Editors, shippers and Windows hosts leave spaces and "\r" behind; no format ends in them.
    text = text.rstrip()
    if not text:
        return DeadLetter(record.origin, "format_mismatch", "empty line", line)
    return text


def decode_json_object(record: RawRecord, max_line_bytes: int) -> dict[str, Any] | DeadLetter:
    """The JSON object on the line ``record``, or why there is none.

    orjson reads the raw bytes (and checks UTF-8 itself), so a good line is
    never decoded twice; only a failure is run through :func:`decode_line` to
    name the reason: ``oversized``, ``invalid_utf8``, ``truncated`` (an object
    still open where the data ends), ``invalid_json`` or ``not_an_object``.
    """
    line = record.line
    if len(line) > max_line_bytes:
        return _oversized(record, max_line_bytes)
    try:
        value = orjson.loads(line)
    except orjson.JSONDecodeError as error:
        value = lenient_json_value(line, error)
        if value is None:
            value = _after_access_prefix(line)
        if value is None:
            return _not_json(record, max_line_bytes, error)
    if type(value) is not dict:
        return DeadLetter(record.origin, "not_an_object", f"JSON {type(value).__name__}, not an object", line)
    return value


def _oversized(record: RawRecord, max_line_bytes: int) -> DeadLetter:
    size = len(record.line)
    # A file's reader keeps one byte past the limit, not the whole line: its size is not known then.
    said = f"{size} bytes, over" if size > max_line_bytes + 1 else "over"
    return DeadLetter(record.origin, "oversized", f"{said} max_line_bytes {max_line_bytes}", record.line)


NOT_JSON = object()
"""What :func:`json_value` returns for a line that is not JSON (``None`` is JSON's ``null``)."""


def json_value(line: bytes) -> Any:
    """``line``'s JSON value, also when only a value orjson refuses and the parsers read is in it
    (:func:`lenient_json_value`); else :data:`NOT_JSON`. For a shipper's record around a line."""
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError as error:
        value = lenient_json_value(line, error)
        return NOT_JSON if value is None else value


def lenient_json_value(line: bytes, error: orjson.JSONDecodeError) -> Any:
    """The line's value when orjson refused it only for a value RFC 8259's grammar allows.

    - A number past a double's range (``1e400``): RFC 8259 sets no range, and the number is
      one value of a record that is otherwise real. Read as infinity, normalize drops it and
      flags it as it does ``1e300`` (or refuses the record when the number is its time or status).
    - An escaped lone UTF-16 surrogate (``"\\ud800"``): Python's ``json.dumps`` and JavaScript's
      ``JSON.stringify`` write one for a string cut inside a surrogate pair (an emoji), and a
      client can put one in any field Billing logs, which would hide the whole record from the
      rules. It is read as U+FFFD, as a byte that is not UTF-8 would be shown.

    - Bytes that are not UTF-8 inside a string (a client's header as a gateway or app logged it):
      each is read as U+FFFD, for the same reason.

    The standard library's reader takes them; it is used only then, refusing ``NaN`` and
    ``Infinity`` as orjson does. ``None``: the line is not JSON after all.
    """
    message = str(error)
    surrogates = message.startswith(_SURROGATE_ERRORS)
    not_utf8 = message.startswith("str is not valid UTF-8")
    if not (surrogates or not_utf8 or message.startswith("number is infinity")):
        return None
    try:
        value = json.loads(line.decode(errors="replace" if not_utf8 else "strict"), parse_constant=_refuse_constant)
        if surrogates:
            value = _without_lone_surrogates(value)
        json.dumps(value, ensure_ascii=False).encode()
    except (ValueError, RecursionError):  # UnicodeDecodeError and UnicodeEncodeError are ValueErrors
        return None
    return value


_SURROGATE_ERRORS = ("no low surrogate", "invalid high surrogate", "invalid low surrogate")


def _without_lone_surrogates(value: Any) -> Any:
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "replace")
    if isinstance(value, dict):
        return {_without_lone_surrogates(key): _without_lone_surrogates(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_without_lone_surrogates(item) for item in value]
    return value


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _after_access_prefix(line: bytes) -> Any:
    # Ambassador prefixes its text lines with "ACCESS "; tolerate it before JSON too.
    if not line.startswith(b"ACCESS {"):
        return None
    try:
        return orjson.loads(line[len(b"ACCESS "):])
    except orjson.JSONDecodeError:
        return None


def _not_json(record: RawRecord, max_line_bytes: int, error: orjson.JSONDecodeError) -> DeadLetter:
    text = decode_line(record, max_line_bytes)
    if isinstance(text, DeadLetter):
        return text
    # An object that was still open when the data ran out was cut short.
    if text.lstrip().startswith("{") and error.pos >= len(text.rstrip()):
        return DeadLetter(record.origin, "truncated", f"JSON object cut short: {error}", record.line)
    return DeadLetter(record.origin, "invalid_json", str(error), record.line)
