"""Envoy text access logs, with lines from Envoy's, Istio's and Ambassador's documentation."""

from __future__ import annotations


import pytest

from ingest.errors import FormatError
from ingest.parsers import ENVOY_DEFAULT_FORMAT, Parser, build_gateway_parser, compile_text_format
from ingest.parsers.envoy_text import compile_text_pattern
from ingest.records import Dataset, Origin
from tests.ingest.parsers.lines import line_helpers

ORIGIN = Origin(Dataset.GATEWAY, "/var/log/envoy/access.log", 42)

# Istio's default text format (istio.io, "Envoy Access Logs").
ISTIO_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER% %UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% '
    "%DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)

# A security-minded gateway format: mTLS peer, JWT claims from jwt_authn's payload_in_metadata.
JWT = "envoy.filters.http.jwt_authn:jwt_payload"
SECURITY_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" %DOWNSTREAM_REMOTE_ADDRESS% '
    '"%DOWNSTREAM_PEER_URI_SAN%" %DOWNSTREAM_TLS_VERSION% '
    f"%DYNAMIC_METADATA({JWT}:jti)% %DYNAMIC_METADATA({JWT}:sub)% "
    f"%DYNAMIC_METADATA({JWT}:org_id)% %DYNAMIC_METADATA({JWT}:exp)% %DYNAMIC_METADATA({JWT}:iat)% "
    "%UPSTREAM_CLUSTER% %ROUTE_NAME% %REQ(X-TENANT)%\n"
)

# Envoy's documented example of its default format.
ENVOY_DOC_LINE = (
    '[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" '
    '"nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "tcp://10.0.2.1:80"\n'
)
T_2016_04_15_20_17_00 = 1460751420


record, event, dead = line_helpers(ORIGIN)


@pytest.fixture(scope="module")
def default() -> Parser:
    return build_gateway_parser()


def test_envoy_documentation_example(default: Parser) -> None:
    e = event(default, ENVOY_DOC_LINE)
    assert e.ts == 1460751420.31
    assert e.dataset is Dataset.GATEWAY and e.origin == ORIGIN
    assert (e.method, e.path, e.protocol, e.status) == ("POST", "/api/v1/locations", "HTTP/2", 204)
    assert e.response_flags == ()
    assert (e.bytes_received, e.bytes_sent, e.duration_ms, e.upstream_service_time_ms) == (154, 0, 226.0, 100.0)
    assert e.forwarded_for == "10.0.35.28"
    assert e.source_ip == "10.0.35.28"  # normalize: the X-Forwarded-For entry the gateway appended
    assert e.user_agent == "nsq2http"
    assert e.request_id == "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"
    assert e.authority == "locations"
    assert e.upstream_host == "tcp://10.0.2.1:80"
    assert e.labels == ()


def test_envoy_1_37_full_header_operator_names_read_as_req_and_resp(default: Parser) -> None:
    # Envoy 1.37 documents its default format with %REQUEST_HEADER(..)% / %RESPONSE_HEADER(..)% (a red-team trial:
    # read as labels, every request lost its id, client and path, and became a gateway bypass).
    full_names = ENVOY_DEFAULT_FORMAT.replace("%REQ(", "%REQUEST_HEADER(").replace("%RESP(", "%RESPONSE_HEADER(")
    assert "%REQUEST_HEADER(X-REQUEST-ID)%" in full_names
    assert event(compile_text_format(full_names), ENVOY_DOC_LINE) == event(default, ENVOY_DOC_LINE)
    labelled = event(compile_text_format("[%START_TIME%] %REQUEST_HEADER(X-TENANT)% %RESPONSE_TRAILER(GRPC-STATUS)%"),
                     "[2016-04-15T20:17:00.310Z] acme 0")  # fmt: skip
    assert labelled.labels == (("req.x-tenant", "acme"), ("trailer.grpc-status", "0"))


def test_default_format_constant_is_envoys() -> None:
    assert ENVOY_DEFAULT_FORMAT.startswith('[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% ')
    assert ENVOY_DEFAULT_FORMAT.endswith('"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"\n')


