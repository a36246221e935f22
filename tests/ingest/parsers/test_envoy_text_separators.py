"""Envoy text formats whose fields are separated by something other than a space (``||``, ``,``, tab).

Such formats once cost exponential time (a text value's ``\\S+`` also matched the separator,
so the regex tried every split) and refused any value holding a space. Each line here must
be read, or refused, in linear time: the slow cases run in a child process with a deadline,
so a regression fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from gatewatch.demo.render import DEMO_TEXT_FORMAT
from ingest.parsers import compile_text_format
from ingest.records import Dataset, DeadLetter, Event, Origin, RawRecord
from tests.ingest.parsers.lines import line_helpers
from tests.ingest.test_hostile_line_memory import DEMO_LINE

ORIGIN = Origin(Dataset.GATEWAY, "/var/log/envoy/access.log", 7)
record, event, dead = line_helpers(ORIGIN)

# MOSN-on-Envoy's documented access log format: 38 fields separated by "||", headers unquoted.
MOSN_FORMAT = "||".join([
    "%START_TIME%", "%REQ(SOFA-TRACEID?TRI-TRACE-TRACEID)%", "%REQ(SOFA-RPCID?TRI-TRACE-RPCID)%", "%REQ(:METHOD)%",
    "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%", "%PROTOCOL%", "%DOWNSTREAM_REMOTE_ADDRESS%", "%DOWNSTREAM_LOCAL_ADDRESS%",
    "%REQ(HOST)%", "%DOWNSTREAM_TLS_VERSION%", "%DOWNSTREAM_TLS_CIPHER%", "%RESPONSE_CODE%", "%RESPONSE_FLAGS%",
    "%RESP(GRPC-STATUS)%", "%UPSTREAM_TRANSPORT_FAILURE_REASON%", "%BYTES_RECEIVED%", "%BYTES_SENT%", "%DURATION%",
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%", "%REQ(X-FORWARDED-FOR)%", "%REQ(USER-AGENT)%", "%REQ(X-REQUEST-ID)%",
    "%REQ(:AUTHORITY)%", "%UPSTREAM_HOST%", "%ROUTE_NAME%", "%UPSTREAM_CLUSTER%", "%UPSTREAM_LOCAL_ADDRESS%",
    "%DYNAMIC_METADATA(envoy.lb:idc)%", "%CONNECTION_ID%", "%REQUEST_DURATION%", "%RESPONSE_DURATION%",
    "%RESPONSE_TX_DURATION%", "%RESPONSE_CODE_DETAILS%", "%CONNECTION_TERMINATION_DETAILS%", "%REQ(req-start-time)%",
    "%DYNAMIC_METADATA(golang.extention:cost_total)%", "%DYNAMIC_METADATA(golang.extention:cost_decode)%",
    "%DYNAMIC_METADATA(golang.extention:cost_encode)%",
]) + "||\n"  # fmt: skip
MOSN_LINE = (
    "2024-06-02T13:24:58.930Z||-||-||GET||/status.taobao||HTTP/1.1||10.0.0.7:51234||10.0.0.2:2990||"
    "localhost:2990||-||-||200||-||-||-||0||17||1||-||-||Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 "
    "Firefox/126.0||r2||localhost:2990||-||status||-||-||-||12||0||1||0||direct_response||-||-||-||-||-||"
)

# Thirty unquoted headers separated by commas: each once doubled the time of a line.
CSV_FORMAT = "%START_TIME%," + ",".join(f"%REQ(X-H{i})%" for i in range(30)) + ",%RESPONSE_CODE%"
CSV_LINE = "2024-06-02T13:24:57.930Z," + ",".join(f"v{i}" for i in range(30)) + ",200"
CSV_DASHES = "2024-06-02T13:24:57.930Z," + ",".join("-" for _ in range(30)) + ",200"

# Six unquoted dynamic metadata objects whose values hold "} {": a line cut short once took minutes.
METADATA_FORMAT = (
    "[%START_TIME%] %RESPONSE_CODE% "
    + " ".join(f"%DYNAMIC_METADATA(filter{i})%" for i in range(6))
    + ' "%REQ(X-REQUEST-ID)%"'
)
METADATA_LINE = (
    "[2024-06-02T13:24:57.930Z] 200 "
    + " ".join('{"name":"' + "} {" * 20 + '"}' for _ in range(6))
    + ' "r1"'
)

_CHILD = """
import json, sys
from ingest.parsers import compile_text_format
from ingest.records import Dataset, Event, Origin, RawRecord
origin = Origin(Dataset.GATEWAY, "x", 1)
for fmt, line in json.load(sys.stdin):
    read = compile_text_format(fmt)(RawRecord(origin, line.encode()))
    print(json.dumps(read.request_id if isinstance(read, Event) else read.reason))
