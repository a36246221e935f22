"""parse_timestamp: ISO 8601 text (any offset or none), epoch numbers in their size's unit, and what it refuses."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ingest.normalize import InvalidValueError, parse_timestamp

moments = st.datetimes(min_value=datetime(1971, 1, 1), max_value=datetime(2200, 1, 1))


@given(moments, st.integers(min_value=0, max_value=6))
def test_utc_text_equals_datetime_timestamp(moment: datetime, digits: int) -> None:
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if digits:
        text += "." + f"{moment.microsecond:06d}"[:digits]
    expected = datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()
    assert parse_timestamp(text + "Z") == expected


@given(moments, st.integers(min_value=-14, max_value=14))
def test_offsets_and_naive_text_still_parse(moment: datetime, hours: int) -> None:
    aware = moment.replace(tzinfo=timezone(timedelta(hours=hours)))
    assert parse_timestamp(aware.isoformat()) == aware.timestamp()
    assert parse_timestamp(moment.isoformat()) == moment.replace(tzinfo=timezone.utc).timestamp()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-03-02T09:00:00Z", 1772442000.0),
        ("2026-03-02T09:00:00.5Z", 1772442000.5),
        ("2026-03-02T09:00:00.123456Z", 1772442000.123456),
        ("2026-03-02T09:00:00.1234567Z", 1772442000.123456),  # more than microseconds: datetime's rounding
        ("2026-03-02 09:00:00.250+00:00", 1772442000.25),
        ("1772442000", 1772442000.0),
        ("1772442000.25", 1772442000.25),
        (1772442000250, 1772442000.25),  # epoch milliseconds
        (1772442000250000, 1772442000.25),  # microseconds
        ("1772442000250000", 1772442000.25),
        (1772442000250000000, 1772442000.25),  # nanoseconds (Go's UnixNano)
        ("1772442000250000000", 1772442000.25),
    ],
)
def test_forms(value: object, expected: float) -> None:
    assert parse_timestamp(value) == pytest.approx(expected, abs=1e-6)


@pytest.mark.parametrize(
    "value",
    ["2026-13-02T09:00:00Z", "2026-03-02T25:00:00.1Z", "yesterday", "", None, float("nan"), "\u00b2", "1.\u00b2"],
)
def test_invalid(value: object) -> None:
    with pytest.raises(InvalidValueError):
        parse_timestamp(value)
