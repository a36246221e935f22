"""The fused readers (JSON, text) give exactly what the general path gives, line for line."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ingest.parsers.app_json as app_json
import ingest.parsers.envoy_json as envoy_json
import ingest.parsers.envoy_text as envoy_text
import ingest.parsers.fused as fused_module
from gatewatch.demo.render import DEMO_JSON_FORMAT, DEMO_TEXT_FORMAT
from ingest.parsers import (
    DEFAULT_APP_FIELDS,
    ENVOY_DEFAULT_FORMAT,
    compile_app_parser,
    compile_json_format,
    compile_text_format,
)
from ingest.parsers.decode import Parser
from ingest.parsers.envoy_format import Command, tokenize
from ingest.parsers.envoy_text import compile_text_pattern
from ingest.parsers.envoy_operators import Kind, resolve
from ingest.parsers.fused import Leaf, fuse
from ingest.records import Dataset, Origin, RawRecord

VALUES = st.one_of(
    st.none(),
    st.sampled_from(["", "-", "0", "200", "abc", "10.0.0.1:443", "1.5", "2026-03-02T09:00:00.003Z", "a,b"]),
    # Digits as text: other scripts' digits, digits float() refuses, and past each field's range.
    st.sampled_from(["0016", "\u0661\u0662\u0663", "\u00b2", "9" * 19, "1772442628", "99999999999", "1" * 13]),
    st.integers(min_value=-5, max_value=2_000_000_000),
    st.floats(allow_nan=False, allow_infinity=False),
    st.booleans(),
    st.just({"nested": 1}),
    st.just([1, 2]),
)
TIMES = st.one_of(VALUES, st.sampled_from(["2026-03-02T09:00:00.003Z", "2026-03-02T09:00:02.520436+00:00"]))


CREATED = st.sampled_from([None, 1_772_442_000.5, 5.0, 5e9])  # a container runtime's time; the last two absurd


def _both(module: Any, build: Any) -> tuple[Parser, Parser]:
    """The parser as built (checked to have a fused reader) and the same with its general path only."""
    built: list[object] = []
    real = module.fuse
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(module, "fuse", lambda *args, **kwargs: built.append(real(*args, **kwargs)) or built[-1])
        fused = build()
        assert built and built[0] is not None, "the format should have a fused reader"
        patch.setattr(module, "fuse", lambda *args, **kwargs: None)
        return fused, build()


def _shaped(mapping: Mapping[str, Any], draw: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in mapping.items():
        if draw(st.integers(0, 9)) == 0:
            continue  # key missing
        if isinstance(value, Mapping):
            out[key] = _shaped(value, draw) if draw(st.integers(0, 9)) else draw(VALUES)
        else:
            out[key] = draw(TIMES if key in ("time", "ts") else VALUES)
    return out


def _record(obj: dict[str, Any], dataset: Dataset, created: float | None) -> RawRecord:
    return RawRecord(Origin(dataset, "s", 1), orjson.dumps(obj), created)


@pytest.fixture(scope="module")
def gateway_parsers() -> tuple[Parser, Parser]:
    return _both(envoy_json, lambda: compile_json_format(DEMO_JSON_FORMAT))


@pytest.fixture(scope="module")
def app_parsers() -> tuple[Parser, Parser]:
    return _both(app_json, lambda: compile_app_parser({}))


@settings(database=None, max_examples=400, deadline=None)
@given(data=st.data(), created=CREATED)
def test_gateway_lines_read_as_the_general_path_reads_them(
    gateway_parsers: tuple[Parser, Parser], data: st.DataObject, created: float | None
) -> None:
    fused, general = gateway_parsers
    record = _record(_shaped(DEMO_JSON_FORMAT, data.draw), Dataset.GATEWAY, created)
    assert fused(record) == general(record)


@settings(database=None, max_examples=400, deadline=None)
@given(data=st.data(), created=CREATED)
def test_app_lines_read_as_the_general_path_reads_them(
    app_parsers: tuple[Parser, Parser], data: st.DataObject, created: float | None
) -> None:
    fused, general = app_parsers
    shape: dict[str, Any] = {}
    for path in DEFAULT_APP_FIELDS.values():
        *parents, leaf = path.split(".")
        holder = shape
        for part in parents:
            holder = holder.setdefault(part, {})
        holder[leaf] = "%"
    obj = _shaped(shape, data.draw)
    if data.draw(st.booleans()):
        obj["token.jti"] = data.draw(VALUES)  # a literal dotted key: the general path's rule
    assert fused(_record(obj, Dataset.APP, created)) == general(_record(obj, Dataset.APP, created))


# Raw JSON under a key no leaf names, or a named key written twice: the JSON readers decode the
# line themselves (msgspec, skipping unnamed keys), so their verdict must be orjson's.
UNNAMED_VALUES = st.sampled_from([
    b'"a\x01b"', b'"\\q"', b'"\\ud800"', b'"\\ud83d\\ude00"', b"NaN", b"01", b"-0", b"tru", b'"\xff"',
    b'"\xc3\xa9"', b'"\xe2\x82"', b'{"k": [1, {"z": null}]}',
    *(b"[" * depth + b"]" * depth for depth in (1022, 1023, 1024, 3000)),  # about orjson's depth limit, 1024
    b"123456789012345678901234567890", b"1.5e308", b'{"a":1,}', b"[1 2]", b'"unterminated',
])  # fmt: skip
UNNAMED_KEYS = st.sampled_from([b'"extra"', b'"\xff\xfe"', b'"caf\xc3\xa9"', b'"a\\u0000b"'])
NAMED_TWICE = st.sampled_from([b'"time":"2026-03-02T09:00:00.003Z"', b'"ts":7', b'"http":{"status":"x"}',
                               b'"request_id":null', b'"jwt":[]', b'"peer":"10.0.0.1"', b'"status":true'])


def _spliced(line: bytes, draw: Any) -> bytes:
    """``line`` (an object) with an unnamed key or a named key written again, first or last."""
    extra = draw(st.one_of(st.builds(lambda k, v: k + b":" + v, UNNAMED_KEYS, UNNAMED_VALUES), NAMED_TWICE))
    body = line[1:-1]
    if draw(st.booleans()):
        return b"{" + extra + (b"," + body if body else b"") + b"}"
    return b"{" + (body + b"," if body else b"") + extra + b"}"


@settings(database=None, max_examples=400, deadline=None)
@given(data=st.data())
def test_hostile_json_reads_as_the_general_path_reads_it(
    gateway_parsers: tuple[Parser, Parser], app_parsers: tuple[Parser, Parser], data: st.DataObject
) -> None:
    if data.draw(st.booleans()):
        (fused, general), dataset, obj = gateway_parsers, Dataset.GATEWAY, _shaped(DEMO_JSON_FORMAT, data.draw)
    else:
        shape = {"ts": "%", "status": "%", "token": {"jti": "%", "exp": "%"}, "peer": {"ip": "%"}}
        (fused, general), dataset, obj = app_parsers, Dataset.APP, _shaped(shape, data.draw)
    line = _spliced(orjson.dumps(obj), data.draw)
    record = RawRecord(Origin(dataset, "s", 1), line)
    assert fused(record) == general(record)


def test_a_number_past_float_range_under_an_unnamed_key_costs_nothing() -> None:
    # RFC 8259 sets numbers no range; the key is ignored either way (the lead's call, issue 15).
    # The line reader skips the key as it is; the general path reads 1e400 as infinity and ignores it too.
    fused, general = _both(app_json, lambda: compile_app_parser({}))
    line = b'{"ts":"2026-03-02T09:00:00.003Z","request_id":"r-1","amount":1e400}'
    event = fused(RawRecord(Origin(Dataset.APP, "s", 1), line))
    assert event == general(RawRecord(Origin(Dataset.APP, "s", 1), line))
    assert event == general(RawRecord(Origin(Dataset.APP, "s", 1), line.replace(b"1e400", b"1")))


TEXT_JUNK = st.one_of(
    st.sampled_from(["", "abc", "1.5", "1e400", "1772442628", "1999-12-31T23:59:59Z", "99999999999999999999",
                     "9999-01-01T00:00:00Z"]),
    st.text(alphabet='ab1 -:."', max_size=6),
    st.sampled_from(["\u0661\u0662\u0663", "\u00b2", "9" * 19, "1" * 13]),
)
# Values of each operator's kind, so most lines are events (statuses double as counts); TEXT_JUNK now and then.
TEXT_VALUES = {
    # Past 12 digits (a duration's fast limit) and past int64 (a count's), leading zeros.
    Kind.NUMBER: st.sampled_from(["-", "0", "200", "503", "404", "0016", "1" * 13, "9" * 19]),
    Kind.TIME: st.sampled_from(["2026-03-02T09:00:00.003Z", "2026-03-02T09:00:02.520436+00:00"]),
    Kind.TEXT: st.sampled_from(["-", "GET", "HTTP/2", "UF,URX", "10.0.0.1:443", "[::1]:80", "[::1:80", ":80",
                                "spiffe://cluster.local/ns/x", "1772442628", "0"]),
    Kind.JSON: st.sampled_from(["-", "abc"]),
}  # fmt: skip


def _text_line(fmt: str, draw: Any) -> str:
    parts = []
    tokens = tokenize(fmt)
    for index, token in enumerate(tokens):
        after = tokens[index + 1] if index + 1 < len(tokens) else None
        if not isinstance(token, Command):
            parts.append(token.text)
        elif draw(st.integers(0, 39)) == 0:
            parts.append(draw(TEXT_JUNK))
        elif resolve(token).field in ("token_exp", "token_iat"):
            parts.append(draw(st.sampled_from(["-", "1772442628", "1772442628.5"])))
        elif resolve(token).field in ("upstream_service_time_ms", "duration_ms"):
            parts.append(draw(TEXT_VALUES[Kind.NUMBER]))
        elif parts and parts[-1].endswith('"') and getattr(after, "text", "").startswith('"'):  # may be empty, spaced
            spaced = st.sampled_from(["", "a b", "10.0.0.1, 10.0.0.2"])
            parts.append(draw(st.one_of(TEXT_VALUES[resolve(token).kind], spaced)))
        else:
            parts.append(draw(TEXT_VALUES[resolve(token).kind]))
    return "".join(parts)


@functools.cache
def _text_parsers(fmt: str) -> tuple[Parser, Parser]:
    return _both(envoy_text, lambda: compile_text_format(fmt))


TWICE_FORMAT = "[%START_TIME%] %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %RESPONSE_CODE%"
"""Two operators fill source_ip: the general path lets the one with a reader (the port cut) win."""


@pytest.mark.parametrize(
    "fmt", [DEMO_TEXT_FORMAT, ENVOY_DEFAULT_FORMAT, TWICE_FORMAT], ids=["demo", "envoy_default", "one_field_twice"]
)
@settings(database=None, max_examples=300, deadline=None)
@given(data=st.data(), created=CREATED)
def test_text_lines_read_as_the_general_path_reads_them(fmt: str, data: st.DataObject, created: float | None) -> None:
    fused, general = _text_parsers(fmt)
    record = RawRecord(Origin(Dataset.GATEWAY, "s", 1), _text_line(fmt, data.draw).encode(), created)
    assert fused(record) == general(record)


def test_a_typical_line_takes_the_fused_path() -> None:
    line = {"time": "2026-03-02T09:00:00.003Z", "http": {"status": 200, "method": "GET"}, "request_id": "r-1",
            "downstream": {"address": "10.0.0.1:443"}, "jwt": {"exp": 1772442628}}  # fmt: skip
    reader = fuse([Leaf(("time",), "ts"), Leaf(("request_id",), "request_id"), Leaf(("http", "status"), "status"),
                   Leaf(("http", "method"), "method"), Leaf(("jwt", "exp"), "token_exp"),
                   Leaf(("downstream", "address"), "source_ip", convert=lambda a: a.split(":")[0])],
                  dash_is_absent=True)  # fmt: skip
    assert reader is not None
    event = reader(line, Origin(Dataset.GATEWAY, "s", 1))
    assert event is not None
    assert (event.ts, event.status, event.method, event.source_ip, event.token_exp) == (
        1772442000.003, 200, "GET", "10.0.0.1", 1772442628.0
    )
    assert reader({"http": {"status": 200}}, Origin(Dataset.GATEWAY, "s", 2)) is None  # no time: general path
    assert reader({**line, "http": {"status": "x"}}, Origin(Dataset.GATEWAY, "s", 3)) is None  # bad value


def test_a_label_leaves_the_format_to_the_general_path() -> None:
    assert fuse([Leaf(("time",), "ts"), Leaf(("tenant",), "req.x-tenant")], dash_is_absent=True) is None



def test_a_run_of_shared_text_remembers_a_bounded_number_of_short_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused_module, "RUN_CACHE_ENTRIES", 8)
    built = compile_text_pattern(DEMO_TEXT_FORMAT).fused("demo")
    assert built is not None
    match, reader = built
    cache = reader.__globals__["run_cached_0"].__self__  # X-Forwarded-For and user agent: the first run
    line = (
        'ACCESS [2026-03-02T09:00:00.003Z] "GET /a HTTP/2" 200 - 0 1 2 2 "10.0.0.1" "{agent}" "r-1" "api" '
        '"10.1.0.20:8080" route cluster 10.0.0.1:5 "-" TLSv1.3 "via_upstream" jti=j sub=s org=o exp=1772442628'
    )
    agents = [f"agent-{n}" for n in range(20)] + ["x" * (fused_module.RUN_CACHE_MAX_CHARS + 1), "agent-3"]
    for agent in agents:
        found = match(line.format(agent=agent))
        assert found is not None
        event = reader(found, Origin(Dataset.GATEWAY, "s", 1))
        assert event is not None
        assert (event.forwarded_for, event.user_agent, event.route_name, event.token_org) == (
            "10.0.0.1", agent, "route", "o"
        )
        assert len(cache) <= 8
    assert not any(len(text) > fused_module.RUN_CACHE_MAX_CHARS for text in cache)


# Objects whose values repeat together (a token's claims, the app's peer) are read through a cache
# of their raw JSON: the lines below reuse a few such objects around other values, so most of them
# are read from the cache, and must still read as the general path reads them.
@settings(database=None, max_examples=200, deadline=None)
@given(data=st.data())
def test_repeated_objects_read_as_the_general_path_reads_them(
    gateway_parsers: tuple[Parser, Parser], app_parsers: tuple[Parser, Parser], data: st.DataObject
) -> None:
    if data.draw(st.booleans()):
        (fused, general), dataset, shape, key = gateway_parsers, Dataset.GATEWAY, DEMO_JSON_FORMAT, "jwt"
    else:
        shape = {"ts": "%", "request_id": "%", "token": {"jti": "%", "sub": "%", "exp": "%"}, "peer": {"ip": "%"}}
        (fused, general), dataset, key = app_parsers, Dataset.APP, "token"
    pool = [_shaped({key: shape[key]}, data.draw).get(key) for _ in range(2)]
    for number in range(6):
        obj = _shaped(shape, data.draw)
        obj[key] = pool[data.draw(st.integers(0, 1))]
        record = RawRecord(Origin(dataset, "s", number), orjson.dumps(obj))
        assert fused(record) == general(record)


def test_a_cached_object_remembers_a_bounded_number_of_short_texts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(fused_module, "RUN_CACHE_ENTRIES", 4)
    fused, general = _both(app_json, lambda: compile_app_parser({}))
    cache = fused.__globals__["object_cached_0"].__self__  # the token's
    subjects = [f"u-{n}" for n in range(10)] + ["x" * fused_module.RUN_CACHE_MAX_CHARS, "u-3"]
    for number, subject in enumerate(subjects):
        line = {"ts": "2026-03-02T09:00:00.003Z", "request_id": "r", "token": {"sub": subject, "exp": 1772442628}}
        record = RawRecord(Origin(Dataset.APP, "s", number), orjson.dumps(line))
        event = fused(record)
        assert event == general(record)
        assert (event.token_sub, event.token_exp) == (subject, 1772442628.0)  # type: ignore[union-attr]
        assert len(cache) <= 4
    assert not any(len(text) > fused_module.RUN_CACHE_MAX_CHARS for text in cache)