"""


def _read_within(seconds: float, cases: list[tuple[str, str]]) -> list[str | None]:
    """Each line's request id (an event) or dead-letter reason, read in a child process that must
    finish within ``seconds``: a regex that backtracks exponentially cannot be interrupted in-process."""
    done = subprocess.run(
        [sys.executable, "-c", _CHILD], input=json.dumps(cases), capture_output=True, text=True, timeout=seconds
    )
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_lines_of_formats_with_non_space_separators_are_read_in_linear_time() -> None:
    # Before: MOSN's line never finished; CSV ~150 s; the cut metadata line minutes. Now: milliseconds each.
    cases = [
        (MOSN_FORMAT, MOSN_LINE),
        (MOSN_FORMAT, MOSN_LINE[:-1]),
        (MOSN_FORMAT, MOSN_LINE.replace("||200||", "||2x0||")),
        (CSV_FORMAT, CSV_LINE),
        (CSV_FORMAT, CSV_DASHES),
        (CSV_FORMAT, CSV_LINE + ","),
        (METADATA_FORMAT, METADATA_LINE),
        (METADATA_FORMAT, METADATA_LINE[:-1]),
    ]
    assert _read_within(20, cases) == [
        "r2", "truncated", "format_mismatch", None, None, "format_mismatch", "r1", "truncated"
    ]  # fmt: skip


def test_a_format_separated_by_bars_reads_each_field() -> None:
    e = event(compile_text_format(MOSN_FORMAT), MOSN_LINE)
    assert (e.method, e.path, e.protocol, e.status, e.request_id) == ("GET", "/status.taobao", "HTTP/1.1", 200, "r2")
    assert e.user_agent == "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"
    assert (e.source_ip, e.authority, e.route_name, e.bytes_sent) == ("10.0.0.7", "localhost:2990", "status", 17)


def test_a_single_bar_inside_a_value_of_a_double_bar_format_stays_in_the_value() -> None:
    e = event(compile_text_format(MOSN_FORMAT), MOSN_LINE.replace("Firefox/126.0", "Firefox/126.0 |x| y"))
    assert e.user_agent is not None and e.user_agent.endswith("Firefox/126.0 |x| y")
    assert e.request_id == "r2"


TAB_FORMAT = (
    "[%START_TIME%]\t%REQ(:METHOD)%\t%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%\t%RESPONSE_CODE%\t%REQ(X-FORWARDED-FOR)%\t"
    "%REQ(USER-AGENT)%\t%REQ(X-REQUEST-ID)%\t%REQ(:AUTHORITY)%\n"
)


def test_a_tab_separated_format_reads_values_holding_spaces() -> None:
    parser = compile_text_format(TAB_FORMAT)
    browser = "Mozilla/5.0 (X11; Linux x86_64; rv:126.0) Gecko/20100101 Firefox/126.0"
    e = event(parser, f"[2024-06-02T13:24:58.930Z]\tGET\t/v1/invoices\t200\t203.0.113.7\t{browser}\tr2\tbilling")
    assert (e.user_agent, e.request_id, e.authority) == (browser, "r2", "billing")
    e = event(parser, "[2024-06-02T13:24:59.930Z]\tGET\t/v1\t200\t198.51.100.1, 203.0.113.7\tcurl/8.7.1\tr3\tbilling")
    assert (e.forwarded_for, e.source_ip, e.request_id) == ("198.51.100.1, 203.0.113.7", "203.0.113.7", "r3")


def test_a_comma_separated_value_cannot_hold_a_comma() -> None:
    # A one-character separator ends the value: "a,b" in a comma-separated format reads as two fields.
    parser = compile_text_format("%START_TIME%,%REQ(X-REQUEST-ID)%,%RESPONSE_CODE%")
    assert event(parser, "2024-06-02T13:24:57.930Z,r1,200").request_id == "r1"
    assert dead(parser, "2024-06-02T13:24:57.930Z,r1,x,200").reason == "format_mismatch"


def test_several_response_flags_in_a_comma_separated_format_are_read() -> None:
    # A parser trial: Envoy joins flags with commas (503 "UF,URX", the lines a 5xx burst is made of): in a
    # comma-separated format each such line was a dead letter ("the line goes on after the format ends").
    fmt = "%START_TIME%,%RESPONSE_CODE%,%RESPONSE_FLAGS%,%REQ(X-REQUEST-ID)%,%DOWNSTREAM_REMOTE_ADDRESS%"
    parser = compile_text_format(fmt)
    e = event(parser, "2026-03-02T09:00:00Z,503,UF,URX,r1,10.0.0.1:5555")
    assert (e.status, e.response_flags, e.request_id, e.source_ip) == (503, ("UF", "URX"), "r1", "10.0.0.1")
    assert event(parser, "2026-03-02T09:00:00Z,503,UF,r2,10.0.0.1:5555").response_flags == ("UF",)
    assert event(parser, "2026-03-02T09:00:00Z,200,-,r3,10.0.0.1:5555").response_flags == ()
    # a request id that is not a flag name is never taken for one
    assert event(parser, "2026-03-02T09:00:00Z,503,UF,URXa,10.0.0.1:5555").request_id == "URXa"
    # A review: read possessively, a next field that spells a flag name was taken for one, and the line
    # became a dead letter: a client with the User-Agent "DC" hid its 403 UAEX burst from http_4xx_burst.
    client = compile_text_format("%START_TIME%,%RESPONSE_CODE%,%RESPONSE_FLAGS%,%REQ(USER-AGENT)%,%REQ(X-REQUEST-ID)%")
    e = event(client, "2026-03-02T09:00:00Z,403,UAEX,DC,r4")
    assert (e.response_flags, e.user_agent, e.request_id) == (("UAEX",), "DC", "r4")
    e = event(client, "2026-03-02T09:00:00Z,503,UF,URX,RL,r5")
    assert (e.response_flags, e.user_agent, e.request_id) == (("UF", "URX"), "RL", "r5")
    started = time.process_time()  # given back one flag at a time, at most 8: a hostile line stays cheap
    assert dead(client, "2026-03-02T09:00:00Z,503," + ",".join(["UF"] * 300_000) + ",x,r6").reason
    assert time.process_time() - started < 0.25
    last = compile_text_format("%START_TIME%,%RESPONSE_CODE%,%RESPONSE_FLAGS_LONG%")
    assert event(last, "2026-03-02T09:00:00Z,503,UpstreamConnectionFailure,UpstreamRetryLimitExceeded"
                 ).response_flags == ("UF", "URX")  # fmt: skip


def test_a_header_holding_600_000_quoted_separators_is_read_in_milliseconds() -> None:
    # Each extra '" "' once cost a Python step per reading: a 2.4 MB line of them took seconds of CPU.
    parser = compile_text_format(DEMO_TEXT_FORMAT, max_line_bytes=1 << 22)
    agent = 'a" "' * 600_000 + "b"
    started = time.process_time()
    e = event(parser, DEMO_LINE.replace('"curl/8.5.0"', f'"{agent}"'))
    assert time.process_time() - started < 0.25
    assert (e.user_agent, e.request_id) == (agent, "998b5ccd-d242-435d-bb99-b34905825407")
    started = time.process_time()  # a line no reading fits: every header's reading tried, then the diagnosis
    assert dead(parser, DEMO_LINE.replace('"curl/8.5.0"', f'"{agent}"').replace(" 200 ", " 2x0 ")).reason
    assert time.process_time() - started < 0.25


def test_a_separator_a_client_writes_into_a_header_cannot_shift_the_values_after_it() -> None:
    # Re-verification: a User-Agent of 'x|6.6.6.6:1' made 6.6.6.6 the client address (the last value took
    # the rest of the line); such a line fits no reading now and is a dead letter.
    fmt = ("%START_TIME%|%REQ(:METHOD)%|%RESPONSE_CODE%|%REQ(USER-AGENT)%|%DOWNSTREAM_REMOTE_ADDRESS%|"
           "%REQ(X-REQUEST-ID)%")
    parse = compile_text_format(fmt)
    good = parse(RawRecord(Origin(Dataset.GATEWAY, "t", 0), b"2026-03-02T09:00:00Z|GET|401|curl/8|203.0.113.50:44|r1"))
    assert isinstance(good, Event) and good.source_ip == "203.0.113.50"
    forged = b"2026-03-02T09:00:00Z|GET|401|x|6.6.6.6:1|203.0.113.50:4444|r1"
    assert isinstance(parse(RawRecord(Origin(Dataset.GATEWAY, "t", 0), forged)), DeadLetter)


def test_an_ipv6_address_before_a_colon_and_its_port_is_read_whole() -> None:
    # Re-verification: values bounded at any literal's first character cut '2001:db8::7' at its first ':'.
    fmt = ("[%START_TIME%] %DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%:%DOWNSTREAM_REMOTE_PORT% %RESPONSE_CODE% "
           "%REQ(X-REQUEST-ID)%")
    parse = compile_text_format(fmt)
    event = parse(RawRecord(Origin(Dataset.GATEWAY, "t", 0), b"[2026-03-02T09:00:00Z] 2001:db8::7:51234 200 r1"))
    assert isinstance(event, Event) and event.source_ip == "2001:db8::7" and event.request_id == "r1"
