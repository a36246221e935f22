"""Syslog and CEF forwarding into a real rsyslogd, read back by a parser written here from the RFCs.

Values an attacker controls (User-Agent, path, request id, the entity) carry
CR, LF, ``|``, ``=``, ``\\``, ``]``, ``"`` and an ANSI escape: what rsyslog
wrote must still be exactly one message per event, one line each, with
exactly the fields sent and the values intact (control characters arrive as
their visible Unicode pictures, CEF's CR/LF as its own escapes).
"""

from __future__ import annotations

import re
import socket
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from detectors.alerts import Alert
from detectors.base import Severity
from detectors.lifecycle import AlertEvent, AlertState
from gatewatch.config import parse_config
from gatewatch.forward import build_forwarders
from tests.gatewatch.forward.conftest import Rsyslog

HOSTILE = 'curl/8.5\r\nCEF:0|evil|x|1|forged|forged|10|src=6.6.6.6 x="y"] [z a="b"\\ \x1b[31mRED\x1b[0m = | ]'
T0 = 1_772_442_000.0


def hostile_events() -> list[AlertEvent]:
    bypass = Alert(
        id="a1b2c3", rule="gateway_bypass", severity=Severity.HIGH, entity_type="source.ip", entity_value="10.9.9.9",
        first_seen=T0, last_seen=T0 + 12.25, count=3, request_ids=("req-1", 'req]"2\\' + HOSTILE),
        summary="Billing served GET /v1/invoices" + HOSTILE + " (200) to 10.9.9.9", reason="untrusted_peer",
        details={"peer_ip": "10.9.9.9", "method": "GET", "path": "/v1/invoices" + HOSTILE, "status": 200,
                 "user_agent": HOSTILE},
    )  # fmt: skip
    replay = Alert(
        id="d4e5f6", rule="token_replay", severity=Severity.CRITICAL, entity_type="token.jti", entity_value=HOSTILE,
        first_seen=T0 + 1, last_seen=T0 + 1, count=1, request_ids=(), summary="Token presented from 2 addresses",
        details={"new_address": "2001:db8::7", "token_sub": "user|" + HOSTILE},
    )  # fmt: skip
    return [
        AlertEvent(bypass, AlertState.OPEN, 1, T0 + 13),
        AlertEvent(replay, AlertState.OPEN, 1, T0 + 14),
        AlertEvent(bypass, AlertState.RESOLVED, 2, T0 + 613),
    ]


# -- the independent reader ---------------------------------------------------


def pictures(text: str, keep_crlf: bool = False) -> str:
    """What a control character may become on the wire: its Unicode control picture."""
    return "".join(
        c if (ord(c) >= 0x20 and ord(c) != 0x7F) or (keep_crlf and c in "\r\n")
        else ("\u2421" if ord(c) == 0x7F else chr(0x2400 + ord(c)))
        for c in text
    )  # fmt: skip


HEADER = re.compile(r"^<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")


def parse_rfc5424(line: str) -> tuple[dict[str, str], str, dict[str, list[str]], str]:
    """RFC 5424 6: header fields, SD-ID, SD-PARAMs (repeatable) and MSG (BOM removed)."""
    match = HEADER.match(line)
    assert match, line
    header = dict(zip(("pri", "timestamp", "hostname", "app", "procid", "msgid"), match.groups()))
    rest = line[match.end() :]
    if rest.startswith("- "):
        return header, "-", {}, rest[2:].removeprefix("\ufeff")
    assert rest.startswith("["), rest
    i = 1
    sd_id_end = min(j for j in (rest.find(" ", i), rest.find("]", i)) if j >= 0)
    sd_id, i = rest[1:sd_id_end], sd_id_end
    params: dict[str, list[str]] = {}
    while rest[i] == " ":
        eq = rest.index("=", i)
        name = rest[i + 1 : eq]
        assert rest[eq + 1] == '"', rest[eq:]
        i, value = eq + 2, []
        while rest[i] != '"':
            if rest[i] == "\\" and rest[i + 1] in '"\\]':
                value.append(rest[i + 1])
                i += 2
            else:
                assert rest[i] != "]", f"unescaped ] inside a value: {rest[:i]}"
                value.append(rest[i])
                i += 1
        params.setdefault(name, []).append("".join(value))
        i += 1
    assert rest[i] == "]", rest[i:]
    assert rest[i + 1] == " ", "exactly one SD-ELEMENT, then MSG"
    return header, sd_id, params, rest[i + 2 :].removeprefix("\ufeff")


