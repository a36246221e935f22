"""The config contract as a new user meets it: documented names work, mistakes are one line and exit 2."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from gatewatch.cli import main
from gatewatch.config import load_config
from gatewatch.errors import ConfigError
from gatewatch.topology import build_parsers
from ingest.records import Dataset, Event, Origin, RawRecord

# The Billing field names the core issue documents, in its order: the contract, not read from the code.
DOCUMENTED_NAMES = (
    "ts", "request_id", "method", "path", "status", "latency_ms", "user_id", "org_id", "action", "outcome",
    "token.jti", "token.sub", "token.org", "token.exp", "token.iat", "peer.ip", "peer.spiffe_id", "level", "msg",
)
# Written from the core issue's list: each documented name, remapped to where this Billing writes it.
DOCUMENTED_CONFIG = """\
app:
  fields:
    ts: "@t"
    request_id: http.rid
    method: http.verb
    path: http.route
    status: http.code
    latency_ms: http.took_ms
    user_id: who.user
    org_id: who.org
    action: what
    outcome: result
    token.jti: jwt.id
    token.sub: jwt.subject
    token.org: jwt.tenant
    token.exp: jwt.expires
    token.iat: jwt.issued
    peer.ip: conn.addr
    peer.spiffe_id: conn.spiffe
    level: severity
    msg: text