def test_without_line_ending_and_with_crlf(default: Parser) -> None:
    assert event(default, ENVOY_DOC_LINE.rstrip("\n")).request_id == "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"
    assert event(default, ENVOY_DOC_LINE.rstrip("\n") + "\r\n").upstream_host == "tcp://10.0.2.1:80"


@pytest.mark.parametrize(
    ("line", "ts", "status", "flags", "upstream_service_time_ms", "upstream_host"),
    [
        # Ambassador's blog, "Understanding Envoy Proxy HTTP Access Logs".
        (
            'ACCESS [2019-08-22T09:14:59.499Z] "GET /.ambassador-internal/openapi-docs HTTP/1.1" 200 - 0 989 5 1 '
            '"10.52.2.21" "Go-http-client/1.1" "bc391742-0ad4-4f0d-9e00-6e81266a1480" "ambassador" '
            '"10.55.253.138:5000"',
            1566465299.499, 200, (), 1.0, "10.55.253.138:5000",
        ),
        (
            'ACCESS [2019-08-22T09:14:59.506Z] "GET /callback/.ambassador-internal/openapi-docs HTTP/1.1" 503 UH 0 19 '
            '3 - "10.52.2.21" "Go-http-client/1.1" "c8d23a4b-c203-468a-abfb-ef47aca58e23" "ambassador" "-"',
            1566465299.506, 503, ("UH",), None, None,
        ),
    ],
)
def test_ambassador_access_prefix(
    default: Parser, line: str, ts: float, status: int, flags: tuple[str, ...],
    upstream_service_time_ms: float | None, upstream_host: str | None,
) -> None:
    e = event(default, line)
    assert (e.ts, e.status, e.response_flags) == (ts, status, flags)
    assert (e.upstream_service_time_ms, e.upstream_host) == (upstream_service_time_ms, upstream_host)
    assert (e.forwarded_for, e.source_ip, e.user_agent, e.authority) == (
        "10.52.2.21", "10.52.2.21", "Go-http-client/1.1", "ambassador",
    )


def _doc_line(status: str, flags: str, **changes: str) -> str:
    line = ENVOY_DOC_LINE.replace('HTTP/2" 204 - ', f'HTTP/2" {status} {flags} ')
    for old, new in changes.items():
        line = line.replace(old, new)
    return line


@pytest.mark.parametrize(
    ("status", "flags", "expected_status", "expected_flags"),
    [
        ("0", "DC", None, ("DC",)),  # the client went away before a response began
        ("503", "UF,URX", 503, ("UF", "URX")),
        ("503", "UH", 503, ("UH",)),
        ("429", "RL", 429, ("RL",)),
        ("403", "UAEX", 403, ("UAEX",)),
        ("401", "XYZ", 401, ("XYZ",)),  # a custom flag registered by an extension
        ("503", "UF,XYZ,URX", 503, ("UF", "XYZ", "URX")),
        ("-", "-", None, ()),  # TCP: no response code
    ],
)
def test_response_codes_and_flags(
    default: Parser, status: str, flags: str, expected_status: int | None, expected_flags: tuple[str, ...]
) -> None:
    e = event(default, _doc_line(status, flags))
    assert (e.status, e.response_flags) == (expected_status, expected_flags)


@pytest.mark.parametrize(
    ("stamp", "ts"),
    [
        ("2016-04-15T20:17:00.310Z", 1460751420.31),
        ("2016-04-15T20:17:00Z", 1460751420.0),
        ("2016-04-15T22:17:00.310+02:00", 1460751420.31),
        ("2016-04-15T22:17:00+0200", 1460751420.0),
        ("2016-04-15T15:17:00.310123-05:00", 1460751420.310123),
        ("2016-04-15T20:17:00.3Z", 1460751420.3),
        ("2016-04-15T20:17:00.310", 1460751420.31),  # naive: taken as UTC
    ],
)
def test_start_time_fractions_and_offsets(default: Parser, stamp: str, ts: float) -> None:
    assert event(default, ENVOY_DOC_LINE.replace("2016-04-15T20:17:00.310Z", stamp)).ts == ts


