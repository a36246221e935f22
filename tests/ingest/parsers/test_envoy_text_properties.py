"""Envoy text formats, by property: round trips through rendered lines, cuts, arbitrary bytes."""

from __future__ import annotations

import calendar
import re
import string
from typing import Any

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from ingest.parsers import ENVOY_DEFAULT_FORMAT, build_gateway_parser, compile_text_format
from ingest.records import DeadLetter, Event
from tests.ingest.parsers.test_envoy_text import (
    ENVOY_DOC_LINE,
    ISTIO_FORMAT,
    JWT,
    SECURITY_FORMAT,
    dead,
    event,
    record,
)


_TOKEN = st.text(alphabet=string.ascii_letters + string.digits + "-._~/%?&=:;+!*'()\"", min_size=1, max_size=30)
_QUOTED = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs"), blacklist_characters='"'), min_size=1, max_size=40
)
_IPV4 = st.tuples(*[st.integers(0, 255)] * 4).map(lambda parts: ".".join(map(str, parts)))
_NUMBER = st.one_of(st.just("-"), st.integers(0, 10**12).map(str))
_FLAGS = st.one_of(
    st.just("-"),
    st.lists(st.sampled_from(["UF", "URX", "UH", "RL", "UAEX", "NR", "DC", "XYZ"]), min_size=1, max_size=3).map(
        ",".join
    ),
)


@st.composite
def default_values(draw: st.DrawFn) -> dict[str, str]:
    moment = draw(st.tuples(
        st.integers(2000, 2099), st.integers(1, 12), st.integers(1, 28),
        st.integers(0, 23), st.integers(0, 59), st.integers(0, 59), st.integers(0, 999),
    ))
    return {
        "%START_TIME%": "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}.{:03d}Z".format(*moment),
        "%REQ(:METHOD)%": draw(st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "-"])),
        "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%": "/" + draw(_TOKEN),
        "%PROTOCOL%": draw(st.sampled_from(["HTTP/1.1", "HTTP/2", "HTTP/3", "-"])),
        "%RESPONSE_CODE%": draw(st.one_of(st.just("-"), st.sampled_from([0, *range(100, 600)]).map(str))),
        "%RESPONSE_FLAGS%": draw(_FLAGS),
        "%BYTES_RECEIVED%": draw(_NUMBER),
        "%BYTES_SENT%": draw(_NUMBER),
        "%DURATION%": draw(_NUMBER),
        "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%": draw(_NUMBER),
        "%REQ(X-FORWARDED-FOR)%": draw(st.one_of(st.just("-"), st.lists(_IPV4, min_size=1, max_size=3).map(", ".join))),
        "%REQ(USER-AGENT)%": draw(_QUOTED),
        "%REQ(X-REQUEST-ID)%": str(draw(st.uuids())),
        "%REQ(:AUTHORITY)%": draw(st.sampled_from(["billing.example.com", "localhost:8080", "-"])),
        "%UPSTREAM_HOST%": draw(st.one_of(st.just("-"), _IPV4.map(lambda ip: f"{ip}:8080"))),
        "_moment": moment,  # type: ignore[dict-item]
    }


def _render(fmt: str, values: dict[str, Any]) -> str:
    # One pass: a value that spells an operator ("/%BYTES_SENT%" as a path) stays as it is.
    operators = re.compile("|".join(re.escape(operator) for operator in values if operator.startswith("%")))
    return operators.sub(lambda found: values[found.group()], fmt)


def _int(value: str) -> int | None:
    return None if value == "-" else int(value)


def _text(value: str) -> str | None:
    return None if value == "-" else value


