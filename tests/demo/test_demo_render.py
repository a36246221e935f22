"""Rendering gateway records as Envoy writes them: text formats and (typed) JSON formats."""

from __future__ import annotations

import re
from datetime import datetime
from itertools import islice
from typing import Any

import orjson
import pytest
from demo_runs import Run

from gatewatch.demo import (
    DEMO_JSON_FORMAT,
    DEMO_TEXT_FORMAT,
    ENVOY_DEFAULT_FORMAT,
    GATEWAY_OPERATORS,
    compile_json,
    compile_text,
    render_json,
    render_text,
)
from gatewatch.demo.render import JWT_EXP, JWT_JTI

# What is left of an operator that was not substituted: %NAME%, %NAME(...)% or %NAME:N%.
LEFTOVER = re.compile(r"%[A-Z][A-Z0-9_]*(\(|%|:\d)")

# Envoy's documented example of its default format.
DOCS_RECORD: dict[str, Any] = {
    "START_TIME": "2016-04-15T20:17:00.310Z",
    "REQ(:METHOD)": "POST",
    "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": "/api/v1/locations",
    "PROTOCOL": "HTTP/2",
    "RESPONSE_CODE": 204,
    "RESPONSE_FLAGS": None,
    "BYTES_RECEIVED": 154,
    "BYTES_SENT": 0,
    "DURATION": 226,
    "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)": "100",
    "REQ(X-FORWARDED-FOR)": "10.0.35.28",
    "REQ(USER-AGENT)": "nsq2http",
    "REQ(X-REQUEST-ID)": "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2",
    "REQ(:AUTHORITY)": "locations",
    "UPSTREAM_HOST": "tcp://10.0.2.1:80",
}
DOCS_LINE = (
    '[2016-04-15T20:17:00.310Z] "POST /api/v1/locations HTTP/2" 204 - 154 0 226 100 "10.0.35.28" '
    '"nsq2http" "cc21d9b0-cf5c-432b-8c7e-98aeb7988cd2" "locations" "tcp://10.0.2.1:80"\n'
)


def test_default_format_matches_envoys_documentation() -> None:
    assert render_text(DOCS_RECORD, ENVOY_DEFAULT_FORMAT) == DOCS_LINE


def test_demo_text_format_extends_the_default() -> None:
    assert DEMO_TEXT_FORMAT.startswith("ACCESS " + ENVOY_DEFAULT_FORMAT[:-1])
    for operator in ("ROUTE_NAME", "UPSTREAM_CLUSTER", "DOWNSTREAM_REMOTE_ADDRESS", "DOWNSTREAM_PEER_URI_SAN",
                     "DOWNSTREAM_TLS_VERSION", "RESPONSE_CODE_DETAILS", JWT_JTI, JWT_EXP):  # fmt: skip
        assert f"%{operator}%" in DEMO_TEXT_FORMAT


def test_unset_values_are_dashes() -> None:
    line = render_text({}, ENVOY_DEFAULT_FORMAT)
    assert line == '[-] "- - -" - - - - - - "-" "-" "-" "-" "-"\n'


def test_operator_syntax() -> None:
    record = {"REQ(X-REQUEST-ID)": "abcdef", "RESPONSE_CODE": 200, "START_TIME": "2026-03-02T09:00:01.234Z",
              "DOWNSTREAM_REMOTE_ADDRESS": "203.0.113.9:5555", "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": "/v1/x"}
    assert render_text(record, "100%% %RESPONSE_CODE%") == "100% 200"
    assert render_text(record, "%REQ(X-REQUEST-ID):3%|%REQ(x-request-id)%") == "abc|abcdef"
    assert render_text(record, "%NO_SUCH_OPERATOR% %REQ(X-MISSING)%") == "- -"
    assert render_text(record, "%START_TIME(%Y/%m/%d %H:%M:%S.%3f)% %START_TIME(%s)%") == (
        "2026/03/02 09:00:01.234 1772442001"
    )
    assert render_text(record, "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %REQ(:PATH)%") == "203.0.113.9 /v1/x"
    for broken in ("%", "50% off", "%RESPONSE_CODE", "%REQ(X%", "%A:%"):
        with pytest.raises(ValueError):
            compile_text(broken)


def test_generated_lines_leave_no_operator_behind(run: Run) -> None:
    for fmt in (DEMO_TEXT_FORMAT, ENVOY_DEFAULT_FORMAT):
        render = compile_text(fmt)
        for record in run.gateway:
            line = render(record)
            assert line.endswith("\n") and line.count("\n") == 1
            assert not LEFTOVER.search(line), line