def parse_cef(line: str) -> tuple[list[str], dict[str, str]]:
    """CEF rev. 25: seven header fields split on unescaped '|', then key=value pairs split on unescaped '='."""
    assert line.startswith("CEF:0|"), line
    fields, current, i = [], [], 0
    while len(fields) < 7:
        c = line[i]
        if c == "\\" and line[i + 1] in "\\|":
            current.append(line[i + 1])
            i += 2
            continue
        if c == "|":
            fields.append("".join(current))
            current = []
        else:
            current.append(c)
        i += 1
    extension = line[i:]
    # An '=' is a separator unless an odd number of backslashes precedes it.
    separators = [m.end() - 1 for m in re.finditer(r"(?<!\\)(?:\\\\)*=", extension)]
    pairs: dict[str, str] = {}
    starts = [(extension.rfind(" ", 0, eq) + 1, eq) for eq in separators]
    for n, (key_start, eq) in enumerate(starts):
        end = starts[n + 1][0] - 1 if n + 1 < len(starts) else len(extension)
        key = extension[key_start:eq]
        assert re.fullmatch(r"[A-Za-z0-9_]+", key), key
        raw = extension[eq + 1 : end]
        assert key not in pairs, f"repeated key {key}"
        pairs[key] = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), raw)
    return fields, pairs


def rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def expected_sd(event: AlertEvent) -> dict[str, list[str]]:
    a = event.alert
    sd = {
        "event_id": [f"{a.id}-{event.sequence}"], "state": [str(event.state)], "sequence": [str(event.sequence)],
        "alert_id": [a.id], "rule": [a.rule], "severity": [str(a.severity)], "entity_type": [a.entity_type],
        "entity_value": [a.entity_value], "first_seen": [rfc3339(a.first_seen)], "last_seen": [rfc3339(a.last_seen)],
        "count": [str(a.count)], "summary": [a.summary],
    }  # fmt: skip
    if a.reason:
        sd["reason"] = [a.reason]
    d = a.details
    optional = {"source_ip": d.get("peer_ip") or d.get("new_address"), "user": d.get("token_sub"),
                "http_method": d.get("method"), "url_path": d.get("path"), "user_agent": d.get("user_agent"),
                "http_status": str(d["status"]) if "status" in d else None}  # fmt: skip
    sd |= {k: [v] for k, v in optional.items() if v is not None}
    if a.request_ids:
        sd["request_id"] = list(a.request_ids)
    return {k: [pictures(v) for v in vs] for k, vs in sd.items()}


def expected_cef(event: AlertEvent) -> tuple[list[str], dict[str, str]]:
    a = event.alert
    d = a.details
    ip = d.get("peer_ip") or d.get("new_address")
    ext = {
        "rt": str(round(event.at * 1000)), "start": str(round(a.first_seen * 1000)),
        "end": str(round(a.last_seen * 1000)), "cnt": str(a.count), "act": str(event.state), "cat": a.rule,
        "externalId": a.id, "msg": a.summary, "cs1Label": "entityType", "cs1": a.entity_type,
        "cs2Label": "entityValue", "cs2": a.entity_value, "cs3Label": "reason", "cs3": a.reason or "",
        "cs4Label": "requestIds", "cs4": orjson.dumps(list(a.request_ids)).decode(),
        "cs5Label": "eventId", "cs5": f"{a.id}-{event.sequence}", "cn1Label": "sequence", "cn1": str(event.sequence),
    }  # fmt: skip
    if ip and ":" in ip:
        ext |= {"c6a2Label": "sourceIPv6Address", "c6a2": ip}
    elif ip:
        ext["src"] = ip
    for key, value in (("suser", d.get("token_sub")), ("requestMethod", d.get("method")), ("request", d.get("path")),
                       ("requestClientApplication", d.get("user_agent"))):  # fmt: skip
        if value is not None:
            ext[key] = value
    if "status" in d:
        ext |= {"cn2Label": "httpStatus", "cn2": str(d["status"])}
    severity = {"low": "3", "medium": "5", "high": "8", "critical": "10"}[str(a.severity)]
    header = ["CEF:0", "gatewatch", "gatewatch", None, a.rule, pictures(a.summary), severity]
    return header, {k: pictures(v, keep_crlf=True) for k, v in ext.items()}


