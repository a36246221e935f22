"""Envoy json_format / typed_json_format access logs."""

from __future__ import annotations

import string
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.parsers import build_gateway_parser, compile_json_format
from ingest.records import Dataset, DeadLetter, Event, Origin
from tests.ingest.parsers.strategies import json_values
from tests.ingest.parsers.lines import line_helpers

ORIGIN = Origin(Dataset.GATEWAY, "gw-gateway", 3)
JWT = "envoy.filters.http.jwt_authn:jwt_payload"

# Istio's JSON access log format (meshConfig.accessLogEncoding: JSON).
ISTIO_JSON_FORMAT = {
    "start_time": "%START_TIME%",
    "route_name": "%ROUTE_NAME%",
    "method": "%REQ(:METHOD)%",
    "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
    "protocol": "%PROTOCOL%",
    "response_code": "%RESPONSE_CODE%",
    "response_flags": "%RESPONSE_FLAGS%",
    "response_code_details": "%RESPONSE_CODE_DETAILS%",
    "connection_termination_details": "%CONNECTION_TERMINATION_DETAILS%",
    "bytes_received": "%BYTES_RECEIVED%",
    "bytes_sent": "%BYTES_SENT%",
    "duration": "%DURATION%",
    "upstream_service_time": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    "x_forwarded_for": "%REQ(X-FORWARDED-FOR)%",
    "user_agent": "%REQ(USER-AGENT)%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "authority": "%REQ(:AUTHORITY)%",
    "upstream_host": "%UPSTREAM_HOST%",
    "upstream_cluster": "%UPSTREAM_CLUSTER%",
    "upstream_local_address": "%UPSTREAM_LOCAL_ADDRESS%",
    "downstream_local_address": "%DOWNSTREAM_LOCAL_ADDRESS%",
    "downstream_remote_address": "%DOWNSTREAM_REMOTE_ADDRESS%",
    "requested_server_name": "%REQUESTED_SERVER_NAME%",
    "upstream_transport_failure_reason": "%UPSTREAM_TRANSPORT_FAILURE_REASON%",
}

# Istio's documented sleep -> httpbin request (istio.io, "Envoy Access Logs"), as json_format writes it.
ISTIO_JSON_LINE = orjson.dumps({
    "start_time": "2020-11-25T21:26:18.409Z",
    "route_name": "default",
    "method": "GET",
    "path": "/status/418",
    "protocol": "HTTP/1.1",
    "response_code": "418",
    "response_flags": "-",
    "response_code_details": "via_upstream",
    "connection_termination_details": "-",
    "bytes_received": "0",
    "bytes_sent": "135",
    "duration": "4",
    "upstream_service_time": "4",
    "x_forwarded_for": "-",
    "user_agent": "curl/7.73.0-DEV",
    "request_id": "84961386-6d84-929d-98bd-c5aee93b5c88",
    "authority": "httpbin:8000",
    "upstream_host": "10.44.1.27:80",
    "upstream_cluster": "outbound|8000||httpbin.foo.svc.cluster.local",
    "upstream_local_address": "10.44.1.23:37652",
    "downstream_local_address": "10.0.45.184:8000",
    "downstream_remote_address": "10.44.1.23:46520",
    "requested_server_name": "-",
    "upstream_transport_failure_reason": "-",
}) + b"\n"

# A nested typed_json_format, as a gatewatch deployment might configure it.
TYPED_FORMAT: dict[str, Any] = {
    "@timestamp": "%START_TIME%",
    "schema": 2,  # a typed constant: ignored
    "http": {
        "request": {
            "id": "%REQ(X-REQUEST-ID)%",
            "line": "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%",
            "authority": "%REQ(:AUTHORITY)%",
        },
        "response": {
            "status": "%RESPONSE_CODE%",
            "flags": "%RESPONSE_FLAGS%",
            "details": "%RESPONSE_CODE_DETAILS%",
            "bytes": "%BYTES_SENT%",
        },
    },
    "timing": {"duration_ms": "%DURATION%", "upstream_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%"},
    "client": {
        "address": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "san": "%DOWNSTREAM_PEER_URI_SAN%",
        "tls": "%DOWNSTREAM_TLS_VERSION%",
    },
    "jwt": f"%DYNAMIC_METADATA({JWT})%",
    "authz": "%DYNAMIC_METADATA(envoy.filters.http.ext_authz)%",
    "tenant": "%REQ(X-TENANT)%",
    "duration_text": "%DURATION%.0",  # text mixed in: a string even in typed JSON
}

