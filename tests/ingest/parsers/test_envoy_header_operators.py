"""Header operators whose argument or length limit changes what a value means: a cut X-Forwarded-For,
the path and host operators' many spellings."""

from __future__ import annotations

import orjson
import pytest

from ingest.parsers import compile_json_format, compile_text_format
from ingest.parsers.envoy_operators import FORWARDED_FOR_TRUNCATED_LABEL
from ingest.records import Dataset, Origin
from tests.ingest.parsers.lines import line_helpers

ORIGIN = Origin(Dataset.GATEWAY, "/var/log/envoy/access.log", 11)
record, event, dead = line_helpers(ORIGIN)


def test_an_x_forwarded_for_cut_at_its_length_limit_names_no_client() -> None:
    # Envoy cuts a value's END, where the entry it appended sits: what is left is the client's own text.
    parser = compile_text_format('[%START_TIME%] "%REQ(X-FORWARDED-FOR):40%" "%REQ(X-REQUEST-ID)%"')
    cut = "aaaaaaaaaaaaaaaaaaaaaaaaaaaa, 10.9.9.9, "  # 40 characters: the limit, so perhaps cut
    e = event(parser, f'[2025-03-08T02:25:30.588Z] "{cut}" "r0"')
    assert (e.source_ip, e.forwarded_for, e.request_id) == (None, None, "r0")
    assert (FORWARDED_FOR_TRUNCATED_LABEL, cut) in e.labels
    whole = "10.9.9.9, 203.0.113.50"  # shorter than the limit: the whole header
    e = event(parser, f'[2025-03-08T02:25:30.588Z] "{whole}" "r1"')
    assert (e.source_ip, e.forwarded_for, e.labels) == ("203.0.113.50", whole, ())


def test_a_json_x_forwarded_for_cut_at_its_length_limit_names_no_client() -> None:
    parser = compile_json_format({"t": "%START_TIME%", "xff": "%REQ(X-FORWARDED-FOR):20%"})
    e = event(parser, orjson.dumps({"t": "2025-03-08T02:25:30.588Z", "xff": "aaaaaaaaaa, 10.9.9.9"}))
    assert (e.source_ip, e.forwarded_for) == (None, None)
    e = event(parser, orjson.dumps({"t": "2025-03-08T02:25:30.588Z", "xff": "10.9.9.9, 10.0.0.1"}))
    assert (e.source_ip, e.forwarded_for) == ("10.0.0.1", "10.9.9.9, 10.0.0.1")


@pytest.mark.parametrize(
    "operator",
    [
        "%REQ_WITHOUT_QUERY(X-ENVOY-ORIGINAL-PATH?:PATH)%",  # Envoy Gateway's test format
        "%REQ_WITHOUT_QUERY(:PATH)%",
        "%PATH%",  # Envoy >= 1.33: with the query, original path or else :path
        "%PATH(NQ:ORIG)%",
        "%PATH(WQ:PATH)%",
        "%PATH(NQ:ORIG_OR_PATH)%",
        "%PATH(NQ)%",
        "%PATH(:PATH)%",
        "%REQ(:PATH?X-ENVOY-ORIGINAL-PATH)%",  # the alternatives the other way round
        "%REQUEST_HEADER(:PATH?X-ENVOY-ORIGINAL-PATH)%",
    ],
)
def test_every_documented_path_operator_fills_the_path(operator: str) -> None:
    parser = compile_text_format(f'[%START_TIME%] "%REQ(:METHOD)% {operator} %PROTOCOL%" %RESPONSE_CODE%')
    e = event(parser, '[2025-03-08T02:25:32.588Z] "GET /v1/invoices/42 HTTP/1.1" 200')
    assert (e.method, e.path, e.protocol, e.labels) == ("GET", "/v1/invoices/42", "HTTP/1.1", ())


@pytest.mark.parametrize("operator", ["%REQ(:AUTHORITY?HOST)%", "%REQ(HOST?:AUTHORITY)%", "%REQ(:AUTHORITY)%"])
def test_every_host_operator_fills_the_authority(operator: str) -> None:
    parser = compile_json_format({"t": "%START_TIME%", "host": operator})
    e = event(parser, orjson.dumps({"t": "2025-03-08T02:25:32.588Z", "host": "billing.example.com"}))
    assert (e.authority, e.labels) == ("billing.example.com", ())


@pytest.mark.parametrize("operator", ["%PATH(XQ)%", "%PATH(NQ:UPSTREAM)%", "%REQ_WITHOUT_QUERY(X-TENANT)%"])
def test_a_path_operator_with_arguments_envoy_refuses_or_another_header_stays_a_label(operator: str) -> None:
    parser = compile_text_format(f"[%START_TIME%] {operator}")
    e = event(parser, "[2025-03-08T02:25:32.588Z] x")
    assert e.path is None and len(e.labels) == 1


def test_the_newest_long_response_flag_reads_as_its_short_code() -> None:
    parser = compile_text_format("[%START_TIME%] %RESPONSE_FLAGS_LONG%")
    e = event(parser, "[2025-03-08T02:25:32.588Z] UnconditionalDropOverload,DropOverload")
    assert e.response_flags == ("UDO", "DO")