def test_fast_and_general_text_paths_agree(run: Run) -> None:
    # ":9999" forces the general (loop) renderer without changing any value.
    general = compile_text(re.sub(r"%([A-Z_]+(?:\([^)]*\))?)%", r"%\1:9999%", DEMO_TEXT_FORMAT))
    fast = compile_text(DEMO_TEXT_FORMAT)
    for record in islice(run.gateway, 3000):
        assert fast(record) == general(record)


def test_typed_json(run: Run) -> None:
    render = compile_json(DEMO_JSON_FORMAT, typed=True)
    for record in islice(run.gateway, 3000):
        document = orjson.loads(render(record))
        assert document["http"]["status"] == record["RESPONSE_CODE"]
        assert isinstance(document["duration_ms"], int) and isinstance(document["bytes"]["sent"], int)
        assert document["jwt"]["exp"] == record[JWT_EXP]  # int or null
        assert document["http"]["flags"] == record["RESPONSE_FLAGS"]  # None -> null
        assert document["log_type"] == "access"
        assert list(document) == sorted(document)  # Envoy sorts keys


def test_string_json(run: Run) -> None:
    render = compile_json(DEMO_JSON_FORMAT, typed=False)
    for record in islice(run.gateway, 3000):
        document = orjson.loads(render(record))
        assert document["http"]["status"] == str(record["RESPONSE_CODE"])
        leaves = [v for section in document.values() for v in (section.values() if isinstance(section, dict)
                                                                  else [section])]  # fmt: skip
        assert all(isinstance(v, str) for v in leaves)
        if record[JWT_JTI] is None:
            assert document["jwt"]["jti"] == "-"


def test_json_mapping_features() -> None:
    record = {"REQ(:METHOD)": "GET", "RESPONSE_CODE": 404, "REQ(X-REQUEST-ID)": "0123456789"}
    mapping = {
        "summary": "%REQ(:METHOD)% -> %RESPONSE_CODE% (%UPSTREAM_HOST%)",
        "n": 3,
        "flag": True,
        "nested": {"deeper": {"status": "%RESPONSE_CODE%", "rid": "%REQ(X-REQUEST-ID):4%"}},
        "plain": "literal 100%%",
        "unset": "%UPSTREAM_HOST%",
    }
    typed = orjson.loads(render_json(record, mapping, typed=True))
    assert typed == {
        "summary": "GET -> 404 (-)",
        "n": 3,
        "flag": True,
        "nested": {"deeper": {"status": 404, "rid": "0123"}},
        "plain": "literal 100%",
        "unset": None,
    }
    strings = orjson.loads(render_json(record, mapping, typed=False))
    assert strings["nested"]["deeper"]["status"] == "404" and strings["unset"] == "-"
    assert render_json(record, mapping) == render_json(record, dict(mapping))  # cached by content


def test_every_operator_of_a_record_is_in_a_demo_format() -> None:
    text = DEMO_TEXT_FORMAT
    json_text = orjson.dumps(DEMO_JSON_FORMAT).decode()
    for operator in GATEWAY_OPERATORS:
        assert f"%{operator}%" in json_text, operator
        if not operator.endswith(":iat)"):
            assert f"%{operator}%" in text, operator


@pytest.mark.parametrize("fmt", ["text", "default", "json", "json_strings"])
def test_the_pipeline_parsers_read_rendered_lines(run: Run, fmt: str) -> None:
    """Cross-check with the project's parsers (written independently): same values back."""
    parsers = pytest.importorskip("ingest.parsers")
    records = pytest.importorskip("ingest.records")
    if fmt in ("json", "json_strings"):
        parse = parsers.build_gateway_parser(json_format=DEMO_JSON_FORMAT)
        render = compile_json(DEMO_JSON_FORMAT, typed=fmt == "json")
    else:
        text_format = DEMO_TEXT_FORMAT if fmt == "text" else ENVOY_DEFAULT_FORMAT
        parse = parsers.build_gateway_parser(format=text_format)
        render = compile_text(text_format)
    for offset, record in enumerate(islice(run.gateway, 0, None, 7)):
        line = render(record)
        raw = line.encode() if isinstance(line, str) else line + b"\n"
        event = parse(records.RawRecord(records.Origin(records.Dataset.GATEWAY, "demo", offset), raw))
        assert isinstance(event, records.Event), event
        assert event.request_id == record["REQ(X-REQUEST-ID)"]
        assert event.status == record["RESPONSE_CODE"]
        assert event.path == record["REQ(X-ENVOY-ORIGINAL-PATH?:PATH)"]
        assert event.source_ip == record["REQ(X-FORWARDED-FOR)"]
        assert event.ts == datetime.fromisoformat(record["START_TIME"]).timestamp()
        if fmt != "default":
            assert event.token_jti == record[JWT_JTI]
            assert event.route_name == record["ROUTE_NAME"]
