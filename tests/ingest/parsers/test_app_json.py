"""The Billing app's JSON log lines."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.parsers import DEFAULT_APP_FIELDS, Parser, build_app_parser, compile_app_parser
from ingest.records import Dataset, DeadLetter, Event, Origin
from tests.ingest.parsers.strategies import json_values
from tests.ingest.parsers.lines import line_helpers

ORIGIN = Origin(Dataset.APP, "/var/log/billing/app.log", 1001)

BILLING_LINE = orjson.dumps({
    "ts": "2024-03-01T12:00:00.250+01:00",
    "level": "info",
    "msg": "invoice created",
    "logger": "billing.invoices",
    "request_id": "5f0c8a36-4f86-4a5e-9d1e-0b7d4f2d9a11",
    "method": "POST",
    "path": "/v1/invoices",
    "status": 201,
    "latency_ms": 12.5,
    "user_id": "user-17",
    "org_id": "org-42",
    "action": "invoice.create",
    "outcome": "success",
    "token": {"jti": "a1b2", "sub": "user-17", "org": "org-42", "exp": 1709290800, "iat": 1709287200},
    "peer": {"ip": "10.1.0.12", "port": 40112, "spiffe_id": "spiffe://cluster.local/ns/edge/sa/ambassador"},
}) + b"\n"


record, event, dead = line_helpers(ORIGIN)


@pytest.fixture(scope="module")
def billing() -> Parser:
    return build_app_parser({})


def test_default_fields(billing: Parser) -> None:
    e = event(billing, BILLING_LINE)
    assert e.dataset is Dataset.APP and e.origin == ORIGIN
    assert e.ts == 1709290800.25
    assert (e.level, e.message) == ("info", "invoice created")
    assert e.request_id == "5f0c8a36-4f86-4a5e-9d1e-0b7d4f2d9a11"
    assert (e.method, e.path, e.status, e.duration_ms) == ("POST", "/v1/invoices", 201, 12.5)
    assert (e.user_id, e.org_id, e.action, e.outcome) == ("user-17", "org-42", "invoice.create", "success")
    assert (e.token_jti, e.token_sub, e.token_org) == ("a1b2", "user-17", "org-42")
    assert (e.token_exp, e.token_iat) == (1709290800.0, 1709287200.0)
    assert (e.source_ip, e.peer_identity) == ("10.1.0.12", "spiffe://cluster.local/ns/edge/sa/ambassador")
    assert e.labels == ()  # keys not mapped ("logger", "peer.port") are not kept


def test_a_literal_dotted_key_wins_over_nesting(billing: Parser) -> None:
    e = event(billing, b'{"ts": 1709290800, "token.jti": "flat", "token": {"jti": "nested", "sub": "s"}}')
    assert (e.token_jti, e.token_sub) == ("flat", "s")


def test_nesting_is_used_when_no_literal_key(billing: Parser) -> None:
    e = event(billing, b'{"ts": 1709290800, "token": {"jti": "nested"}, "peer": "not an object"}')
    assert (e.token_jti, e.source_ip) == ("nested", None)


def test_overrides_merge_with_the_defaults() -> None:
    parser = compile_app_parser({
        "latency_ms": "elapsed_ms",
        "user_id": "actor.id",
        "msg": "",  # dropped
    })
    line = (b'{"ts": "2024-03-01T11:00:00Z", "elapsed_ms": 7, "latency_ms": 99, "actor": {"id": "u-9"}, '
            b'"msg": "hidden", "status": "503"}')
    e = event(parser, line)
    assert (e.duration_ms, e.user_id, e.message, e.status) == (7.0, "u-9", None, 503)
    assert DEFAULT_APP_FIELDS["latency_ms"] == "latency_ms"  # the defaults are untouched


# The core issue's field list, each remapped to where a differently built Billing writes it.
DOCUMENTED_REMAP = {
    "ts": "@t", "request_id": "http.rid", "method": "http.verb", "path": "http.route", "status": "http.code",
    "latency_ms": "http.took_ms", "user_id": "who.user", "org_id": "who.org", "action": "what", "outcome": "result",
    "token.jti": "jwt.id", "token.sub": "jwt.subject", "token.org": "jwt.tenant", "token.exp": "jwt.expires",
    "token.iat": "jwt.issued", "peer.ip": "conn.addr", "peer.spiffe_id": "conn.spiffe", "level": "severity",
    "msg": "text",
}
REMAPPED_LINE = orjson.dumps({
    "@t": "2024-03-01T11:00:00.250Z", "severity": "warn", "text": "cross-org read",
    "http": {"rid": "rid-9", "verb": "GET", "route": "/v1/invoices/7", "code": 200, "took_ms": 3.5},
    "who": {"user": "user-17", "org": "org-1"}, "what": "invoice.read", "result": "success",
    "jwt": {"id": "j-1", "subject": "user-17", "tenant": "org-2", "expires": 1709290000, "issued": 1709280000},
    "conn": {"addr": "10.9.9.9", "spiffe": "spiffe://billing.example/ns/ops/sa/reconciler"},
})


def test_every_documented_field_name_can_be_remapped() -> None:
    e = event(build_app_parser(DOCUMENTED_REMAP), REMAPPED_LINE)
    assert e.ts == 1709290800.25
    assert (e.request_id, e.method, e.path, e.status, e.duration_ms) == ("rid-9", "GET", "/v1/invoices/7", 200, 3.5)
    assert (e.user_id, e.org_id, e.action, e.outcome) == ("user-17", "org-1", "invoice.read", "success")
    assert (e.token_jti, e.token_sub, e.token_org, e.token_exp, e.token_iat) == (
        "j-1", "user-17", "org-2", 1709290000.0, 1709280000.0,
    )
    assert (e.source_ip, e.peer_identity) == ("10.9.9.9", "spiffe://billing.example/ns/ops/sa/reconciler")
    assert (e.level, e.message) == ("warn", "cross-org read")


def test_deprecated_names_still_map_their_field() -> None:
    old = {"ts": "@t", "token_jti": "jwt.id", "source_ip": "conn.addr", "duration_ms": "http.took_ms", "message": "text"}
    e = event(build_app_parser(old), REMAPPED_LINE)
    assert (e.token_jti, e.source_ip, e.duration_ms, e.message) == ("j-1", "10.9.9.9", 3.5, "cross-org read")
    from ingest.parsers.app_json import canonical_app_fields

    assert canonical_app_fields(old)[1] == [
        "app.fields.token_jti is deprecated: rename it to 'token.jti'",
        "app.fields.source_ip is deprecated: rename it to 'peer.ip'",
        "app.fields.duration_ms is deprecated: rename it to 'latency_ms'",
        "app.fields.message is deprecated: rename it to 'msg'",
    ]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"tenant": "ctx.tenant"}, "unknown field 'tenant'; the fields are: ts, request_id, method"),
        ({"token.jtl": "jwt.id"}, "unknown field 'token.jtl'"),
        ({"token_jti": "a", "token.jti": "b"}, "'token_jti' and 'token.jti' are the same field"),
    ],
)
def test_unknown_names_are_refused(fields: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError) as error:
        build_app_parser(fields)
    assert message in str(error.value)


@pytest.mark.parametrize(
    ("ts", "expected"),
    [
        ('"2024-03-01T11:00:00Z"', 1709290800.0),
        ('"2024-03-01T12:00:00.5+01:00"', 1709290800.5),
        ('"2024-03-01T11:00:00.123456"', 1709290800.123456),
        ("1709290800", 1709290800.0),
        ("1709290800.75", 1709290800.75),
        ("1709290800750", 1709290800.75),  # epoch milliseconds
        ('"1709290800"', 1709290800.0),
    ],
)
def test_timestamps(billing: Parser, ts: str, expected: float) -> None:
    assert event(billing, f'{{"ts": {ts}}}').ts == expected


def test_nulls_and_empty_strings_are_absent(billing: Parser) -> None:
    e = event(billing, b'{"ts": 1709290800, "status": null, "user_id": "", "token": {"sub": null}}')
    assert (e.status, e.user_id, e.token_sub) == (None, None, None)


def test_a_value_that_is_not_its_type_costs_only_that_value(billing: Parser) -> None:
    # A red-team trial: a direct call to Billing with "jti": ["forged-1"] became an invalid_value dead letter,
    # and with it the gateway_bypass, token_cross_org and token_expired_accepted alerts it should have raised.
    e = event(billing, b'{"ts": 1709290800, "status": 200, "user_id": {"id": 1}, "org_id": "org-2", "token": '
                       b'{"jti": ["forged-1"], "sub": "u-1", "org": "org-1", "exp": "never"}, "peer": {"ip": "10.9.9.9"}}')
    assert (e.status, e.user_id, e.org_id, e.token_jti, e.token_sub, e.token_org, e.token_exp, e.source_ip) == (
        200, None, "org-2", None, "u-1", "org-1", None, "10.9.9.9"
    )
    assert e.label("gatewatch.invalid_value") == "token_exp,token_jti,user_id"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"ts": "2024-03-01T11:00:00Z", "level": "info", "msg": "invoice cre', "truncated"),
        (b"2024-03-01 11:00:00 INFO invoice created", "invalid_json"),
        (b'[{"ts": 1709290800}]', "not_an_object"),
        (b'{"ts": 1709290800, "msg": "caf\xe9"} \xe9', "invalid_utf8"),  # outside any string: not JSON
        (b'{"level": "info", "msg": "no time"}', "missing_timestamp"),
        (b'{"ts": "last tuesday"}', "invalid_value"),
        (b'{"ts": 1709290800, "status": "created"}', "invalid_value"),
        (b'{"ts": 1709290800, "msg": "' + b"x" * 300 + b'"}', "oversized"),
        (b"", "format_mismatch"),
    ],
)
def test_dead_letters(line: bytes, reason: str) -> None:
    letter = dead(compile_app_parser({}, max_line_bytes=256), line)
    assert (letter.reason, letter.origin, letter.line) == (reason, ORIGIN, line)


# ---- properties -------------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30)


@settings(database=None, max_examples=300, deadline=None)
@given(
    seconds=st.integers(946684800, 4102444799),
    status=st.one_of(st.none(), st.integers(100, 599)),
    latency=st.one_of(st.none(), st.floats(0, 1e6, allow_nan=False)),
    user=st.one_of(st.none(), _TEXT),
    jti=st.one_of(st.none(), _TEXT),
    exp=st.one_of(st.none(), st.integers(0, 4_102_444_799)),  # before 2100: normalize's bound
    flat_token=st.booleans(),
)
def test_round_trip(
    seconds: int, status: int | None, latency: float | None, user: str | None,
    jti: str | None, exp: int | None, flat_token: bool,
) -> None:
    token = {"jti": jti, "exp": exp}
    obj: dict[str, Any] = {"ts": seconds, "status": status, "latency_ms": latency, "user_id": user}
    if flat_token:
        obj.update({f"token.{key}": value for key, value in token.items()})
    else:
        obj["token"] = token
    e = event(build_app_parser({}), orjson.dumps(obj))
    assert e.ts == float(seconds)
    assert e.status == status
    assert e.duration_ms == latency
    assert e.user_id == user
    assert e.token_jti == jti
    assert e.token_exp == (None if exp is None else float(exp))


_JSONISH = json_values(["jti", "exp", "ip", "x"], max_list=3, max_leaves=15)


@settings(database=None, max_examples=400, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from([*DEFAULT_APP_FIELDS.values(), "token", "peer", "other"]), _JSONISH).map(
        orjson.dumps
    ),
))
def test_arbitrary_input_never_raises(line: bytes) -> None:
    result = build_app_parser({})(record(line))
    assert isinstance(result, (Event, DeadLetter))


@pytest.mark.parametrize(
    ("peer", "source_ip"),
    [("10.0.0.99:5555", "10.0.0.99"), ("[2001:db8::5]:443", "2001:db8::5"), ("2001:db8::5", "2001:db8::5")],
)
def test_the_peer_address_loses_its_port(billing: Parser, peer: str, source_ip: str) -> None:
    fused = event(billing, orjson.dumps({"ts": 1709290800, "peer": {"ip": peer}}))
    general = event(billing, orjson.dumps({"ts": 1709290800, "peer.ip": peer, "token": {"jti": "j"}}))
    assert fused.source_ip == general.source_ip == source_ip


def test_a_token_time_past_a_doubles_range_is_dropped_not_the_line(billing: Parser) -> None:
    e = event(billing, b'{"ts": 1709290800, "request_id": "r1", "token": {"jti": "j", "exp": 1e400}}')
    assert (e.request_id, e.token_jti, e.token_exp) == ("r1", "j", None)
    assert e.labels == (("gatewatch.out_of_range", "token_exp"),)
