"""A dead letter's headers found by their place in the format, where no name stands beside them."""

from __future__ import annotations

import orjson
import pytest

from ingest.parsers import build_gateway_parser, gateway_labelled_values
from ingest.records import Dataset, DeadLetter, Origin, RawRecord
from ingest.redact import Redactor

TEXT_FORMAT = '[%START_TIME%] "%REQ(:PATH)%" %RESPONSE_CODE% "%REQ(AUTHORIZATION)%" "%REQ(COOKIE)%" "%REQ(X-TENANT)%"'
JSON_FORMAT = {"ts": "%START_TIME%", "status": "%RESPONSE_CODE%", "auth": "%REQ(AUTHORIZATION)%",
               "c": {"jar": "%REQ(COOKIE)%"}, "tenant": "%REQ(X-TENANT)%"}  # fmt: skip
TOKEN, COOKIE = 'opaque-"tok"-9f8e7d', "session=SeCrEt; theme=dark"


def _letter(parse_format: dict[str, object], line: bytes) -> DeadLetter:
    parser = build_gateway_parser(**parse_format)  # type: ignore[arg-type]
    result = parser(RawRecord(Origin(Dataset.GATEWAY, "gw", 1), line))
    assert isinstance(result, DeadLetter)
    return result


TEXT_LINE = f'[2026-12-07T10:00:00Z] "/v1/caf\xe9" 200 "Bearer {TOKEN}" "{COOKIE}" "acme"'
JSON_LINE = orjson.dumps({"ts": "2026-12-07T10:00:00Z", "status": 999, "auth": f"Bearer {TOKEN}",
                          "c": {"jar": COOKIE}, "tenant": "acme"})  # fmt: skip


@pytest.mark.parametrize(
    ("parse_format", "line", "reason"),
    [
        ({"format": TEXT_FORMAT}, TEXT_LINE.replace(" 200 ", " 999 ").encode(), "out_of_range"),
        ({"format": TEXT_FORMAT.replace("%REQ(", "%REQUEST_HEADER(")}, TEXT_LINE.replace(" 200 ", " 999 ").encode(),
         "out_of_range"),  # Envoy 1.37's full name: the same header, the same redaction
        ({"json_format": JSON_FORMAT}, JSON_LINE, "out_of_range"),
        ({"json_format": JSON_FORMAT}, JSON_LINE.replace(b'"status":999', b'"status":1e400'), "invalid_value"),
    ],
)
def test_a_headers_value_is_redacted_by_its_operators_name(parse_format: dict, line: bytes, reason: str) -> None:
    letter = _letter(parse_format, line)
    assert letter.reason == reason
    redacted = Redactor(hash_key=b"k").redact_dead_letter(letter, gateway_labelled_values(**parse_format))
    assert b"9f8e7d" not in redacted.line and b"SeCrEt" not in redacted.line
    assert redacted.line.count(b"[REDACTED:") == 2
    assert b"Bearer [REDACTED:authorization" in redacted.line and b"acme" in redacted.line  # the rest kept
    assert Redactor(hash_key=b"k").redact(letter).line == letter.line  # without the format: no name, no redaction


def test_a_header_holding_the_separator_of_quoted_values_keeps_no_secret_in_clear() -> None:
    """`" "` in a header: the line reads with one header holding it (the first, here: which one the line
    cannot tell), so the values at the labels' places may shift by one. Nothing is left in clear."""
    line = TEXT_LINE.replace('"acme"', '"acme" "x"').replace(" 200 ", " 999 ").encode()
    letter = _letter({"format": TEXT_FORMAT}, line)
    redacted = Redactor(hash_key=b"k").redact_dead_letter(letter, gateway_labelled_values(TEXT_FORMAT))
    assert b"9f8e7d" not in redacted.line and b"SeCrEt" not in redacted.line


def test_a_line_that_fits_no_format_has_no_labelled_values() -> None:
    assert gateway_labelled_values(TEXT_FORMAT)("not an access log line") == []
    assert gateway_labelled_values(None, JSON_FORMAT)('{"broken": ') == []