ISTIO_SLEEP = (
    '[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 4 4 "-" "curl/7.73.0-DEV" '
    '"84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "10.44.1.27:80" '
    "outbound|8000||httpbin.foo.svc.cluster.local 10.44.1.23:37652 10.0.45.184:8000 10.44.1.23:46520 - default"
)
ISTIO_HTTPBIN = (
    '[2020-11-25T21:26:18.409Z] "GET /status/418 HTTP/1.1" 418 - via_upstream - "-" 0 135 3 1 "-" "curl/7.73.0-DEV" '
    '"84961386-6d84-929d-98bd-c5aee93b5c88" "httpbin:8000" "127.0.0.1:80" inbound|8000|| 127.0.0.1:41854 '
    "10.44.1.27:80 10.44.1.23:37652 outbound_.8000_._.httpbin.foo.svc.cluster.local default"
)
# Istio ingress lines published in a public repository (fredcoq/kubefrog-kvmserver).
ISTIO_EXT_AUTHZ = (
    '[2024-06-02T13:35:27.054Z] "GET / HTTP/2" 302 UAEX ext_authz_denied - "-" 0 387 16 - "192.168.0.24" '
    '"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0" '
    '"1d3ec87f-d974-4521-b5ac-23404817a56a" "kubeflow.kubefrog.fr" "-" '
    "outbound|80||centraldashboard.kubeflow.svc.cluster.local - 10.0.0.196:8443 192.168.0.24:41604 "
    "kubeflow.kubefrog.fr -"
)
# The published line stops before ROUTE_NAME; completed with "-".
ISTIO_RESET = (
    '[2024-06-02T13:24:57.930Z] "GET /resources/ik3tm/welcome/keycloak/img/favicon.ico HTTP/2" 0 - '
    'http2.remote_reset - "-" 0 0 0 - "192.168.0.24" '
    '"Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0" '
    '"9f69865b-eed1-409b-8c12-12436234a191" "auth.kubefrog.fr" "10.0.0.159:8080" '
    "outbound|80||keycloak.auth.svc.cluster.local 10.0.1.244:35794 10.0.1.244:8443 192.168.0.24:8459 "
    "auth.kubefrog.fr -"
)


@pytest.fixture(scope="module")
def istio() -> Parser:
    return compile_text_format(ISTIO_FORMAT)


def test_istio_documentation_example(istio: Parser) -> None:
    sleep, httpbin = event(istio, ISTIO_SLEEP), event(istio, ISTIO_HTTPBIN)
    assert sleep.ts == httpbin.ts == 1606339578.409
    assert (sleep.status, sleep.response_code_details, sleep.response_flags) == (418, "via_upstream", ())
    assert (sleep.duration_ms, sleep.upstream_service_time_ms) == (4.0, 4.0)
    assert sleep.upstream_cluster == "outbound|8000||httpbin.foo.svc.cluster.local"
    assert sleep.source_ip == "10.44.1.23"  # DOWNSTREAM_REMOTE_ADDRESS without its port
    assert sleep.forwarded_for is None
    assert sleep.route_name == "default"
    assert sleep.labels == (
        ("downstream_local_address", "10.0.45.184:8000"),
        ("upstream_local_address", "10.44.1.23:37652"),
    )
    assert httpbin.upstream_cluster == "inbound|8000||"
    assert dict(httpbin.labels)["requested_server_name"] == "outbound_.8000_._.httpbin.foo.svc.cluster.local"


def test_istio_ext_authz_denial(istio: Parser) -> None:
    e = event(istio, ISTIO_EXT_AUTHZ)
    assert (e.ts, e.status, e.response_flags) == (1717335327.054, 302, ("UAEX",))
    assert e.response_code_details == "ext_authz_denied"
    assert e.upstream_host is None and e.route_name is None
    assert e.source_ip == "192.168.0.24"
    assert e.user_agent == "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:126.0) Gecko/20100101 Firefox/126.0"


def test_istio_downstream_reset_has_no_status(istio: Parser) -> None:
    e = event(istio, ISTIO_RESET)
    assert e.status is None  # RESPONSE_CODE 0
    assert e.response_code_details == "http2.remote_reset"
    assert (e.bytes_received, e.bytes_sent, e.duration_ms) == (0, 0, 0.0)