TYPED_LINE = orjson.dumps({
    "@timestamp": "2024-03-01T11:00:00.125Z",
    "schema": 2,
    "http": {
        "request": {
            "id": "5f0c8a36-4f86-4a5e-9d1e-0b7d4f2d9a11",
            "line": "POST /v1/invoices HTTP/2",
            "authority": "billing.example.com",
        },
        "response": {"status": 401, "flags": "-", "details": "jwt_authn_access_denied{Jwt_is_expired}", "bytes": 48},
    },
    "timing": {"duration_ms": 3, "upstream_ms": None},
    "client": {"address": "[2001:db8::7]:51234", "san": "spiffe://cluster.local/ns/edge/sa/client", "tls": "TLSv1.3"},
    "jwt": {"iss": "https://auth.example.com", "sub": "user-17", "org": "org-42", "jti": "a1b2",
            "exp": 1709290800, "iat": 1709287200, "aud": ["billing"]},
    "authz": {"policy": "deny-expired", "checks": 2},
    "tenant": None,
    "duration_text": "3.0",
})


record, event, dead = line_helpers(ORIGIN)


def test_envoy_documentation_example() -> None:
    # Envoy's json_format example, plus the START_TIME every gatewatch format needs.
    parser = compile_json_format({
        "start_time": "%START_TIME%",
        "protocol": "%PROTOCOL%",
        "duration": "%DURATION%",
        "my_custom_header": "%REQ(MY_CUSTOM_HEADER)%",
    })
    e = event(parser, b'{"start_time": "2016-04-15T20:17:00.310Z", "protocol": "HTTP/1.1", "duration": "123", '
                      b'"my_custom_header": "value_of_MY_CUSTOM_HEADER"}')
    assert (e.ts, e.protocol, e.duration_ms) == (1460751420.31, "HTTP/1.1", 123.0)
    assert e.labels == (("req.my_custom_header", "value_of_MY_CUSTOM_HEADER"),)


def test_istio_json_format() -> None:
    e = event(build_gateway_parser(None, ISTIO_JSON_FORMAT), ISTIO_JSON_LINE)
    assert e.ts == 1606339578.409
    assert (e.method, e.path, e.protocol, e.status) == ("GET", "/status/418", "HTTP/1.1", 418)
    assert (e.response_flags, e.response_code_details) == ((), "via_upstream")
    assert (e.bytes_received, e.bytes_sent, e.duration_ms, e.upstream_service_time_ms) == (0, 135, 4.0, 4.0)
    assert (e.forwarded_for, e.user_agent) == (None, "curl/7.73.0-DEV")
    assert e.request_id == "84961386-6d84-929d-98bd-c5aee93b5c88"
    assert (e.authority, e.upstream_host, e.route_name) == ("httpbin:8000", "10.44.1.27:80", "default")
    assert e.upstream_cluster == "outbound|8000||httpbin.foo.svc.cluster.local"
    assert e.source_ip == "10.44.1.23"
    assert e.labels == (
        ("downstream_local_address", "10.0.45.184:8000"),
        ("upstream_local_address", "10.44.1.23:37652"),
    )


