"""Hypothesis over each parser and the store writers: hostile values in the right places, shrunk to the
smallest failing record when one breaks. Every record must end as a bounded event or a dead letter,
and either must be writable to DuckDB and NDJSON."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
from conftest import FUZZ_COUNTS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_fuzz_parsers import assert_bounded

from gatewatch.demo.render import DEMO_JSON_FORMAT
from ingest.parsers import build_app_parser, build_gateway_parser
from ingest.parsers.envoy_text import ENVOY_DEFAULT_FORMAT
from ingest.records import Dataset, DeadLetter, Event, Origin, RawRecord
from ingest.sinks.base import Batch
from ingest.sinks.duckdb import DuckDBSink
from ingest.sinks.ndjson import DeadLetterFile

_offsets = itertools.count(1)
_SETTINGS = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

hostile_scalars = st.one_of(
    st.none(), st.booleans(),
    st.integers(-(2**70), 2**70), st.sampled_from([3_000_000_000, 2**63, 2**64, -1, 0, 599, 600]),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e300, -1e300, 2e19, 1e-300]),
    st.text(max_size=40), st.sampled_from(["9999-12-31T23:59:59Z", "1969-01-01T00:00:00Z", "\x1b[31m[/x]\r\n"]),
)  # fmt: skip
hostile_values = st.recursive(
    hostile_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=8,
)
good_time = st.sampled_from(["2026-03-02T09:00:00Z", "2026-03-02T09:00:00.123456+00:00", 1772442000, "1772442000.5"])


def _line(obj: Any, python_json: bool) -> bytes:
    # Python's json writes what orjson refuses (NaN, Infinity, ints past 64 bits): both must end well.
    if python_json:
        return json.dumps(obj, allow_nan=True).encode("utf-8", "surrogatepass")
    try:
        return orjson.dumps(obj)
    except TypeError:
        return json.dumps(obj).encode("utf-8", "surrogatepass")


@pytest.fixture(scope="module")
def sinks(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[DuckDBSink, DeadLetterFile]]:
    folder = tmp_path_factory.mktemp("structured")
    duck, dead = DuckDBSink(folder / "store.duckdb"), DeadLetterFile(folder / "dead.ndjson")
    yield duck, dead
    con = duck.connection
    rows = con.sql("select (select count(*) from events), (select count(*) from dead_letters)").fetchall()[0]
    duck.close()
    dead.close()
    FUZZ_COUNTS["hypothesis parsers -> DuckDB + NDJSON"] = (sum(rows), rows[0], rows[1])


def _check_and_store(result: Event | DeadLetter, sinks: tuple[DuckDBSink, DeadLetterFile]) -> None:
    if isinstance(result, Event):
        assert_bounded(result)
        batch = Batch(events=[result])
    else:
        assert isinstance(result, DeadLetter)
        batch = Batch(dead_letters=[result])
    for sink in sinks:
        sink.write(batch)  # a StoreError here is a value that escaped normalize


def _record(dataset: Dataset, line: bytes) -> RawRecord:
    return RawRecord(Origin(dataset, "hypothesis", next(_offsets)), line)


APP_KEYS = ["request_id", "method", "path", "status", "latency_ms", "user_id", "org_id", "msg", "level"]
app_parse = build_app_parser({})


@_SETTINGS
@given(
    ts=st.one_of(good_time, hostile_values),
    fields=st.dictionaries(st.sampled_from(APP_KEYS), hostile_values, max_size=5),
    token=st.dictionaries(st.sampled_from(["jti", "sub", "org", "exp", "iat"]), hostile_values, max_size=5),
    peer=st.dictionaries(st.sampled_from(["ip", "spiffe_id"]), hostile_values, max_size=2),
    python_json=st.booleans(),
)
def test_app_json(ts: Any, fields: dict, token: dict, peer: dict, python_json: bool, sinks: Any) -> None:
    line = _line({"ts": ts, **fields, "token": token, "peer": peer}, python_json)
    _check_and_store(app_parse(_record(Dataset.APP, line)), sinks)


envoy_json_parse = build_gateway_parser(json_format=DEMO_JSON_FORMAT)


def _fill(mapping: dict[str, Any], draw: Any) -> dict[str, Any]:
    # Mostly absent (null), so the hostile values that remain decide the outcome one or two at a time.
    return {
        key: _fill(value, draw) if isinstance(value, dict)
        else draw(st.one_of(good_time, hostile_values)) if key == "time"
        else draw(st.one_of(st.none(), st.none(), st.none(), hostile_values))
        for key, value in mapping.items()
    }  # fmt: skip


@_SETTINGS
@given(data=st.data(), python_json=st.booleans())
def test_envoy_json(data: st.DataObject, python_json: bool, sinks: Any) -> None:
    line = _line(_fill(DEMO_JSON_FORMAT, data.draw), python_json)
    _check_and_store(envoy_json_parse(_record(Dataset.GATEWAY, line)), sinks)


DEFAULT_LINE = (
    '[2026-03-02T09:00:00.123Z] "GET /v1/invoices?x=1 HTTP/1.1" 200 - 0 1234 25 24 "10.1.2.3" "curl/8.0" '
    '"9d11d6d7-e466-4495-ad49-616887a9e852" "billing.example" "10.0.1.5:8080"\n'
)
text_parse = build_gateway_parser()


@_SETTINGS
@given(
    position=st.integers(0, 14),
    value=st.one_of(
        st.text(max_size=30), st.integers(-(2**70), 2**70).map(str),
        st.sampled_from(["9999-12-31T23:59:59.999Z", "3000000000", "1e300", "NaN", "-1", '"', "\x1b[2J"]),
    ),
    raw_bytes=st.binary(max_size=4),
)  # fmt: skip
def test_envoy_text_default(position: int, value: str, raw_bytes: bytes, sinks: Any) -> None:
    fields = DEFAULT_LINE.split(" ")
    fields[position] = fields[position].replace(fields[position].strip('[]"\n'), value, 1)
    line = " ".join(fields).encode("utf-8", "surrogatepass") + raw_bytes
    _check_and_store(text_parse(_record(Dataset.GATEWAY, line)), sinks)


def test_the_default_line_itself_parses() -> None:
    """The template the text fuzz starts from is a real line, so mutations start from a match."""
    assert isinstance(text_parse(_record(Dataset.GATEWAY, DEFAULT_LINE.encode())), Event)
    assert ENVOY_DEFAULT_FORMAT.startswith("[%START_TIME%]")
