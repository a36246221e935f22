"""The operator table, the format grammar and START_TIME's strftime reader."""

from __future__ import annotations

import re

import pytest

from ingest.normalize import InvalidValueError
from ingest.parsers.envoy_format import Command, Literal, tokenize
from ingest.parsers.envoy_operators import (
    HEADERS,
    JWT_CLAIMS,
    LONG_FLAGS,
    OPERATORS,
    Kind,
    resolve,
    short_flags,
)
from ingest.parsers.envoy_time import compile_start_time
from ingest.records import Event

EVENT_FIELDS = set(Event.__slots__)


def test_tokenize_splits_literals_and_commands() -> None:
    assert tokenize('[%START_TIME(%s.%3f)%] "%REQ(USER-AGENT):20%" 100%%\n') == [
        Literal("["),
        Command("START_TIME", "%s.%3f", None, 1),
        Literal('] "'),
        Command("REQ", "USER-AGENT", 20, 24),
        Literal('" 100%\n'),
    ]


def test_command_text_round_trips() -> None:
    for text in ("START_TIME", "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)", "DYNAMIC_METADATA(a.b:c):25"):
        (command,) = tokenize(f"%{text}%")
        assert isinstance(command, Command) and command.text == text


def test_every_row_names_an_event_field() -> None:
    named = {row.field for row in OPERATORS.values() if row.field is not None}
    assert named <= EVENT_FIELDS
    assert set(HEADERS.values()) <= EVENT_FIELDS
    assert set(JWT_CLAIMS.values()) <= EVENT_FIELDS


@pytest.mark.parametrize(
    ("text", "field", "kind", "is_label"),
    [
        ("START_TIME", "ts", Kind.TIME, False),
        ("RESPONSE_CODE", "status", Kind.NUMBER, False),
        ("RESPONSE_FLAGS_LONG", "response_flags", Kind.TEXT, False),
        ("REQ(:METHOD)", "method", Kind.TEXT, False),
        ("REQ(X-ENVOY-ORIGINAL-PATH?:PATH)", "path", Kind.TEXT, False),
        ("REQ(:path)", "path", Kind.TEXT, False),
        ("REQ(x-request-id):36", "request_id", Kind.TEXT, False),
        ("RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)", "upstream_service_time_ms", Kind.TEXT, False),
        ("REQ(X-ENVOY-UPSTREAM-SERVICE-TIME)", "req.x-envoy-upstream-service-time", Kind.TEXT, True),
        ("DOWNSTREAM_PEER_URI_SAN", "peer_identity", Kind.TEXT, False),
        ("DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT", "downstream_direct_remote_address_without_port",
         Kind.TEXT, True),
        ("DYNAMIC_METADATA(envoy.filters.http.jwt_authn:my_payload:org_id)", "token_org", Kind.TEXT, False),
        ("DYNAMIC_METADATA(envoy.filters.http.jwt_authn:my_payload:exp)", "token_exp", Kind.TEXT, False),
        ("METADATA(DYNAMIC:envoy.filters.http.jwt_authn:my_payload:sub)", "token_sub", Kind.TEXT, False),
        ("DYNAMIC_METADATA(envoy.filters.http.jwt_authn:my_payload:aud)",
         "dynamic_metadata.envoy.filters.http.jwt_authn:my_payload:aud", Kind.JSON, True),
        ("DYNAMIC_METADATA(com.test.my_filter:sub)", "dynamic_metadata.com.test.my_filter:sub", Kind.JSON, True),
        ("UPSTREAM_PROTOCOL", "upstream_protocol", Kind.TEXT, True),
        ("GRPC_STATUS(NUMBER)", "grpc_status.number", Kind.TEXT, True),
    ],
)
def test_resolve(text: str, field: str, kind: Kind, is_label: bool) -> None:
    (command,) = tokenize(f"%{text}%")
    assert isinstance(command, Command)
    slot = resolve(command)
    assert (slot.field, slot.kind, slot.is_label) == (field, kind, is_label)


def test_a_label_never_collides_with_an_event_field() -> None:
    (command,) = tokenize("%MESSAGE%")
    assert isinstance(command, Command)
    assert resolve(command).field == "envoy.message"


def test_short_flags() -> None:
    assert short_flags("UnauthorizedExternalService") == "UAEX"
    assert short_flags("NoHealthyUpstream,RateLimited,Custom") == "UH,RL,Custom"
    assert len(set(LONG_FLAGS.values())) == len(LONG_FLAGS)


@pytest.mark.parametrize(
    ("strftime", "value", "ts"),
    [
        ("%s", "1527590590", 1527590590.0),
        ("%s.%3f", "1527590590.528", 1527590590.528),
        ("%s%3f", "1527590590528", 1527590590.528),
        ("%Y-%m-%dT%H:%M:%S.%f", "2018-05-29T10:43:10.528000001", 1527590590.528000001),
        ("%Y-%m-%dT%H:%M:%E*S%Ez", "2018-05-29T12:43:10.5+02:00", 1527590590.5),
        ("%y%m%d %H%M%S", "180529 104310", 1527590590.0),
        ("%a, %d %b %Y %T %Z", "Tue, 29 May 2018 10:43:10 GMT", 1527590590.0),
        ("%A %e %B %Y %R", "Tuesday  9 January 2018 10:43", 1515494580.0),
        ("%Y.%j %H:%M:%S", "2018.149 10:43:10", 1527590590.0),
    ],
)
def test_start_time_reader(strftime: str, value: str, ts: float) -> None:
    fragment, read = compile_start_time(strftime)
    assert read(value) == ts
    assert re.fullmatch(fragment, value)
    assert re.compile(fragment).groups == 0


def test_start_time_reader_rejects_impossible_dates() -> None:
    _, read = compile_start_time("%Y-%m-%d %H:%M:%S")
    with pytest.raises(InvalidValueError):
        read("2018-02-30 10:00:00")
    with pytest.raises(InvalidValueError):
        read("not a date")
