"""Secrets in the logs never reach a store, file, document, alert or the terminal.

One replay over traffic that carries card numbers, CVVs, JWTs, Authorization
and Cookie headers and ``password=`` values (in paths, messages, user agents,
headers and invalid lines), then every table of the DuckDB store, the alerts
and dead-letter files, the search documents and the command's output are read
back: no raw value anywhere, the markers that replace them everywhere.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import duckdb
import orjson
import pytest

from gatewatch.cli import main
from gatewatch.config import load_config
from gatewatch.replay import replay
from ingest.ecs import dead_letter_document, event_document, transaction_document
from ingest.sinks.base import Batch

KEY = b"sweep-test-key"
PAN = "4111111111111111"
PAN_FORMS = (PAN, "4111 1111 1111 1111", "4111-1111-1111-1111")
PASSWORD = "hunter2"
COOKIE = "s3ss10n-value-77"
API_KEY = "K3Y-abcdef-99"
BASIC = base64.b64encode(b"bob:" + PASSWORD.encode()).decode()
OPAQUE = "opaque-tok-9f8e7d6c5b4a"  # a bearer token that is no JWT: only its header's name says what it is


def _jwt(claims: dict[str, Any]) -> str:
    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256'})}.{part(claims)}.c2lnbmF0dXJlLW9mLXRoZS10b2tlbg"


JWT = _jwt({"jti": "tok-42", "sub": "alice", "exp": 1772449200})
SECRETS = (*PAN_FORMS, PASSWORD, COOKIE, API_KEY, BASIC, JWT, JWT.split(".")[1], "cvv: 123", "cvv=123", OPAQUE)

FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" '
    "%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% "
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" '
    '"%REQ(X-REQUEST-ID)%" "%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" "%REQ(AUTHORIZATION)%" "%REQ(COOKIE)%"\n'
)


def _h(secret: str) -> str:
    return "h=" + hmac.new(KEY, secret.encode(), hashlib.sha256).hexdigest()[:12]


def _gateway_line(second: int, request_id: str, path: str, status: int, ua: str) -> str:
    return (
        f'[2026-03-02T09:00:{second:02d}.000Z] "GET {path} HTTP/1.1" {status} - 0 120 3 2 '
        f'"203.0.113.50" "{ua}" "{request_id}" "api.billing.example" "10.1.0.20:8080" '
        f'"Bearer {JWT}" "session={COOKIE}; theme=dark"'
    )


def _app_line(second: int, request_id: str, path: str, peer: str, message: str, status: int = 401) -> str:
    return json.dumps({
        "ts": f"2026-03-02T09:00:{second:02d}.100Z", "level": "warning", "msg": message, "request_id": request_id,
        "method": "GET", "path": path, "status": status, "user_id": "u-1", "org_id": "org-1",
        "token": {"jti": "tok-42", "sub": "alice"}, "peer": {"ip": peer},
    })  # fmt: skip


@pytest.fixture
def traffic(tmp_path: Path) -> dict[str, Path]:
    return write_traffic(tmp_path)


def write_traffic(tmp_path: Path) -> dict[str, Path]:
    """Gateway and app logs full of secrets, a config and its hash key file, in ``tmp_path``."""
    login = f"/v1/login?user=bob&password={PASSWORD}"
    gateway = [
        _gateway_line(i, f"r-{i}", login, 401, f"curl/8.5 (+{JWT})") for i in range(40)  # a 4xx burst
    ]
    gateway.append(_gateway_line(41, "r-pay", f"/v1/pay?card={PAN_FORMS[2]}&cvv=123&api_key={API_KEY}", 200, "app/1"))
    gateway.append(f'[2026-03-02T09:00:42.000Z] "GET /v1/x?password={PASSWORD}&token={JWT}')  # cut short
    # A dead letter whose headers stand only by their place in the format: a status out of range.
    # (Below, a path that is not UTF-8: an event, its bytes read as U+FFFD, its headers redacted by name.)
    gateway.append(_gateway_line(45, "r-999", "/v1/x", 999, "app/1").replace(f"Bearer {JWT}", f"Bearer {OPAQUE}"))
    latin1 = _gateway_line(46, "r-latin1", "/v1/caf\xe9", 200, "app/1").replace(f"Bearer {JWT}", f"Bearer {OPAQUE}")
    app = [
        _app_line(i, f"r-{i}", login, "10.0.0.10", f"login failed, card {PAN_FORMS[1]} cvv: 123") for i in range(40)
    ]
    app.append(_app_line(43, "r-rogue", f"/v1/pay?password={PASSWORD}&api_key={API_KEY}&card={PAN}", "10.9.9.9",
                         f"Authorization: Basic {BASIC} for card {PAN}", status=200))  # not the gateway
    app.append(f'{{"ts": "2026-03-02T09:00:44Z", "msg": "card {PAN}", "token": "{JWT}"')  # truncated JSON
    app.append(json.dumps({"ts": JWT, "msg": "cookie: session=" + COOKIE}))  # invalid timestamp
    gateway_log, app_log = tmp_path / "gateway.log", tmp_path / "app.log"
    gateway_log.write_bytes(("\n".join(gateway) + "\n").encode() + latin1.encode("latin-1") + b"\n")
    not_utf8 = f"\xff\xfe card {PAN} password={PASSWORD}\n".encode("latin-1")
    app_log.write_bytes(("\n".join(app) + "\n").encode() + not_utf8)
    key_file = tmp_path / "redact.key"
    key_file.write_bytes(KEY + b"\n")
    config = tmp_path / "gatewatch.yaml"
    config.write_text(json.dumps({
        "gateway": {"format": FORMAT},
        "trust": {"gateway_networks": ["10.0.0.0/24"]},
        "redact": {"hash_key_file": "redact.key"},
    }))  # fmt: skip
    return {"config": config, "gateway": gateway_log, "app": app_log}


class SearchDocuments:
    """Builds the search store's documents for every batch, as the search sink does, and keeps them."""

    def __init__(self) -> None:
        self.documents: list[bytes] = []

    def write(self, batch: Batch) -> None:
        docs: list[Any] = [event_document(e) for e in batch.events]
        docs += [transaction_document(t) for t in batch.transactions]
        docs += [a.to_document() for a in batch.alerts.values()]
        docs += [dead_letter_document(d) for d in batch.dead_letters]
        self.documents += [orjson.dumps(d) for d in docs]

    def close(self) -> None:
        pass


