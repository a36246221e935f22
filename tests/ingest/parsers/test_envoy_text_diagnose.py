"""A line that does not fit the format says where: the operator or text at which it stops fitting."""

from __future__ import annotations

from ingest.parsers import ENVOY_DEFAULT_FORMAT, build_gateway_parser, compile_text_format
from ingest.records import Dataset, Origin
from tests.ingest.parsers.lines import line_helpers
from tests.ingest.parsers.test_envoy_text import ENVOY_DOC_LINE

ORIGIN = Origin(Dataset.GATEWAY, "/var/log/envoy/access.log", 5)
record, event, dead = line_helpers(ORIGIN)

# Istio's default format's line (istio/istio issue 38213), read with Envoy's default format.
ISTIO_LINE = (
    '[2024-06-02T13:24:57.930Z] "GET /favicon.ico HTTP/2" 0 - http2.remote_reset - "-" 0 0 0 - "192.168.0.24" '
    '"Mozilla/5.0" "9f69865b-eed1-409b-8c12-12436234a191" "auth.kubefrog.fr" "10.0.0.159:8080" '
    "outbound|80||keycloak.auth.svc.cluster.local 10.0.1.244:35794 10.0.1.244:8443 192.168.0.24:8459 auth.kubefrog.fr -"
)


def test_a_line_of_another_format_names_the_operator_where_it_stops_fitting() -> None:
    letter = dead(build_gateway_parser(), ISTIO_LINE)
    at = ISTIO_LINE.index("http2.remote_reset")
    assert letter.reason == "format_mismatch"
    assert letter.detail == f"line does not fit the format: %BYTES_RECEIVED% does not match at offset {at}"


def test_a_value_of_the_wrong_kind_is_named() -> None:
    line = ENVOY_DOC_LINE.replace(" 204 ", " 2x4 ")
    letter = dead(build_gateway_parser(ENVOY_DEFAULT_FORMAT), line)
    at = line.index("2x4")
    assert letter.detail.endswith(f"%RESPONSE_CODE% at offset {at} is not followed by ' ' (offset {at + 1})")


def test_a_missing_literal_and_text_past_the_end_are_named() -> None:
    parser = compile_text_format("[%START_TIME%] %RESPONSE_CODE% %REQ(X-REQUEST-ID)%")
    assert dead(parser, "[2024-06-02T13:24:57.930Z]200 r1").detail.endswith(
        "%START_TIME% at offset 1 is not followed by '] ' (offset 25)"
    )
    assert dead(parser, "(2024-06-02T13:24:57.930Z] 200 r1").detail.endswith("expected '[' at offset 0")
    assert dead(parser, "[2024-06-02T13:24:57.930Z] 200 r1 extra").detail.endswith(
        "the line goes on after the format ends, at offset 33"
    )