@pytest.fixture(scope="module")
def security() -> Parser:
    return compile_text_format(SECURITY_FORMAT)


SECURITY_LINE = (
    '[2024-03-01T12:00:00.250+01:00] "POST /v1/invoices HTTP/2" 401 - jwt_authn_access_denied{Jwt_is_expired} '
    '120 48 3 "5f0c8a36-4f86-4a5e-9d1e-0b7d4f2d9a11" "billing.example.com" [2001:db8::7]:51234 '
    '"spiffe://cluster.local/ns/edge/sa/client" TLSv1.3 '
    "3f1d2c8e-jti 7c9e6679-sub org-42 1709290800 1709287200 billing_cluster billing_route acme\n"
)


def test_security_format_with_jwt_claims(security: Parser) -> None:
    e = event(security, SECURITY_LINE)
    assert e.ts == 1709290800.25
    assert (e.method, e.path, e.status) == ("POST", "/v1/invoices", 401)
    assert e.response_code_details == "jwt_authn_access_denied{Jwt_is_expired}"
    assert e.source_ip == "2001:db8::7"
    assert e.peer_identity == "spiffe://cluster.local/ns/edge/sa/client"
    assert e.tls_version == "TLSv1.3"
    assert (e.token_jti, e.token_sub, e.token_org) == ("3f1d2c8e-jti", "7c9e6679-sub", "org-42")
    assert (e.token_exp, e.token_iat) == (1709290800.0, 1709287200.0)
    assert (e.upstream_cluster, e.route_name) == ("billing_cluster", "billing_route")
    assert e.labels == (("req.x-tenant", "acme"),)


def test_security_format_without_a_token(security: Parser) -> None:
    line = SECURITY_LINE.replace("3f1d2c8e-jti 7c9e6679-sub org-42 1709290800 1709287200", "- - - - -")
    e = event(security, line.replace('"spiffe://cluster.local/ns/edge/sa/client"', '"-"'))
    assert (e.token_jti, e.token_sub, e.token_org, e.token_exp, e.token_iat) == (None,) * 5
    assert e.peer_identity is None


@pytest.mark.parametrize(
    ("address", "source_ip"),
    [
        ("10.44.1.23:46520", "10.44.1.23"),
        ("[::1]:443", "::1"),
        ("[2001:db8::7]:51234", "2001:db8::7"),
        ("/var/run/envoy.sock", None),  # a pipe names no client: X-Forwarded-For would (none here)
    ],
)
def test_downstream_remote_address_loses_its_port(address: str, source_ip: str | None) -> None:
    parser = compile_text_format("[%START_TIME%] %DOWNSTREAM_REMOTE_ADDRESS% %DOWNSTREAM_DIRECT_REMOTE_ADDRESS%")
    e = event(parser, f"[2016-04-15T20:17:00.310Z] {address} 10.0.0.9:1234")
    assert e.source_ip == source_ip
    assert e.labels == (("downstream_direct_remote_address", "10.0.0.9:1234"),)


def test_jwt_payload_logged_as_json_object() -> None:
    parser = compile_text_format(f"[%START_TIME%] %RESPONSE_CODE% %DYNAMIC_METADATA({JWT})% %UPSTREAM_HOST%")
    payload = (
        '{"iss":"https://auth.example.com","sub":"user-17","org_id":"org-42","jti":"a1b2",'
        '"exp":1709290800,"iat":1709287200,"aud":["billing"],"scope":"invoices:write"}'
    )
    e = event(parser, f"[2024-03-01T11:00:00Z] 200 {payload} 10.0.2.1:80")
    assert (e.token_sub, e.token_org, e.token_jti) == ("user-17", "org-42", "a1b2")
    assert (e.token_exp, e.token_iat) == (1709290800.0, 1709287200.0)
    assert e.upstream_host == "10.0.2.1:80"
    assert e.labels == ()