def _duckdb_text(path: Path) -> dict[str, str]:
    con = duckdb.connect(str(path), read_only=True)
    tables = [row[0] for row in con.execute("select table_name from information_schema.tables").fetchall()]
    text = {table: repr(con.execute(f'select * from "{table}"').fetchall()) for table in tables}
    con.close()
    return text


def _assert_clean(where: str, text: str) -> None:
    leaked = [secret for secret in SECRETS if secret in text]
    assert not leaked, f"{where} holds {leaked}"


def test_replay_stores_and_prints_no_secret(
    traffic: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    out = tmp_path / "out"
    store = out / "store.duckdb"
    with caplog.at_level(logging.INFO):
        code = main([
            "-v", "replay", "--config", str(traffic["config"]), "--gateway", str(traffic["gateway"]),
            "--app", str(traffic["app"]), "--alerts-out", str(out / "alerts.ndjson"),
            "--dead-letters", str(out / "dead.ndjson"), "--store", f"duckdb:{store}",
        ])  # fmt: skip
    assert code == 0
    tables = _duckdb_text(store)
    assert {"events", "transactions", "alerts", "dead_letters"} <= tables.keys()
    alerts = (out / "alerts.ndjson").read_text()
    dead = (out / "dead.ndjson").read_bytes().decode("utf-8", "backslashreplace")
    printed = capsys.readouterr()
    for where, text in {
        **tables, "alerts file": alerts, "dead-letter file": dead,
        "terminal": printed.out + printed.err, "log": caplog.text,
    }.items():  # fmt: skip
        _assert_clean(where, text)

    # The evidence is there, as markers, and one secret has one hash wherever it was.
    rules = {json.loads(line)["rule"] for line in alerts.splitlines()}
    assert {"http_4xx_burst", "gateway_bypass"} <= rules
    password_marker = f"[REDACTED:secret {_h(PASSWORD)}]"
    for where in ("events", "transactions", "dead_letters"):
        assert password_marker in tables[where], where
    assert password_marker in alerts  # the bypass alert's summary and details carry the path
    assert password_marker in dead
    pan_marker = f"[REDACTED:pan last4=1111 {_h(PAN)}]"
    for where, text in (("events", tables["events"]), ("dead letters", dead), ("alerts", alerts)):
        assert pan_marker in text, where
    assert "[REDACTED:jwt jti=tok-42 sub=alice h=" in tables["events"]
    assert f"Bearer [REDACTED:jwt jti=tok-42 sub=alice {_h(JWT)}]" in tables["events"]
    assert f"Basic [REDACTED:authorization {_h(BASIC)}]" in tables["events"]
    assert f"[REDACTED:cookie {_h(f'session={COOKIE}; theme=dark')}]" in tables["events"]
    assert f"cvv: [REDACTED:cvv {_h('123')}]" in tables["events"]
    # The truncated gateway line, the status 999, two broken app lines, the app line that is not UTF-8 at all.
    assert dead.count("\n") == 5
    assert "/v1/caf\ufffd" in tables["events"]


def test_search_documents_hold_no_secret(traffic: dict[str, Path]) -> None:
    documents = SearchDocuments()
    stats = replay(load_config(traffic["config"]), [traffic["gateway"]], [traffic["app"]], [documents])
    assert stats.events == 83 and stats.dead_letters == 5 and stats.transactions > 0  # the latin-1 path is an event
    text = b"\n".join(documents.documents).decode("utf-8", "backslashreplace")
    _assert_clean("search documents", text)
    assert f"password=[REDACTED:secret {_h(PASSWORD)}]" in text
    assert f"[REDACTED:pan last4=1111 {_h(PAN)}]" in text


class _Hook(BaseHTTPRequestHandler):
    bodies: list[bytes] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        self.bodies.append(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_forwarded_alert_events_hold_no_secret(
    traffic: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What leaves for a SIEM — a webhook's JSON, CEF datagrams, the lifecycle file — is built from redacted events."""
    monkeypatch.setenv("SWEEP_HOOK_SECRET", "hook-secret")
    hook = ThreadingHTTPServer(("127.0.0.1", 0), _Hook)
    _Hook.bodies = []
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    cef = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    cef.bind(("127.0.0.1", 0))
    cef.settimeout(5)
    config = json.loads(traffic["config"].read_text())
    config["forward"] = [
        {"name": "hook", "type": "webhook", "url": f"http://127.0.0.1:{hook.server_address[1]}/",
         "secret_env": "SWEEP_HOOK_SECRET", "dead_letters": str(tmp_path / "hook.dl")},
        {"name": "cef", "type": "syslog", "host": "127.0.0.1", "port": cef.getsockname()[1], "transport": "udp",
         "format": "cef", "dead_letters": str(tmp_path / "cef.dl")},
    ]  # fmt: skip
    traffic["config"].write_text(json.dumps(config))
    out = tmp_path / "out"
    try:
        code = main([
            "replay", "--config", str(traffic["config"]), "--gateway", str(traffic["gateway"]),
            "--app", str(traffic["app"]), "--alerts-out", str(out / "alerts.ndjson"), "--store", "none",
        ])  # fmt: skip
        datagrams = []
        while True:
            try:
                datagrams.append(cef.recv(65535))
            except TimeoutError:
                break
    finally:
        hook.shutdown()
        hook.server_close()
        cef.close()
    assert code == 0
    lifecycle = (out / "alerts.lifecycle.ndjson").read_text()
    assert _Hook.bodies and datagrams and lifecycle, "every channel must have carried the alerts"
    for where, text in {
        "webhook bodies": b"\n".join(_Hook.bodies).decode(), "CEF datagrams": b"\n".join(datagrams).decode(),
        "lifecycle file": lifecycle,
    }.items():  # fmt: skip
        _assert_clean(where, text)
        assert "[REDACTED:" in text, where  # the bypass alert carries the redacted path