def test_typed_and_nested() -> None:
    e = event(compile_json_format(TYPED_FORMAT), TYPED_LINE)
    assert e.ts == 1709290800.125
    assert e.request_id == "5f0c8a36-4f86-4a5e-9d1e-0b7d4f2d9a11"
    assert (e.method, e.path, e.protocol) == ("POST", "/v1/invoices", "HTTP/2")
    assert (e.status, e.response_flags, e.bytes_sent) == (401, (), 48)
    assert e.response_code_details == "jwt_authn_access_denied{Jwt_is_expired}"
    assert (e.duration_ms, e.upstream_service_time_ms) == (3.0, None)
    assert (e.source_ip, e.peer_identity, e.tls_version) == (
        "2001:db8::7", "spiffe://cluster.local/ns/edge/sa/client", "TLSv1.3",
    )
    assert (e.token_sub, e.token_org, e.token_jti) == ("user-17", "org-42", "a1b2")
    assert (e.token_exp, e.token_iat) == (1709290800.0, 1709287200.0)
    assert e.labels == (
        ("dynamic_metadata.envoy.filters.http.ext_authz", '{"policy":"deny-expired","checks":2}'),
    )


def test_the_same_mapping_reads_json_format_strings() -> None:
    as_strings = orjson.loads(TYPED_LINE)
    as_strings["http"]["response"].update(status="401", bytes="48")
    as_strings["timing"] = {"duration_ms": "3", "upstream_ms": "-"}
    as_strings["jwt"] = orjson.dumps(as_strings["jwt"]).decode()
    as_strings["authz"] = "-"
    as_strings["tenant"] = "-"
    e = event(compile_json_format(TYPED_FORMAT), orjson.dumps(as_strings))
    assert (e.status, e.bytes_sent, e.duration_ms, e.upstream_service_time_ms) == (401, 48, 3.0, None)
    assert (e.token_sub, e.token_exp) == ("user-17", 1709290800.0)
    assert e.labels == ()


def test_missing_keys_and_nulls_are_absent() -> None:
    e = event(compile_json_format(TYPED_FORMAT), b'{"@timestamp": "2024-03-01T11:00:00Z", "http": null, "client": {}}')
    assert e.ts == 1709290800.0
    assert (e.status, e.method, e.source_ip, e.token_sub) == (None, None, None, None)


def test_jwt_claims_mapped_one_by_one() -> None:
    parser = compile_json_format({
        "ts": "%START_TIME%",
        "token": {claim: f"%DYNAMIC_METADATA({JWT}:{claim})%" for claim in ("jti", "sub", "org_id", "exp", "iat")},
    })
    e = event(parser, b'{"ts": "2024-03-01T11:00:00Z", "token": {"jti": "j-1", "sub": "s-1", "org_id": "o-1", '
                      b'"exp": 1709290800, "iat": "1709287200"}}')
    assert (e.token_jti, e.token_sub, e.token_org, e.token_exp, e.token_iat) == (
        "j-1", "s-1", "o-1", 1709290800.0, 1709287200.0,
    )


def test_a_structured_claim_is_kept_as_a_label_not_a_dead_letter() -> None:
    parser = compile_json_format({"ts": "%START_TIME%", "org": f"%DYNAMIC_METADATA({JWT}:org)%"})
    e = event(parser, b'{"ts": "2024-03-01T11:00:00Z", "org": {"id": "org-42", "tier": "gold"}}')
    assert e.token_org is None
    assert e.labels == ((f"dynamic_metadata.{JWT}:org", '{"id":"org-42","tier":"gold"}'),)