def test_jwt_payload_quoted_with_spaces_and_whole_namespace() -> None:
    parser = compile_text_format(
        '[%START_TIME%] "%DYNAMIC_METADATA(envoy.filters.http.jwt_authn)%" "%REQ(USER-AGENT)%"'
    )
    metadata = '{"jwt_payload": {"sub": "user 17", "org": "org-42", "exp": 1709290800}}'
    e = event(parser, f'[2024-03-01T11:00:00Z] "{metadata}" "curl/8.4.0"')
    assert (e.token_sub, e.token_org, e.token_exp) == ("user 17", "org-42", 1709290800.0)
    assert e.user_agent == "curl/8.4.0"


def test_jwt_payload_cut_by_max_length_is_kept_as_a_label() -> None:
    parser = compile_text_format(f"[%START_TIME%] %DYNAMIC_METADATA({JWT}):20% %RESPONSE_CODE%")
    e = event(parser, '[2024-03-01T11:00:00Z] {"sub":"user-17","ex 200')
    assert e.token_sub is None and e.status == 200
    assert e.labels == ((f"dynamic_metadata.{JWT}", '{"sub":"user-17","ex'),)


def test_other_operators_become_labels_named_after_them() -> None:
    parser = compile_text_format(
        "[%START_TIME%] %REQ(X-TENANT)% %RESP(CONTENT-TYPE)% %TRAILER(GRPC-STATUS)% %HOSTNAME% "
        "%ENVIRONMENT(POD_NAME)% %DYNAMIC_METADATA(com.test.my_filter:test_key)% %REQ(X-ENVOY-ORIGINAL-PATH)%"
    )
    e = event(parser, "[2016-04-15T20:17:00.310Z] acme application/json 0 gw-7f9 gw-pod-1 foo /orig")
    assert e.labels == (
        ("dynamic_metadata.com.test.my_filter:test_key", "foo"),
        ("environment.pod_name", "gw-pod-1"),
        ("hostname", "gw-7f9"),
        ("req.x-envoy-original-path", "/orig"),
        ("req.x-tenant", "acme"),
        ("resp.content-type", "application/json"),
        ("trailer.grpc-status", "0"),
    )


def test_long_response_flags_are_stored_as_short_codes() -> None:
    parser = compile_text_format("[%START_TIME%] %RESPONSE_FLAGS_LONG%")
    e = event(parser, "[2016-04-15T20:17:00Z] UpstreamConnectionFailure,UpstreamRetryLimitExceeded,MyCustomFlag")
    assert e.response_flags == ("UF", "URX", "MyCustomFlag")


def test_header_max_length_and_alternatives() -> None:
    parser = compile_text_format("[%START_TIME%] %REQ(:PATH?X-ENVOY-ORIGINAL-PATH):10% %REQ(HOST)%")
    e = event(parser, "[2016-04-15T20:17:00Z] /api/v1/lo example.com")
    assert (e.path, e.labels) == ("/api/v1/lo", ())  # the path cut at 10 characters, still the path
    assert e.authority == "example.com"


def test_percent_literal_and_adjacent_operators() -> None:
    parser = compile_text_format("[%START_TIME%] 100%% %RESPONSE_CODE%%PROTOCOL% %BYTES_SENT%")
    e = event(parser, "[2016-04-15T20:17:00Z] 100% 200HTTP/1.1 12")
    assert (e.status, e.protocol, e.bytes_sent) == (200, "HTTP/1.1", 12)
    e = event(parser, "[2016-04-15T20:17:00Z] 100% -- 12")
    assert (e.status, e.protocol) == (None, None)


def test_the_same_field_twice_keeps_the_value_that_is_set() -> None:
    parser = compile_text_format("[%START_TIME%] %REQ(:PATH)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%")
    assert event(parser, "[2016-04-15T20:17:00Z] /a -").path == "/a"
    assert event(parser, "[2016-04-15T20:17:00Z] - /b").path == "/b"


