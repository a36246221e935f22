"""A fast, seeded generator of hostile log records: real lines, mutated the way attackers and broken shippers do.

Hypothesis shrinks structured cases well but draws a few thousand examples a
second at best; this makes the 100k-per-format bulk in about a second each.
Every mutation keeps the record's origin unique, so counts can be checked.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from typing import Any

import orjson

from ingest.records import Dataset, Origin, RawRecord

HOSTILE_NUMBERS = [
    b"3000000000", b"2147483648", b"9223372036854775808", b"18446744073709551616", b"1" * 400,
    b"-1", b"-9223372036854775809", b"1e300", b"-1e300", b"2e19", b"1e400", b"NaN", b"nan", b"Infinity",
    b"-Infinity", b"inf", b"-0", b"0", b"1e-400", b"0x10", b"1_000", b"\xd9\xa3", b"99999999999.999",
]  # fmt: skip
HOSTILE_TEXT = [
    b"\x1b[31m", b"\x1b]0;pwned\x07", b"\r", b"\n", b"\r\n", b"\x00", b"\x7f", b"\xc2\x85", b"\xe2\x80\xae",
    b"[/x]", b"[bold]", b'"', b"\\", b"%", b"%REQ(:PATH)%", b"-", b" ", b"\t", b"{", b"}", b"[", b",",
]  # fmt: skip
INVALID_UTF8 = [b"\xff", b"\xfe", b"\xc3\x28", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\xe2\x82", b"\x80"]
HOSTILE_DATES = [
    b"9999-12-31T23:59:59.999Z", b"0001-01-01T00:00:00Z", b"1969-12-31T23:59:59Z", b"2100-01-01T00:00:00Z",
    b"2026-02-30T00:00:00Z", b"2026-13-01T00:00:00Z", b"99999-01-01T00:00:00Z", b"2026-03-02T25:61:61Z",
    b"1e300", b"253402300800", b"-62135596800",
]  # fmt: skip
HOSTILE_JSON_VALUES: list[Any] = [
    None, True, False, [], {}, [1, [2, [3]]], {"a": {"b": {"c": None}}}, 2**63, -(2**63), 2**64 - 1, 1e300,
    -1e300, 5e-324, "", " ", "-", "\x00", "\x1b[2J", "\u202e", "9999-12-31T23:59:59Z", "NaN", "1e400", 3000000000,
]  # fmt: skip
_DIGITS = re.compile(rb"\d+")
_DATE = re.compile(rb"\d{4}-\d{2}-\d{2}T[\d:.]+(?:Z|[+-]\d{2}:?\d{2})?")


class Mutator:
    """Turns one good line into a hostile one; seeded, so a failure names a reproducible record."""

    def __init__(self, seed: int, is_json: bool) -> None:
        self.random = random.Random(seed)
        self.is_json = is_json
        self._mutations: list[Callable[[bytes], bytes]] = [
            self._number, self._number, self._text, self._utf8, self._truncate, self._glue, self._date,
            self._flip, self._flip, self._quote, self._blank, self._prefix,
        ]  # fmt: skip
        if is_json:
            self._mutations += [self._json_value] * 6 + [self._json_nesting, self._json_raw_number]

    def mutate(self, line: bytes) -> bytes:
        for _ in range(self.random.choice((1, 1, 2, 3))):
            line = self.random.choice(self._mutations)(line)
        if self.random.random() < 0.002:  # now and then a giant: past max_line_bytes, or just under it
            line = self._giant(line)
        return line

    def _at(self, line: bytes) -> int:
        return self.random.randrange(len(line) + 1)

    def _number(self, line: bytes) -> bytes:
        spans = [m.span() for m in _DIGITS.finditer(line)]
        if not spans:
            return line
        start, end = self.random.choice(spans)
        return line[:start] + self.random.choice(HOSTILE_NUMBERS) + line[end:]

    def _text(self, line: bytes) -> bytes:
        at = self._at(line)
        return line[:at] + self.random.choice(HOSTILE_TEXT) * self.random.choice((1, 1, 3)) + line[at:]

    def _utf8(self, line: bytes) -> bytes:
        at = self._at(line)
        return line[:at] + self.random.choice(INVALID_UTF8) + line[at:]

    def _truncate(self, line: bytes) -> bytes:
        return line[: self._at(line)]

    def _glue(self, line: bytes) -> bytes:
        at = self._at(line)
        return line[:at] + line

    def _date(self, line: bytes) -> bytes:
        found = _DATE.search(line)
        if found is None:
            return self._number(line)
        return line[: found.start()] + self.random.choice(HOSTILE_DATES) + line[found.end():]

    def _flip(self, line: bytes) -> bytes:
        if not line:
            return line
        at = self.random.randrange(len(line))
        return line[:at] + bytes([self.random.randrange(256)]) + line[at + 1:]

    def _quote(self, line: bytes) -> bytes:
        at = self._at(line)
        return line[:at] + b'"' + line[at:]

    def _blank(self, line: bytes) -> bytes:
        return self.random.choice((b"", b"\n", b"   \n", b"\r\n", b"-", b"{}", b"[]", b"null", b"ACCESS "))

    def _prefix(self, line: bytes) -> bytes:
        return line[7:] if line.startswith(b"ACCESS ") else b"ACCESS " + line

    def _giant(self, line: bytes) -> bytes:
        size = self.random.choice((60_000, 70_000, 300_000))
        at = self._at(line)
        return line[:at] + b"A" * size + line[at:]

    def _json_value(self, line: bytes) -> bytes:
        try:
            obj = orjson.loads(line)
        except orjson.JSONDecodeError:
            return self._number(line)
        if not isinstance(obj, dict):
            return line
        holder, key = self._leaf(obj)
        if holder is None:
            return line
        holder[key] = self.random.choice(HOSTILE_JSON_VALUES)
        try:
            return orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:
            return line

    def _leaf(self, obj: dict[str, Any]) -> tuple[dict[str, Any] | None, str]:
        holder: dict[str, Any] = obj
        for _ in range(4):
            if not holder:
                return None, ""
            key = self.random.choice(list(holder))
            if isinstance(holder[key], dict) and holder[key] and self.random.random() < 0.7:
                holder = holder[key]
                continue
            return holder, key
        return holder, self.random.choice(list(holder)) if holder else ""

    def _json_nesting(self, line: bytes) -> bytes:
        depth = self.random.choice((100, 1_100, 5_000))
        value = b"[" * depth + b"]" * depth if self.random.random() < 0.5 else b'{"a":' * depth + b"1" + b"}" * depth
        end = line.rstrip().rfind(b"}")
        return line[:end] + b',"deep":' + value + line[end:] if end > 0 else value

    def _json_raw_number(self, line: bytes) -> bytes:
        # Numbers orjson refuses or reads as floats: NaN, Infinity, 1e400, ints past 64 bits.
        spans = [m.span() for m in re.finditer(rb'(?<=:)\d+(?=[,}])', line)]
        if not spans:
            return self._number(line)
        start, end = self.random.choice(spans)
        return line[:start] + self.random.choice(HOSTILE_NUMBERS) + line[end:]


def hostile_records(
    lines: list[bytes], dataset: Dataset, count: int, seed: int, is_json: bool, stream: str
) -> Iterator[RawRecord]:
    """``count`` records: each a line of ``lines`` (cycled) mutated, with a unique origin; 1 in 10 left intact."""
    mutator = Mutator(seed, is_json)
    for offset in range(count):
        line = lines[offset % len(lines)]
        if offset % 10:
            line = mutator.mutate(line)
        yield RawRecord(Origin(dataset, stream, offset + 1), line)
