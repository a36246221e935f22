"""decode_line / decode_json_object: the checks every parser runs before its format."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.parsers import decode_json_object, decode_line
from ingest.records import Dataset, DeadLetter, Origin, RawRecord

ORIGIN = Origin(Dataset.GATEWAY, "/var/log/envoy/access.log", 7)


def record(line: bytes) -> RawRecord:
    return RawRecord(ORIGIN, line)


@pytest.mark.parametrize(
    ("line", "text"),
    [
        (b"abc", "abc"),
        (b"abc\n", "abc"),
        (b"abc\r\n", "abc"),
        (b"abc\r", "abc"),
        (b"ACCESS [x] \"y\"\n", 'ACCESS [x] "y"'),
        ("user agent \u00e9\u4e2d\n".encode(), "user agent \u00e9\u4e2d"),
        (b"  leading spaces kept, trailing ones not  \n", "  leading spaces kept, trailing ones not"),
        (b"abc \t\r\n", "abc"),
    ],
)
def test_decode_line_strips_the_line_ending_and_trailing_whitespace(line: bytes, text: str) -> None:
    assert decode_line(record(line), 1024) == text


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b"\xff\xfe[2016-04-15T20:17:00.310Z]", "invalid_utf8"),
        (b"caf\xc3", "invalid_utf8"),  # a UTF-8 sequence cut in half
        (b"\xed\xa0\x80", "invalid_utf8"),  # an encoded surrogate
        (b"", "format_mismatch"),
        (b"\n", "format_mismatch"),
        (b"\r\n", "format_mismatch"),
        (b"x" * 1025, "oversized"),
    ],
)
def test_decode_line_dead_letters(line: bytes, reason: str) -> None:
    letter = decode_line(record(line), 1024)
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.origin, letter.line) == (reason, ORIGIN, line)


def test_max_line_bytes_counts_the_raw_record_line_ending_included() -> None:
    assert decode_line(record(b"x" * 9 + b"\n"), 10) == "x" * 9
    letter = decode_line(record(b"x" * 10 + b"\n"), 10)
    assert isinstance(letter, DeadLetter) and letter.reason == "oversized"
    assert letter.detail == "over max_line_bytes 10"  # a file's reader keeps one byte past the limit, no more


def test_oversized_is_checked_before_decoding() -> None:
    letter = decode_line(record(b"\xff" * 2000), 1024)
    assert isinstance(letter, DeadLetter) and letter.reason == "oversized"


def test_decode_json_object_reads_an_object() -> None:
    assert decode_json_object(record(b'{"a": {"b": 1}, "c": "-"}\n'), 1024) == {"a": {"b": 1}, "c": "-"}


def test_decode_json_object_tolerates_ambassadors_access_prefix() -> None:
    assert decode_json_object(record(b'ACCESS {"a": 1}'), 1024) == {"a": 1}


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"protocol": "HTTP/1.1", "duration": "12', "truncated"),
        (b'{"protocol": "HTTP/1.1", ', "truncated"),
        (b"[1, 2, 3]", "not_an_object"),
        (b'"a string"', "not_an_object"),
        (b"42", "not_an_object"),
        (b"null", "not_an_object"),
        (b"not json at all", "invalid_json"),
        (b'{"a": 1} trailing', "invalid_json"),
        (b"{'single': 'quotes'}", "invalid_json"),
        (b'{"a": "\xff"\xff}', "invalid_utf8"),
        (b"", "format_mismatch"),
        (b'{"pad": "' + b"x" * 2000 + b'"}', "oversized"),
        # Past a double's range is read as infinity (below), but not with these beside it:
        (b'{"a": 1e400, "b": NaN}', "invalid_json"),
        (b'{"a": 1e400, "b": ', "invalid_json"),
    ],
)
def test_decode_json_object_dead_letters(line: bytes, reason: str) -> None:
    letter = decode_json_object(record(line), 1024)
    assert isinstance(letter, DeadLetter)
    assert (letter.reason, letter.line) == (reason, line)


def test_a_number_past_a_doubles_range_costs_only_its_value() -> None:
    # orjson refuses 1e400; RFC 8259 sets no range. Read as infinity, normalize drops it and flags it.
    line = b'{"a": 1e400, "b": -1e400, "c": "1e400", "d": {"e": 2.5, "f": 100000000000000000000000}}'
    assert decode_json_object(record(line), 1024) == {
        "a": float("inf"), "b": float("-inf"), "c": "1e400", "d": {"e": 2.5, "f": 10**23},
    }  # fmt: skip


@pytest.mark.parametrize(
    ("escaped", "read"),
    [("x\\ud800y", "x\ufffdy"), ("\\udc00", "\ufffd"), ("\\ud800\\u0041", "\ufffdA"), ("\\ud83d\\ude00", "\U0001f600")],
)
def test_a_lone_surrogate_escape_costs_only_its_character(escaped: str, read: str) -> None:
    # JSON.stringify and Python's json.dumps write one for a string cut inside an emoji, and a client can send one
    # in any field Billing logs: as a dead letter, the record was out of every rule's sight.
    line = b'{"msg": "' + escaped.encode() + b'", "a": 1e400, "request_id": "r-1"}'
    assert decode_json_object(record(line), 1024) == {"msg": read, "a": float("inf"), "request_id": "r-1"}


def test_bytes_that_are_not_utf8_inside_a_string_cost_only_their_characters() -> None:
    # A client's header bytes past ASCII, logged as sent: as an invalid_utf8 dead letter the record hid from the rules.
    line = b'{"user_agent": "curl \xff\xc3", "\xfe": 1, "request_id": "r-1"}'
    assert decode_json_object(record(line), 1024) == {"user_agent": "curl \ufffd\ufffd", "\ufffd": 1, "request_id": "r-1"}
    letter = decode_json_object(record(b'{"a": \xff}'), 1024)  # not JSON once read either
    assert isinstance(letter, DeadLetter) and letter.reason == "invalid_utf8"


def test_access_prefix_before_broken_json_keeps_the_original_line() -> None:
    letter = decode_json_object(record(b"ACCESS {broken"), 1024)
    assert isinstance(letter, DeadLetter)
    assert letter.reason == "invalid_json"
    assert letter.line == b"ACCESS {broken"


def test_many_access_prefixes_do_not_recurse() -> None:
    line = b"ACCESS " * 5000 + b"{}"
    letter = decode_json_object(record(line), len(line))
    assert isinstance(letter, DeadLetter) and letter.reason == "invalid_json"


@settings(database=None, max_examples=300)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_raise(line: bytes) -> None:
    text = decode_line(record(line), 200)
    assert isinstance(text, (str, DeadLetter))
    if isinstance(text, str):
        assert text and not text.endswith(("\n", "\r"))
    obj = decode_json_object(record(line), 200)
    assert isinstance(obj, (dict, DeadLetter))


def test_an_oversized_record_read_whole_says_its_size() -> None:
    """A flood trial: a 200 KB line was "65537 bytes > max_line_bytes 65536" (a file's reader keeps limit + 1)."""
    letter = decode_line(record(b"x" * 5000), 1024)
    assert isinstance(letter, DeadLetter) and letter.detail == "5000 bytes, over max_line_bytes 1024"