@pytest.mark.parametrize(
    ("fmt", "value", "ts"),
    [
        ("%START_TIME(%Y/%m/%dT%H:%M:%S%z)%", "2016/04/15T22:17:00+0200", 1460751420.0),
        ("%START_TIME(%Y/%m/%dT%H:%M:%S%z)%", "2016/04/15T14:47:00-0530", 1460751420.0),
        ("%START_TIME(%s)%", "1527590590", 1527590590.0),
        ("%START_TIME(%s.%3f)%", "1527590590.528", 1527590590.528),  # Envoy's doc example
        ("%START_TIME(%s.%6f)%", "1527590590.528123", 1527590590.528123),
        ("%START_TIME(%s.%9f)%", "1527590590.528123456", 1527590590.528123456),
        ("%START_TIME(%Y/%m/%dT%H:%M:%S%z %s)%", "2018/05/29T10:43:10+0000 1527590590", 1527590590.0),
        ("%START_TIME(%Y-%m-%dT%H:%M:%S.%f%z)%", "2018-05-29T10:43:10.528000000+0000", 1527590590.528),
        ("%START_TIME(%Y-%m-%dT%H:%M:%E3SZ)%", "2018-05-29T10:43:10.528Z", 1527590590.528),
        ("%START_TIME(%d/%b/%Y:%H:%M:%S %z)%", "29/May/2018:12:43:10 +0200", 1527590590.0),
        ("%START_TIME(%F %T)%", "2018-05-29 10:43:10", 1527590590.0),
    ],
)
def test_start_time_with_a_strftime_format(fmt: str, value: str, ts: float) -> None:
    parser = compile_text_format(f"[{fmt}] %RESPONSE_CODE%")
    e = event(parser, f"[{value}] 200")
    assert (e.ts, e.status) == (ts, 200)


def test_impossible_start_time_is_an_invalid_value() -> None:
    parser = compile_text_format("[%START_TIME(%Y/%m/%dT%H:%M:%S)%] %RESPONSE_CODE%")
    letter = dead(parser, "[2016/13/45T20:17:00] 200")
    assert letter.reason == "invalid_value"
    assert "START_TIME" in letter.detail


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        ("[%START_TIME%] %REQ%", "REQ at position 15 needs an argument"),
        ("[%START_TIME%] %REQ()%", "REQ at position 15 needs an argument"),
        ("[%START_TIME%] %REQ(A?B?C)%", "REQ(A?B?C) at position 15"),
        ("[%START_TIME%] %RESPONSE_CODE", "no valid command operator at position 15"),
        ("[%START_TIME%] 100% done", "no valid command operator at position 18"),
        ("[%START_TIME%] %response_code%", "no valid command operator at position 15"),
        ("[%START_TIME(%Q)%] %RESPONSE_CODE%", "unsupported specifier %Q"),
        ("%DYNAMIC_METADATA%", "DYNAMIC_METADATA at position 0 needs an argument"),
        ("plain text only\n", "no command operator"),
        ("", "no command operator"),
    ],
)
def test_broken_formats_raise_at_compile_time(fmt: str, message: str) -> None:
    with pytest.raises(FormatError, match="format") as error:
        compile_text_format(fmt)
    assert message in str(error.value)


def test_unknown_operators_never_break_compilation() -> None:
    compile_text_format("%START_TIME% %SOME_FUTURE_OPERATOR(arg:x):12% %UPSTREAM_PEER_CERT_V_END(%Y)%")


def test_build_gateway_parser_rejects_two_formats() -> None:
    with pytest.raises(FormatError, match="not both"):
        build_gateway_parser(format=ENVOY_DEFAULT_FORMAT, json_format={"ts": "%START_TIME%"})


def test_build_gateway_parser_honours_max_line_bytes() -> None:
    parser = build_gateway_parser(ENVOY_DEFAULT_FORMAT, None, 100)
    assert dead(parser, ENVOY_DOC_LINE).reason == "oversized"


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (ENVOY_DOC_LINE[:60], "truncated"),
        (ENVOY_DOC_LINE[:120], "truncated"),
        (ENVOY_DOC_LINE[:10], "truncated"),  # inside START_TIME
        ("ACCESS " + ENVOY_DOC_LINE[:90], "truncated"),
        ("garbage", "format_mismatch"),
        ("GET /index.html 200", "format_mismatch"),
        (ENVOY_DOC_LINE.replace(" 154 0 ", " many 0 "), "format_mismatch"),
        ('{"start_time": "2016-04-15T20:17:00.310Z"}', "format_mismatch"),
        (ENVOY_DOC_LINE.rstrip("\n") + " extra", "format_mismatch"),
        (b"\xff\xfe\xfd", "invalid_utf8"),
        ("\n", "format_mismatch"),
        (ENVOY_DOC_LINE + ENVOY_DOC_LINE.replace("204", "500"), "format_mismatch"),  # a shipper's joined record
    ],
)
def test_dead_letters(default: Parser, line: str | bytes, reason: str) -> None:
    letter = dead(default, line)
    assert letter.reason == reason
    assert letter.origin == ORIGIN
    assert letter.line == (line.encode() if isinstance(line, str) else line)