# -- the tests ----------------------------------------------------------------


def forward(rsyslog: Rsyslog, transport: str, fmt: str, tmp_path: Path, events: list[AlertEvent]) -> list[str]:
    offset = rsyslog.size(transport)
    forwarder = {"name": f"siem-{transport}-{fmt}", "type": "syslog", "host": "127.0.0.1",
                 "port": rsyslog.ports[transport], "transport": transport, "format": fmt, "hostname": "gw-test",
                 "dead_letters": str(tmp_path / "dl.ndjson")}  # fmt: skip
    if transport == "tls":
        forwarder["tls"] = {"ca_file": str(rsyslog.ca_file)}
    forwarders = build_forwarders(parse_config({"forward": [forwarder]}))
    assert forwarders is not None
    forwarders.submit(events)
    forwarders.close()
    assert forwarders.counts()[forwarder["name"]] == {"sent": len(events)}
    assert not (tmp_path / "dl.ndjson").exists()
    rsyslog.wait_for_lines(transport, offset, len(events))
    # A forged line would be written with the message it came in; a moment more shows any.
    raw = rsyslog.wait_for_lines(transport, offset, len(events) + 1, timeout_secs=0.3)
    assert len(raw) == len(events), f"one line per event, no forged line: {raw}"
    for line in raw:
        assert b"\x1b" not in line and b"\r" not in line, line
    return [line.decode() for line in raw]


@pytest.mark.parametrize("transport", ["tcp", "tls", "udp"])
def test_rfc5424_structured_data_reads_back_to_the_alert(rsyslog: Rsyslog, transport: str, tmp_path: Path) -> None:
    events = hostile_events()
    lines = forward(rsyslog, transport, "rfc5424", tmp_path, events)
    for line, event in zip(lines, events):
        header, sd_id, params, msg = parse_rfc5424(line)
        assert sd_id == "gatewatch@32473"
        assert params == expected_sd(event)
        assert msg == pictures(event.alert.summary)
        severity = {"critical": 2, "high": 3, "medium": 4, "low": 5}[str(event.alert.severity)]
        assert header["pri"] == str(10 * 8 + severity)
        assert (header["hostname"], header["app"], header["msgid"]) == ("gw-test", "gatewatch", f"alert-{event.state}")


@pytest.mark.parametrize("transport", ["tcp", "tls", "udp"])
@pytest.mark.parametrize("fmt", ["cef_syslog", "cef"])
def test_cef_reads_back_to_the_alert(rsyslog: Rsyslog, transport: str, fmt: str, tmp_path: Path) -> None:
    events = hostile_events()
    lines = forward(rsyslog, transport, fmt, tmp_path, events)
    for line, event in zip(lines, events):
        if fmt == "cef_syslog":
            header, sd_id, params, line = parse_rfc5424(line)
            assert (sd_id, params, header["msgid"]) == ("-", {}, f"alert-{event.state}")
        fields, extension = parse_cef(line)
        want_fields, want_extension = expected_cef(event)
        assert len(fields) == 7
        assert [f for f, w in zip(fields, want_fields) if w is not None] == [w for w in want_fields if w is not None]
        assert extension == want_extension


def test_an_unreachable_receiver_leaves_dead_letters_not_silence(tmp_path: Path) -> None:
    port = 0
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    dead = tmp_path / "dl.ndjson"
    config = parse_config({"forward": [{
        "name": "down", "type": "syslog", "host": "127.0.0.1", "port": port, "max_attempts": 2,
        "retry_backoff_secs": 0.01, "dead_letters": str(dead),
    }]})  # fmt: skip
    forwarders = build_forwarders(config)
    assert forwarders is not None
    forwarders.submit(hostile_events())
    forwarders.close()
    assert forwarders.counts()["down"] == {"retried": 3, "dead_letter_retries_exhausted": 3}
    letters = [orjson.loads(line) for line in dead.read_bytes().splitlines()]
    assert [(d["reason"], d["attempts"], d["event"]["lifecycle"]["event_id"]) for d in letters] == [
        ("retries_exhausted", 2, event_id) for event_id in ("a1b2c3-1", "d4e5f6-1", "a1b2c3-2")
    ]


