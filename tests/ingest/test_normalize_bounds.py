"""Every field's range (the table in ingest.normalize): what costs a record, what is only dropped."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from ingest.normalize import OUT_OF_RANGE_LABEL, normalize
from ingest.parsers.app_json import DEFAULT_APP_FIELDS, compile_app_parser
from ingest.records import Dataset, DeadLetter, Event, Origin, RawRecord

GOOD_TS = "2026-03-02T09:00:00Z"


def _normalize(dataset: Dataset = Dataset.APP, **fields: Any) -> Event | DeadLetter:
    return normalize({"ts": GOOD_TS, **fields}, Origin(dataset, "s", 0), b"raw")


@pytest.mark.parametrize(
    "ts",
    [1e300, -1e300, 2e19, "9999-12-31T23:59:59Z", "1999-12-31T23:59:59Z", "2100-01-01T00:00:00Z", 0, -5],
)
def test_a_time_outside_2000_to_2100_costs_the_record(ts: object) -> None:
    result = normalize({"ts": ts}, Origin(Dataset.APP, "s", 0), b"raw")
    assert isinstance(result, DeadLetter) and result.reason == "out_of_range", result


def test_times_at_the_edges_of_the_window_are_events() -> None:
    for ts in ("2000-01-01T00:00:00Z", "2099-12-31T23:59:59.999Z"):
        assert isinstance(normalize({"ts": ts}, Origin(Dataset.APP, "s", 0), b""), Event)


@pytest.mark.parametrize("status", [3_000_000_000, 2**63, 10**30, 99, 600, -200, "3000000000", 1e300])
def test_an_impossible_status_costs_the_record(status: object) -> None:
    result = _normalize(status=status)
    assert isinstance(result, DeadLetter) and result.reason == "out_of_range", result


@pytest.mark.parametrize("status", [100, 200, 599, "404"])
def test_real_statuses_are_kept(status: object) -> None:
    event = _normalize(status=status)
    assert isinstance(event, Event) and event.status == int(status) and event.labels == ()


def test_status_zero_is_no_response_at_the_gateway() -> None:
    event = _normalize(Dataset.GATEWAY, status="0")
    assert isinstance(event, Event) and event.status is None


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("bytes_sent", 2**63),
        ("bytes_sent", -1),
        ("bytes_received", 1e300),
        ("bytes_received", "1e400"),
        ("duration_ms", float("nan")),
        ("duration_ms", float("inf")),
        ("duration_ms", 2e19),
        ("duration_ms", 1.000001e12),
        ("duration_ms", -3),
        ("upstream_service_time_ms", "nan"),
        ("upstream_service_time_ms", 10**400),
        ("token_exp", 1e300),
        ("token_exp", -1e300),
        ("token_iat", 1e300),
        ("token_exp", "9999-01-01T00:00:00Z"),
        ("token_iat", 10**400),
    ],
)
def test_an_absurd_detail_is_dropped_and_flagged_and_the_request_kept(field: str, value: object) -> None:
    event = _normalize(request_id="r-1", status=200, **{field: value})
    assert isinstance(event, Event), event
    assert getattr(event, field) is None
    assert (OUT_OF_RANGE_LABEL, field) in event.labels
    assert event.request_id == "r-1" and event.status == 200


def test_several_dropped_fields_are_named_in_one_label() -> None:
    event = _normalize(token_exp=1e300, bytes_sent=-1)
    assert isinstance(event, Event)
    assert dict(event.labels)[OUT_OF_RANGE_LABEL] == "bytes_sent,token_exp"


def test_real_details_are_kept_unflagged() -> None:
    event = _normalize(bytes_sent=2**63 - 1, duration_ms=0.5, token_exp=1_772_441_000, token_iat=0)
    assert isinstance(event, Event) and event.labels == ()
    assert (event.bytes_sent, event.duration_ms, event.token_exp, event.token_iat) == (2**63 - 1, 0.5, 1_772_441_000, 0)


def test_an_app_line_from_the_issue_parses_to_one_event_or_one_dead_letter() -> None:
    parse = compile_app_parser(DEFAULT_APP_FIELDS)
    lines = [
        {"ts": GOOD_TS, "request_id": "r1", "status": 3000000000},
        {"ts": GOOD_TS, "request_id": "r2", "status": 200, "token": {"jti": "j", "exp": 1e300, "iat": 1e300}},
        {"ts": 1e300, "request_id": "r3"},
        {"ts": GOOD_TS, "request_id": "r4", "latency_ms": 2e19},
    ]
    results = [parse(RawRecord(Origin(Dataset.APP, "a", i), orjson.dumps(line))) for i, line in enumerate(lines)]
    assert [r.reason if isinstance(r, DeadLetter) else "event" for r in results] == [
        "out_of_range", "event", "out_of_range", "event",
    ]


@pytest.mark.parametrize("field", ["ts", "status"])
def test_a_dead_letters_detail_quotes_a_long_value_cut(field: str) -> None:
    # A 900 KB timestamp of card-like digits was quoted whole: stored twice and redacted twice, 2.2 s a line.
    value = "4111 " * 200_000
    result = normalize({"ts": GOOD_TS, field: value}, Origin(Dataset.APP, "s", 0), b"raw")
    assert isinstance(result, DeadLetter) and result.reason == "invalid_value"
    assert len(result.detail) < 300 and "(1000002 characters)" in result.detail, result.detail