def test_a_header_byte_that_is_not_utf8_costs_only_its_character(default: Parser) -> None:
    # A red-team trial: one 0xFF in the User-Agent made each of 40 failed logins an invalid_utf8 dead letter,
    # and the 4xx burst went unseen. Envoy writes header bytes past ASCII (HTTP's obs-text) as sent.
    e = event(default, ENVOY_DOC_LINE.encode().replace(b'"nsq2http"', b'"nsq2http \xff"'))
    assert (e.user_agent, e.request_id, e.status) == ("nsq2http \ufffd", "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2", 204)


def test_user_agent_with_quotes_falls_back_to_the_lenient_match(default: Parser) -> None:
    e = event(default, ENVOY_DOC_LINE.replace('"nsq2http"', '"Mozilla/5.0 "quoted" (compatible; x"y)"'))
    assert e.user_agent == 'Mozilla/5.0 "quoted" (compatible; x"y)'
    assert e.request_id == "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"


def test_quote_storm_in_user_agent_stays_linear(default: Parser) -> None:
    # Every quote followed by a space would make a backtracking pattern try
    # each split; the lenient pattern never consumes `" "`, and the separators
    # too many are masked, not searched for: one linear match a header.
    storm = '" "' * 20_000
    e = event(default, ENVOY_DOC_LINE.replace('"nsq2http"', '"' + storm + '"'))
    assert e.user_agent == storm and e.request_id == "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2"


def test_a_header_holding_the_separator_of_quoted_values_still_reads_the_line(default: Parser) -> None:
    """Envoy writes headers as sent: a client's `" "` made every one of its lines a dead letter, out of sight of
    every rule (and its Billing lines a bypass without a gateway record)."""
    e = event(default, ENVOY_DOC_LINE.replace('"nsq2http"', '"python-requests/2.31" "x"'))
    assert e.user_agent == 'python-requests/2.31" "x'
    assert (e.request_id, e.authority, e.upstream_host) == ("cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2", "locations",
                                                             "tcp://10.0.2.1:80")  # fmt: skip
    assert e.source_ip == "10.0.35.28"  # X-Forwarded-For could not hold them: its right end would be no address
    assert dict(e.labels) == {"gatewatch.ambiguous_quotes": "user_agent,request_id,authority"}
    e = event(default, ENVOY_DOC_LINE.replace('"nsq2http"', '"a" "b" "c"'))
    assert (e.forwarded_for, e.user_agent) == ("10.0.35.28", 'a" "b" "c')


@pytest.mark.parametrize(
    ("forwarded_for", "user_agent"),
    [
        ('"10.0.35.28"', '"x, 6.6.6.6" "Mozilla"'),  # the user agent makes an address Envoy's right end
        ('"6.6.6.6" "curl, 10.0.35.28"', '"nsq2http"'),  # or X-Forwarded-For holds them: the line reads alike
    ],
)
def test_a_client_cannot_choose_its_address_with_the_separator(
    default: Parser, forwarded_for: str, user_agent: str
) -> None:
    """Both lines read two ways: separators in the user agent, or in X-Forwarded-For with Envoy's address after
    them. Taking either reading would let a client name 6.6.6.6 (or an internal address) as itself."""
    e = event(default, ENVOY_DOC_LINE.replace('"10.0.35.28"', forwarded_for).replace('"nsq2http"', user_agent))
    assert (e.source_ip, e.forwarded_for) == (None, None)
    assert e.request_id == "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" and e.status == 204
    assert dict(e.labels)["gatewatch.ambiguous_quotes"].endswith(",forwarded_for")
    assert dict(e.labels)["gatewatch.ambiguous_clients"] == "10.0.35.28,6.6.6.6"  # for token_replay to tell apart