def test_start_time_with_strftime_in_json() -> None:
    parser = compile_json_format({"ts": "%START_TIME(%s.%3f)%", "code": "%RESPONSE_CODE%"})
    assert event(parser, b'{"ts": "1527590590.528", "code": 200}').ts == 1527590590.528


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"@timestamp": "2024-03-01T11:00:00Z", "http": {"response": {"status": 4', "truncated"),
        (b"[2016-04-15T20:17:00.310Z] \"GET / HTTP/1.1\" 200", "invalid_json"),
        (b"[1, 2]", "not_an_object"),
        (b'"just a string"', "not_an_object"),
        (b'{"@timestamp": \xff}', "invalid_utf8"),
        (b'{"@timestamp": "2024-03-01T11:00:00Z", "http": {"request": {"line": "GET"}}}', "format_mismatch"),
        (b'{"@timestamp": "2024-03-01T11:00:00Z", "http": {"response": {"status": "teapot"}}}', "invalid_value"),
        (b'{"@timestamp": "yesterday"}', "invalid_value"),
        (b'{"http": {"response": {"status": 200}}}', "missing_timestamp"),
        (b'{"@timestamp": "2024-03-01T11:00:00Z", "http": {"response": {"status": {"code": 200}}}}', "invalid_value"),
        (b'{"pad": "' + b"x" * 5000 + b'"}', "oversized"),
    ],
)
def test_dead_letters(line: bytes, reason: str) -> None:
    letter = dead(compile_json_format(TYPED_FORMAT, max_line_bytes=4096), line)
    assert (letter.reason, letter.origin, letter.line) == (reason, ORIGIN, line)


def test_broken_format_names_its_key() -> None:
    with pytest.raises(ValueError, match=r"json_format http\.request\.line: format: no valid command operator"):
        compile_json_format({"ts": "%START_TIME%", "http": {"request": {"line": "%REQ(:METHOD) %PROTOCOL%"}}})
    with pytest.raises(ValueError, match=r"json_format h: format: REQ at position 0 needs an argument"):
        compile_json_format({"h": "%REQ%"})


# ---- properties -------------------------------------------------------------

_TEXT = st.text(alphabet=st.characters(codec="utf-8"), min_size=1, max_size=30).filter(
    lambda text: text != "-"
)


@settings(database=None, max_examples=300, deadline=None)
@given(
    seconds=st.integers(946684800, 4102444799),
    status=st.one_of(st.none(), st.integers(100, 599)),
    duration=st.one_of(st.none(), st.integers(0, 10**9)),
    flags=st.lists(st.sampled_from(["UF", "URX", "RL", "UAEX", "XYZ"]), max_size=3),
    user_agent=st.one_of(st.none(), _TEXT),
    sub=st.one_of(st.none(), _TEXT),
    typed=st.booleans(),
)
def test_round_trip(
    seconds: int, status: int | None, duration: int | None, flags: list[str],
    user_agent: str | None, sub: str | None, typed: bool,
) -> None:
    fmt = {
        "ts": "%START_TIME(%s)%",
        "response": {"code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%"},
        "duration": "%DURATION%",
        "ua": "%REQ(USER-AGENT)%",
        "sub": f"%DYNAMIC_METADATA({JWT}:sub)%",
    }

    def render(value: Any) -> Any:
        if typed:
            return value
        return "-" if value is None else str(value)

    line = orjson.dumps({
        "ts": str(seconds),
        "response": {"code": render(status), "flags": ",".join(flags) or "-"},
        "duration": render(duration),
        "ua": render(user_agent),
        "sub": render(sub),
    })
    e = event(compile_json_format(fmt), line)
    assert e.ts == float(seconds)
    assert e.status == status
    assert e.response_flags == tuple(flags)
    assert e.duration_ms == (None if duration is None else float(duration))
    assert e.user_agent == user_agent
    assert e.token_sub == sub


_JSONISH = json_values(["http", "client", "jwt", "x"], max_list=4, max_leaves=20)


@settings(database=None, max_examples=400, deadline=None)
@given(st.one_of(
    st.binary(max_size=300),
    st.dictionaries(st.sampled_from(["@timestamp", "http", "client", "jwt", "authz", "tenant", "duration_text"]),
                    _JSONISH).map(orjson.dumps),
    st.dictionaries(st.text(alphabet=string.ascii_letters, max_size=5), _JSONISH).map(orjson.dumps),
))
def test_arbitrary_input_never_raises(line: bytes) -> None:
    for parser in (compile_json_format(TYPED_FORMAT), compile_json_format(ISTIO_JSON_FORMAT)):
        result = parser(record(line))
        assert isinstance(result, (Event, DeadLetter))