@settings(database=None, max_examples=300, deadline=None)
@given(default_values(), st.booleans())
def test_default_format_round_trip(values: dict[str, Any], ambassador: bool) -> None:
    line = ("ACCESS " if ambassador else "") + _render(ENVOY_DEFAULT_FORMAT, values)
    e = event(build_gateway_parser(), line)
    year, month, day, hour, minute, second, millis = values["_moment"]
    assert e.ts == float(f"{calendar.timegm((year, month, day, hour, minute, second))}.{millis:03d}")
    assert e.method == _text(values["%REQ(:METHOD)%"])
    assert e.path == values["%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%"]
    assert e.protocol == _text(values["%PROTOCOL%"])
    status = _int(values["%RESPONSE_CODE%"])
    assert e.status == (None if status == 0 else status)
    flags = values["%RESPONSE_FLAGS%"]
    assert e.response_flags == (() if flags == "-" else tuple(flags.split(",")))
    assert e.bytes_received == _int(values["%BYTES_RECEIVED%"])
    assert e.bytes_sent == _int(values["%BYTES_SENT%"])
    duration = _int(values["%DURATION%"])
    assert e.duration_ms == (None if duration is None else float(duration))
    upstream_time = _int(values["%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"])
    assert e.upstream_service_time_ms == (None if upstream_time is None else float(upstream_time))
    xff = _text(values["%REQ(X-FORWARDED-FOR)%"])
    assert e.forwarded_for == xff
    assert e.source_ip == (None if xff is None else xff.split(", ")[-1])  # what the gateway appended
    assert e.user_agent == _text(values["%REQ(USER-AGENT)%"])
    assert e.request_id == values["%REQ(X-REQUEST-ID)%"]
    assert e.authority == _text(values["%REQ(:AUTHORITY)%"])
    assert e.upstream_host == _text(values["%UPSTREAM_HOST%"])
    assert e.labels == ()


@settings(database=None, max_examples=200, deadline=None)
@given(
    st.integers(946684800, 4102444799),
    st.integers(0, 999),
    st.one_of(_IPV4.map(lambda ip: (ip, ip)), st.just(("[2001:db8::7]", "2001:db8::7"))),
    st.integers(1, 65535),
    st.text(alphabet=string.ascii_letters + string.digits + "-_", min_size=1, max_size=20),
    st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs"), blacklist_characters='"'), min_size=2),
    # Realistic (10-digit) exp: normalize reads 8-digit text as an ISO date (19700101)
    # and numbers above 1e11 as epoch milliseconds.
    st.integers(10**9, 4_102_444_799),  # and before 2100, normalize's bound
)
def test_custom_format_round_trip(
    seconds: int, millis: int, address: tuple[str, str], port: int, jti: str, sub: str, exp: int
) -> None:
    parser = compile_text_format(
        f'%START_TIME(%s.%3f)% %DOWNSTREAM_REMOTE_ADDRESS% "%DYNAMIC_METADATA({JWT}:sub)%" '
        f"%DYNAMIC_METADATA({JWT}:jti)% %DYNAMIC_METADATA({JWT}:exp)%\n"
    )
    shown, ip = address
    e = event(parser, f'{seconds}.{millis:03d} {shown}:{port} "{sub}" {jti} {exp}\n')
    assert e.ts == float(f"{seconds}.{millis:03d}")
    assert e.source_ip == ip
    assert e.token_sub == sub
    assert e.token_jti == (None if jti == "-" else jti)
    assert e.token_exp == float(exp)


@settings(database=None, max_examples=300, deadline=None)
@given(default_values(), st.data())
def test_every_cut_of_a_line_is_truncated(values: dict[str, Any], data: st.DataObject) -> None:
    line = _render(ENVOY_DEFAULT_FORMAT, values).rstrip("\n")
    cut = data.draw(st.integers(1, len(line) - 1))
    assume(line[:cut].rstrip("\r\n"))
    assert dead(build_gateway_parser(), line[:cut]).reason == "truncated"


_PARSERS = [
    build_gateway_parser(),
    compile_text_format(ISTIO_FORMAT),
    compile_text_format(SECURITY_FORMAT),
    compile_text_format(f"%START_TIME(%s.%3f)% %DYNAMIC_METADATA({JWT})% %RESPONSE_CODE%%PROTOCOL%"),
]


_DOC_LINE_STARTS = [ENVOY_DOC_LINE[:k] for k in range(len(ENVOY_DOC_LINE))]


@settings(database=None, max_examples=500, deadline=None)
@given(st.one_of(
    st.binary(max_size=400),
    st.text(max_size=300).map(str.encode),
    # a real line's start followed by anything: the partial-match paths
    st.builds(lambda start, rest: (start + rest).encode(), st.sampled_from(_DOC_LINE_STARTS), st.text(max_size=50)),
))
def test_arbitrary_input_never_raises(line: bytes) -> None:
    for parser in _PARSERS:
        result = parser(record(line))
        assert isinstance(result, (Event, DeadLetter))
        if isinstance(result, DeadLetter):
            assert result.reason in {
                "invalid_utf8", "truncated", "oversized", "format_mismatch", "invalid_value", "missing_timestamp",
            }


