"""The wire format of events: lossless round trips, and nothing but WireError from any bytes."""

from __future__ import annotations

import hashlib
import os
import pickle
from pathlib import Path

import msgspec
import pytest
from msgspec.structs import fields
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewatch.errors import WireError
from ingest.codec import (
    MAX_TS_SECS, EventRow, EventTable, decode, encode, encode_rows, event_rows, events_from_rows, pack_events,
    split_unencodable, unpack_events,
)  # fmt: skip
from ingest.records import Dataset, Event, Origin, record_id

_text = st.text(max_size=40)
_opt_text = st.none() | _text
_opt_int = st.none() | st.integers(min_value=-(2**63), max_value=2**64 - 1)
_opt_float = st.none() | st.floats(allow_nan=False)  # inf included: only the event time is bounded


@st.composite
def events(draw: st.DrawFn, stream: str | None = None) -> Event:
    dataset = draw(st.sampled_from([Dataset.GATEWAY, Dataset.APP]))
    origin = Origin(dataset, stream if stream is not None else draw(_text), draw(st.integers(0, 2**63 - 1)))
    values: dict[str, object] = {}
    for field in fields(Event)[4:]:
        kind = str(field.type)
        if field.name == "response_flags":
            values[field.name] = tuple(draw(st.lists(_text, max_size=3)))
        elif field.name == "labels":
            values[field.name] = tuple(draw(st.lists(st.tuples(_text, _text), max_size=3)))
        elif kind.startswith("int"):
            values[field.name] = draw(_opt_int)
        elif kind.startswith("float"):
            values[field.name] = draw(_opt_float)
        else:
            values[field.name] = draw(_opt_text)
    ts = draw(st.floats(min_value=-MAX_TS_SECS, max_value=MAX_TS_SECS))
    return Event(id=record_id(origin), dataset=dataset, ts=ts, origin=origin, **values)  # type: ignore[arg-type]


class _Message(msgspec.Struct, array_like=True):
    stream: str
    rows: list[EventRow]


def test_the_row_names_every_field_of_an_event() -> None:
    names = [f.name for f in fields(Event)]
    assert list(EventRow.__struct_fields__) == [*names[:3], "offset", *names[4:]]


@settings(max_examples=300, deadline=None)
@given(st.lists(events(stream="gw-gateway/3"), max_size=20))
def test_events_of_one_stream_round_trip_exactly(batch: list[Event]) -> None:
    data = encode("events", 1, ("gw-gateway/3", encode_rows(batch)))
    _, message = decode(data, {"events": (1, _Message)})
    assert events_from_rows(message.stream, message.rows) == batch


@settings(max_examples=200, deadline=None)
@given(st.lists(events(), max_size=20))
def test_an_event_table_keeps_every_event_its_stream_and_the_order(batch: list[Event]) -> None:
    data = encode("table", 1, pack_events(batch))
    _, table = decode(data, {"table": (1, EventTable)})
    assert unpack_events(table) == batch


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=300))
def test_any_bytes_decode_or_raise_wire_error(data: bytes) -> None:
    try:
        decode(data, {"table": (1, EventTable)})
    except WireError as error:
        assert error.reason in {"undecodable", "unknown_version", "unknown_kind"}


def test_a_pickle_is_refused_without_being_run(tmp_path: Path) -> None:
    class Boom:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (os.mkdir, (str(tmp_path / "ran"),))

    with pytest.raises(WireError) as caught:
        decode(pickle.dumps(Boom()), {"events": (1, _Message)})
    assert caught.value.reason == "undecodable"
    assert not (tmp_path / "ran").exists()


def test_an_unknown_version_and_an_unknown_kind_are_named() -> None:
    body = ("gw/0", encode_rows([]))
    with pytest.raises(WireError) as caught:
        decode(encode("events", 2, body), {"events": (1, _Message)})
    assert caught.value.reason == "unknown_version"
    with pytest.raises(WireError) as caught:
        decode(encode("evnts", 1, body), {"events": (1, _Message)})
    assert caught.value.reason == "unknown_kind"


def _event(**values: object) -> Event:
    origin = Origin(Dataset.GATEWAY, "gw/0", 1)
    return Event(record_id(origin), Dataset.GATEWAY, values.pop("ts", 1e9), origin, **values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad", [{"bytes_sent": 2**64}, {"status": -(2**63) - 1}, {"ts": float("inf")}, {"ts": float("nan")}, {"ts": 2e15}]
)
def test_an_event_that_cannot_cross_the_wire_is_told_apart(bad: dict[str, object]) -> None:
    good, wrong = _event(status=200), _event(**bad)
    with pytest.raises(WireError) as caught:
        encode_rows([good, wrong])
    assert caught.value.reason == "invalid_value"
    kept, rejected = split_unencodable([good, wrong])
    assert kept == [good]
    assert [e for e, _ in rejected] == [wrong]


def test_a_forged_row_with_an_infinite_time_does_not_decode() -> None:
    row = list(event_rows([_event()])[0])
    row[2] = float("inf")
    with pytest.raises(WireError):
        decode(encode("events", 1, ("gw/0", [row])), {"events": (1, _Message)})


def _golden_events() -> list[Event]:
    gw = Origin(Dataset.GATEWAY, "gw-gateway/3", 41)
    app = Origin(Dataset.APP, "gw-app/0", 2**63 - 1)
    return [
        Event(record_id(gw), Dataset.GATEWAY, 1_700_000_000.25, gw, request_id="5f1c-77", method="POST",
              path="/v1/charge", protocol="HTTP/2", status=503, response_flags=("UF", "URX"),
              response_code_details="upstream_reset", bytes_received=2**64 - 1, bytes_sent=-(2**63),
              duration_ms=12.5, upstream_service_time_ms=float("inf"), upstream_host="10.0.0.7:8080",
              upstream_cluster="billing", route_name="charge", authority="api.example.com", user_agent="curl/8",
              forwarded_for="203.0.113.9", source_ip="203.0.113.9", peer_identity="spiffe://x/y", tls_version="TLSv1.3",
              token_jti="j-1", token_sub="u-9", token_org="o-2", token_exp=1_700_000_900.0, token_iat=-1.5,
              labels=(("env", "prod"), ("é", "ü")), created=1_700_000_000.5),
        Event(record_id(app), Dataset.APP, -5.0, app, request_id="5f1c-77", user_id="u-9", org_id="o-2",
              action="charge", outcome="failure", level="ERROR", message="card declined"),
    ]  # fmt: skip


def test_the_bytes_on_the_wire_and_in_checkpoints_stay_the_same() -> None:
    # Digests of what the codec of f12a9d0 wrote for these events: a faster
    # encoder must write the same bytes, or a running deployment's messages and
    # checkpoints would no longer read back (or ids derived from them would move).
    events = _golden_events()
    message = encode("events", 1, ("gw-gateway/3", encode_rows(events)))
    table = encode("table", 1, pack_events(events))
    assert hashlib.sha256(message).hexdigest() == "8f86884c8edcf977a83e1edbac9e47a90b8db3f0ac4e4baa5dd0fa1ff28e2511"
    assert hashlib.sha256(table).hexdigest() == "a56cca9c7dcce5cbc8952d1ee2c25cca87360cdaf16ccb979eaf1f0316743272"
    assert events_from_rows("gw-gateway/3", decode(message, {"events": (1, _Message)})[1].rows)[0] == events[0]
    assert unpack_events(decode(table, {"table": (1, EventTable)})[1]) == events