def test_istio_json_format_with_upstream_cluster_raw() -> None:
    """Istio's current JSON format (EnvoyJSONLogFormatIstio) writes upstream_cluster from %UPSTREAM_CLUSTER_RAW%."""
    current = {**ISTIO_JSON_FORMAT, "upstream_cluster": "%UPSTREAM_CLUSTER_RAW%"}
    e = event(build_gateway_parser(None, current), ISTIO_JSON_LINE)
    assert e.upstream_cluster == "outbound|8000||httpbin.foo.svc.cluster.local"


@pytest.mark.parametrize(("hops", "client"), [(0, "198.51.100.66"), (1, "203.0.113.5")])
@pytest.mark.parametrize("bytes_sent", [5, 1e30])  # 1e30: out of range, read by the general path
def test_the_client_is_read_from_the_right_of_x_forwarded_for(hops: int, client: str, bytes_sent: float) -> None:
    mapping = {"ts": "%START_TIME%", "xff": "%REQ(X-FORWARDED-FOR)%", "bytes": "%BYTES_SENT%"}
    parser = build_gateway_parser(None, mapping, xff_num_trusted_hops=hops)
    chain = "10.9.9.9, 203.0.113.5, 198.51.100.66"
    line = orjson.dumps({"ts": "2026-12-07T10:00:00Z", "xff": chain, "bytes": bytes_sent})
    e = event(parser, line)
    assert (e.forwarded_for, e.source_ip, e.bytes_sent) == (chain, client, 5 if bytes_sent == 5 else None)


def test_a_number_past_a_doubles_range_is_dropped_not_the_line() -> None:
    parser = build_gateway_parser(None, {"ts": "%START_TIME%", "bytes": "%BYTES_SENT%", "rid": "%REQ(X-REQUEST-ID)%"})
    e = event(parser, b'{"ts": "2026-12-07T10:00:00Z", "bytes": 1e400, "rid": "r1"}')
    assert (e.request_id, e.bytes_sent, e.labels) == ("r1", None, (("gatewatch.out_of_range", "bytes_sent"),))
    letter = parser(record(b'{"ts": 1e400, "rid": "r2"}'))
    assert isinstance(letter, DeadLetter) and letter.reason == "invalid_value"  # no time: no event


def test_a_header_of_quotes_escaped_by_envoy_past_64_kib_is_still_an_event_by_default() -> None:
    """A flood trial: a 33,000-byte User-Agent of ``"`` (inside Envoy's 60 KiB header limit) made a 66 KB JSON line,
    an oversized dead letter under the old 64 KiB default: its token replay went unseen, Billing's line a bypass."""
    from gatewatch.config import parse_config

    gateway = parse_config({"gateway": {"json_format": ISTIO_JSON_FORMAT}}).gateway
    line = orjson.dumps({**orjson.loads(ISTIO_JSON_LINE), "user_agent": '"' * 33_000}) + b"\n"
    assert len(line) > 66_000
    e = event(build_gateway_parser(None, ISTIO_JSON_FORMAT, gateway.max_line_bytes), line)
    assert e.user_agent == '"' * 33_000 and e.request_id == "84961386-6d84-929d-98bd-c5aee93b5c88"


def test_a_downstream_address_that_is_no_ip_leaves_the_client_to_x_forwarded_for() -> None:
    mapping = {"t": "%START_TIME%", "peer": "%DOWNSTREAM_REMOTE_ADDRESS%", "xff": "%REQ(X-FORWARDED-FOR)%"}
    parser = compile_json_format(mapping)
    line = {"t": "2025-03-08T02:20:32.588Z", "peer": "/var/run/envoy/ingress.sock", "xff": "10.9.9.9, 203.0.113.7"}
    assert event(parser, orjson.dumps(line)).source_ip == "203.0.113.7"
    assert event(parser, orjson.dumps({**line, "peer": "10.1.0.4:5123"})).source_ip == "10.1.0.4"