@pytest.mark.parametrize(("transport", "fmt"), [("udp", "rfc5424"), ("udp", "cef"), ("tcp", "rfc5424"), ("tcp", "cef")])
def test_an_alert_longer_than_max_message_bytes_goes_whole_with_its_texts_cut(
    rsyslog: Rsyslog, transport: str, fmt: str, tmp_path: Path
) -> None:
    # A red-team trial: a 34 KB path made a CEF alert too big for UDP; it went to the dead letters only.
    # A SIEM trial: over TCP the same path made a message past the receiver's limit; rsyslog cut it and read
    # its rest as a message of its own, which the path had written as a forged CEF alert.
    (event, *_) = hostile_events()
    forged = "CEF:0|gatewatch|gatewatch|1|token_revoked_used|FORGERY|10|"
    long_path = "/v1/" + "a" * 70_000 + forged
    huge = AlertEvent(
        replace(event.alert, summary="GET " + long_path, details={**event.alert.details, "path": long_path},
                request_ids=tuple(f"req-{n}-" + "r" * 4000 for n in range(20))),
        event.state, event.sequence, event.at,
    )  # fmt: skip
    dead = tmp_path / "dl.ndjson"
    forwarder = {"name": "big", "type": "syslog", "host": "127.0.0.1", "port": rsyslog.ports[transport],
                 "transport": transport, "format": fmt, "dead_letters": str(dead), "max_message_bytes": 4096}  # fmt: skip
    offset = rsyslog.size(transport)
    forwarders = build_forwarders(parse_config({"forward": [forwarder]}))
    assert forwarders is not None
    forwarders.submit([huge, hostile_events()[1]])
    forwarders.close()
    assert forwarders.counts()["big"] == {"sent": 2}
    line, after = rsyslog.wait_for_lines(transport, offset, 2)
    assert len(line) <= 4096 and "/v1/aaaa".encode() in line and "…".encode() in line
    if fmt == "rfc5424":
        assert b"req-2-" in line and b"req-3-" not in line  # texts cut to 256 characters, the first three ids
    else:  # CEF's own limits (msg 1023 characters, cs4 4000) made it fit: no id of 4,000 characters fits cs4
        assert b"cs4=[]" in line and b"a" * 1000 in line
    assert b"FORGERY" not in line and b"token_replay" in after  # the next message is the next event
    assert not dead.exists()


def test_cef_values_keep_to_the_specifications_lengths_and_a_cut_never_ends_in_a_lone_backslash() -> None:
    from gatewatch.forward.cef import cef_line
    from gatewatch.forward.syslog import fitted_message

    (event, *_) = hostile_events()
    slashes = "\\" * 5000
    alert = replace(event.alert, summary=slashes, entity_value=slashes, reason=slashes, request_ids=(slashes,) * 5,
                    details={**event.alert.details, "path": slashes, "user_agent": slashes, "method": slashes})  # fmt: skip
    slashed = AlertEvent(alert, event.state, event.sequence, event.at)
    extension = dict(re.findall(r"(\w+)=((?:[^\\ =]|\\.)*)", cef_line(slashed).split("|", 7)[7]))
    assert len(extension["msg"].replace("\\\\", "\\")) == 1023 and extension["msg"].endswith("…")
    assert len(extension["cs2"].replace("\\\\", "\\")) == 4000
    # Four-byte characters: texts of 64 characters still make more than 2,048 bytes, so the bytes are cut, on a character.
    for wide, fmt in (("\U0001f600" * 3000, "rfc5424"), ("\U0001f600\\" * 3000, "cef_syslog")):
        alert = replace(alert, summary=wide, entity_value=wide, reason=wide, request_ids=(wide,),
                        details={**alert.details, "path": wide, "user_agent": wide, "method": wide, "token_sub": wide})  # fmt: skip
        forwarder = {"name": "s", "type": "syslog", "host": "h", "port": 1, "format": fmt, "max_message_bytes": 2048}
        config = parse_config({"forward": [forwarder]}).forward[0]
        message = fitted_message(AlertEvent(alert, event.state, event.sequence, event.at), config, "gw")  # type: ignore[arg-type]
        assert len(message) <= 2048 and message.decode()
        assert (len(message) - len(message.rstrip(b"\\"))) % 2 == 0
        if fmt == "rfc5424":
            assert len(message) > 2044  # cut, not rendered shorter