def test_compiled_pattern_exposes_its_slots() -> None:
    pattern = compile_text_pattern(ENVOY_DEFAULT_FORMAT)
    assert [slot.field for slot in pattern.slots] == [
        "ts", "method", "path", "protocol", "status", "response_flags", "bytes_received", "bytes_sent",
        "duration_ms", "upstream_service_time_ms", "forwarded_for", "user_agent", "request_id", "authority",
        "upstream_host",
    ]


# A default-format line from Envoy's own "migrating from NGINX" tutorial (envoyproxy/katacoda-scenarios).
KATACODA_LINE = (
    '[2018-11-23T04:51:00.281Z] "GET / HTTP/1.1" 200 - 0 58 4 1 "-" "curl/7.47.0" '
    '"f21ebd42-6770-4aa5-88d4-e56118165a7d" "one.example.com" "172.18.0.4:80"'
)


@pytest.mark.parametrize("ending", [" ", "  \t", " \r\n", "\r "])
def test_trailing_whitespace_and_carriage_returns_are_tolerated(default: Parser, ending: str) -> None:
    for line in (ENVOY_DOC_LINE.rstrip("\n"), KATACODA_LINE):
        e = event(default, line + ending)
        assert e.status in (204, 200) and e.upstream_host in ("tcp://10.0.2.1:80", "172.18.0.4:80")


def test_upstream_cluster_raw_fills_upstream_cluster() -> None:
    """Istio's current default format logs %UPSTREAM_CLUSTER_RAW%, not %UPSTREAM_CLUSTER%."""
    e = event(compile_text_format(ISTIO_FORMAT.replace("%UPSTREAM_CLUSTER%", "%UPSTREAM_CLUSTER_RAW%")), ISTIO_SLEEP)
    assert e.upstream_cluster == "outbound|8000||httpbin.foo.svc.cluster.local"
    assert "upstream_cluster_raw" not in dict(e.labels)


_CHAIN = '"10.9.9.9, 203.0.113.5, 198.51.100.66"'  # the client wrote 10.9.9.9 itself


@pytest.mark.parametrize(("hops", "client"), [(0, "198.51.100.66"), (1, "203.0.113.5"), (5, "10.9.9.9")])
@pytest.mark.parametrize("general_path", [False, True])
def test_the_client_is_read_from_the_right_of_x_forwarded_for(hops: int, client: str, general_path: bool) -> None:
    line = ENVOY_DOC_LINE.replace('"10.0.35.28"', _CHAIN)
    if general_path:  # a byte count past int64: the fused reader hands the line to normalize
        line = line.replace('" 204 - 154 0 ', '" 204 - 99999999999999999999 0 ')
    e = event(build_gateway_parser(xff_num_trusted_hops=hops), line)
    assert (e.forwarded_for, e.source_ip) == (_CHAIN.strip('"'), client)
    assert (e.bytes_received is None) is general_path


def test_a_downstream_address_that_is_no_ip_leaves_the_client_to_x_forwarded_for() -> None:
    # Envoy behind a proxy on a unix socket logs the socket's path: every client would be that one "address".
    fmt = '[%START_TIME%] "%REQ(X-FORWARDED-FOR)%" "%REQ(X-REQUEST-ID)%" %DOWNSTREAM_REMOTE_ADDRESS%'
    parser = compile_text_format(fmt)
    e = event(parser, '[2025-03-08T02:20:32.588Z] "10.9.9.9, 203.0.113.7" "r1" /var/run/envoy/ingress.sock')
    assert e.source_ip == "203.0.113.7"
    assert event(parser, '[2025-03-08T02:20:32.588Z] "unknown" "r1" pipe:/run/front.sock').source_ip is None
    assert event(parser, '[2025-03-08T02:20:32.588Z] "203.0.113.7" "r1" 10.1.0.4:5123').source_ip == "10.1.0.4"