"""
# The same config in gatewatch 0.1's internal names (ts, method, ... were already right).
OLD_NAMES = {
    "latency_ms": "duration_ms", "token.jti": "token_jti", "token.sub": "token_sub", "token.org": "token_org",
    "token.exp": "token_exp", "token.iat": "token_iat", "peer.ip": "source_ip", "peer.spiffe_id": "peer_identity",
    "msg": "message",
}
LINE = orjson.dumps({
    "@t": "2024-03-01T11:00:00.250Z", "severity": "warn", "text": "cross-org read",
    "http": {"rid": "rid-9", "verb": "GET", "route": "/v1/invoices/7", "code": 200, "took_ms": 3.5},
    "who": {"user": "user-17", "org": "org-1"}, "what": "invoice.read", "result": "success",
    "jwt": {"id": "j-1", "subject": "user-17", "tenant": "org-2", "expires": 1709290000, "issued": 1709280000},
    "conn": {"addr": "10.9.9.9", "spiffe": "spiffe://billing.example/ns/ops/sa/reconciler"},
})


def app_event(config_text: str, tmp_path: Path) -> Event:
    path = tmp_path / "gatewatch.yaml"
    path.write_text(config_text)
    # build_parsers is what replay's Pipeline and serve's ingest stage both compile their parsers with.
    parser = build_parsers(load_config(path))[Dataset.APP]
    event = parser(RawRecord(Origin(Dataset.APP, "billing", 1), LINE))
    assert isinstance(event, Event), event
    return event


def assert_every_field_arrived(e: Event) -> None:
    assert e.ts == 1709290800.25
    assert (e.request_id, e.method, e.path, e.status, e.duration_ms) == ("rid-9", "GET", "/v1/invoices/7", 200, 3.5)
    assert (e.user_id, e.org_id, e.action, e.outcome, e.level, e.message) == (
        "user-17", "org-1", "invoice.read", "success", "warn", "cross-org read",
    )
    assert (e.token_jti, e.token_sub, e.token_org, e.token_exp, e.token_iat) == (
        "j-1", "user-17", "org-2", 1709290000.0, 1709280000.0,
    )
    assert (e.source_ip, e.peer_identity) == ("10.9.9.9", "spiffe://billing.example/ns/ops/sa/reconciler")


def test_a_config_written_from_the_documented_names_fills_every_field(tmp_path: Path) -> None:
    assert [line.split(":")[0].strip() for line in DOCUMENTED_CONFIG.splitlines()[2:]] == list(DOCUMENTED_NAMES)
    assert_every_field_arrived(app_event(DOCUMENTED_CONFIG, tmp_path))


def test_the_old_internal_names_still_work_with_a_warning_naming_the_new_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    old = DOCUMENTED_CONFIG
    for new, internal in OLD_NAMES.items():
        old = old.replace(f"    {new}:", f"    {internal}:")
    with caplog.at_level(logging.WARNING):
        assert_every_field_arrived(app_event(old, tmp_path))
    assert "app.fields.token_jti is deprecated: rename it to 'token.jti'" in caplog.text
    assert "app.fields.source_ip is deprecated: rename it to 'peer.ip'" in caplog.text


def test_an_unknown_app_field_is_refused_naming_it_and_the_valid_names(tmp_path: Path) -> None:
    path = tmp_path / "gatewatch.yaml"
    path.write_text("app:\n  fields: {token.jtl: jwt.id}\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith("invalid config: app.fields: ") and "unknown field 'token.jtl'" in message
    assert ", ".join(DOCUMENTED_NAMES) in message


def cli_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str) -> str:
    path = tmp_path / "gatewatch.yaml"
    path.write_text(config)
    log = tmp_path / "envoy.log"
    log.write_text("")
    code = main(["replay", "--config", str(path), "--gateway", str(log), "--alerts-out", str(tmp_path / "a.ndjson")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err  # one line, not wrapped at 80 columns, no traceback
    return err.rstrip("\n")


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        # START_TIME variants Envoy accepts but that carry no date
        ('gateway:\n  format: "[%START_TIME(%f.%1f.%2f.%3f)%] %RESPONSE_CODE%"\n',
         "error: gateway.format: its %START_TIME(...)% has no date"),
        ('gateway:\n  json_format: {ts: "%START_TIME(%f)%", status: "%RESPONSE_CODE%"}\n',
         "error: gateway.json_format.ts: its %START_TIME(...)% has no date"),
        # unknown operator syntax, unbalanced %
        ('gateway:\n  format: "[%START_TIME%] %REQ(:METHOD %RESPONSE_CODE%"\n',
         "error: gateway.format: no valid command operator at position 15"),
        ('gateway:\n  format: "[%START_TIME%] 100% done"\n', "error: gateway.format: no valid command operator"),
        ('gateway:\n  json_format: {t: "%START_TIME%", http: {line: "%REQ(:METHOD) %PROTOCOL%"}}\n',
         "error: gateway.json_format.http.line: no valid command operator"),
        ('gateway:\n  format: "[%START_TIME(%Q)%] %RESPONSE_CODE%"\n',
         "error: gateway.format: START_TIME(%Q): unsupported specifier %Q"),
        # bad CIDRs
        ("trust:\n  gateway_networks: [10.0.0.0/33]\n",
         "error: invalid config: trust.gateway_networks: ...'10.0.0.0/33' is not a CIDR"),
        ("trust:\n  internal_callers: [spiffe://billing.example/ns/ops/sa/reconciler, 10.3.0.0/33]\n",
         "error: invalid config: trust.internal_callers: ...'10.3.0.0/33' is not a CIDR"),
        # missing files
        ("tokens:\n  revoked: missing-revoked.csv\n", "error: tokens.revoked: cannot read"),
        ("gateway:\n  unwrap: ''\n", "error: invalid config: gateway.unwrap: ...expected none, docker, cri"),
    ],
)
def test_config_and_format_errors_are_one_line_naming_the_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: str, expected: str
) -> None:
    line = cli_error(tmp_path, capsys, config)
    key, _, detail = expected.partition("...")  # the key starts the line; pydantic may put words between
    assert line.startswith(key) and detail in line, line


def test_a_subsecond_start_time_is_accepted_when_the_runtime_dates_each_line(tmp_path: Path) -> None:
    path = tmp_path / "gatewatch.yaml"
    path.write_text('gateway:\n  unwrap: cri\n  format: "%START_TIME(%f)% %RESPONSE_CODE%"\n')
    config = load_config(path)
    parser = build_parsers(config)[Dataset.GATEWAY]
    event = parser(RawRecord(Origin(Dataset.GATEWAY, "envoy", 1), b"123000000 503", created=1762164000.5))
    assert isinstance(event, Event) and (event.ts, event.created, event.status) == (1762164000.5, 1762164000.5, 503)


def test_a_missing_config_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", "--config", str(tmp_path / "nope.yaml"), "--gateway", "x", "--alerts-out", "a"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "cannot read config file" in err


# Envoy's own json_format documentation example: no START_TIME anywhere.
ENVOY_DOC_JSON_FORMAT = "gateway:\n  json_format: {protocol: '%PROTOCOL%', duration: '%DURATION%', " \
    "my_custom_header: '%REQ(MY_CUSTOM_HEADER)%'}\n"
# Istio's default format as istio.io displays it: a Go string, \" escapes and a literal \n.
ISTIO_PASTED = (
    "gateway:\n  format: '[%START_TIME%] \\\"%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%\\\" "
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    "\\\"%UPSTREAM_TRANSPORT_FAILURE_REASON%\\\" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% \\\"%REQ(X-FORWARDED-FOR)%\\\" \\\"%REQ(USER-AGENT)%\\\" "
    "\\\"%REQ(X-REQUEST-ID)%\\\" \\\"%REQ(:AUTHORITY)%\\\" \\\"%UPSTREAM_HOST%\\\" %UPSTREAM_CLUSTER_RAW% "
    "%UPSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% "
    "%ROUTE_NAME%\\n'\n"
)


@pytest.mark.parametrize(
    ("config", "warning"),
    [
        (ENVOY_DOC_JSON_FORMAT, "gateway.json_format has no %START_TIME%: every line will be a missing_timestamp "
         "dead letter; add %START_TIME% to the format, or read container logs with gateway.unwrap: docker or cri"),
        (ISTIO_PASTED, "gateway.format contains \\\" or a literal \\n"),
    ],
)
def test_formats_that_can_never_yield_an_event_warn_at_load_with_the_fix(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, config: str, warning: str
) -> None:
    path = tmp_path / "gatewatch.yaml"
    path.write_text(config)
    with caplog.at_level(logging.WARNING):
        load_config(path)
    assert warning in caplog.text


def test_a_format_without_start_time_is_quiet_when_the_runtime_dates_the_lines(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "gatewatch.yaml"
    path.write_text(ENVOY_DOC_JSON_FORMAT + "  unwrap: docker\n")
    with caplog.at_level(logging.WARNING):
        load_config(path)
    assert "START_TIME" not in caplog.text
