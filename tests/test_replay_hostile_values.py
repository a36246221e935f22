"""``replay`` never aborts on data: the issue's records end as events or dead letters in every sink."""

from __future__ import annotations

from pathlib import Path

import duckdb
import orjson
import pytest

from gatewatch.cli import main

TS = "2026-03-02T09:00:0{}Z"
LINES = [
    {"ts": TS.format(0), "request_id": "r1", "method": "GET", "path": "/a", "status": 3000000000},
    {"ts": TS.format(1), "request_id": "r2", "method": "GET", "path": "/b", "status": 200,
     "token": {"jti": "j1", "sub": "u", "exp": 1e300, "iat": 1e300}, "peer": {"ip": "10.9.9.9"}},
    {"ts": TS.format(2), "request_id": "r3", "method": "GET", "path": "/c", "status": 200,
     "token": {"jti": "j2", "sub": "u", "exp": -1e300}, "peer": {"ip": "10.0.0.9"}},
    {"ts": 1e300, "request_id": "r4", "status": 200},
    {"ts": TS.format(3), "request_id": "r5", "status": 200, "latency_ms": 2e19},
    {"ts": "9999-12-31T23:59:59Z", "request_id": "r6", "status": 200},
]  # fmt: skip


@pytest.mark.parametrize("store", ["duckdb", "none"])
def test_replay_stores_hostile_values_as_events_or_dead_letters(tmp_path: Path, store: str) -> None:
    app = tmp_path / "app.log"
    app.write_bytes(b"".join(orjson.dumps(line) + b"\n" for line in LINES))
    config = tmp_path / "gatewatch.yaml"
    config.write_text("trust:\n  gateway_networks: [10.0.0.0/24]\n")
    db = tmp_path / "store.duckdb"
    alerts = tmp_path / "alerts.ndjson"
    dead = tmp_path / "dead.ndjson"
    code = main([
        "replay", "--config", str(config), "--app", str(app), "--alerts-out", str(alerts),
        "--dead-letters", str(dead), "--store", f"duckdb:{db}" if store == "duckdb" else "none",
    ])  # fmt: skip
    assert code == 0
    reasons = sorted(orjson.loads(line)["reason"] for line in dead.read_bytes().splitlines())
    assert reasons == ["out_of_range"] * 3
    written = [orjson.loads(line) for line in alerts.read_bytes().splitlines()]
    assert {a["entity"]["value"] for a in written} >= {"10.9.9.9"}  # the untrusted peer still alerts
    if store == "duckdb":
        con = duckdb.connect(str(db), read_only=True)
        events = con.sql("select request_id, token_exp, duration_ms, labels from events order by request_id").fetchall()
        dead_rows = con.sql("select count(*) from dead_letters").fetchall()[0]
        con.close()
        assert [row[0] for row in events] == ["r2", "r3", "r5"]
        assert all(row[1] is None and row[2] is None for row in events)
        assert dead_rows == (3,)


def test_a_lone_surrogate_in_a_billing_line_does_not_hide_its_request(tmp_path: Path) -> None:
    # A red-team trial: one "\ud800" a client got into a logged field made the line a dead letter, so its
    # request raised neither gateway_bypass nor token_cross_org.
    line = (b'{"ts": "2026-03-02T09:00:00Z", "request_id": "r1", "method": "GET", "path": "/v1/invoices/7", '
            b'"status": 200, "message": "search \\ud800", "peer": {"ip": "10.9.9.9"}, "org_id": "org-2", '
            b'"token": {"jti": "j1", "sub": "u", "org": "org-1"}}\n')  # fmt: skip
    (tmp_path / "app.log").write_bytes(line)
    (tmp_path / "gatewatch.yaml").write_text("trust:\n  gateway_networks: [10.0.0.0/24]\n")
    alerts, dead = tmp_path / "alerts.ndjson", tmp_path / "dead.ndjson"
    assert main(["replay", "--config", str(tmp_path / "gatewatch.yaml"), "--app", str(tmp_path / "app.log"),
                 "--alerts-out", str(alerts), "--dead-letters", str(dead), "--store", "none"]) == 0  # fmt: skip
    assert not dead.exists() or dead.read_bytes() == b""
    rules = {orjson.loads(a)["rule"] for a in alerts.read_bytes().splitlines()}
    assert rules == {"gateway_bypass", "token_cross_org"}


def test_replay_exits_2_when_alert_events_were_neither_sent_nor_dead_lettered(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Re-verification: receiver down and the dead-letter folder unwritable, replay said the events were
    # left for "serve after a restart" and exited 0.
    app = tmp_path / "app.log"
    app.write_bytes(orjson.dumps(LINES[1]) + b"\n")  # Billing served a peer that is not the gateway
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the dead letters' folder should be")
    monkeypatch.setenv("GW_T_SECRET", "s3cret")
    config = tmp_path / "gatewatch.yaml"
    config.write_text(
        "trust:\n  gateway_networks: [10.0.0.0/24]\n"
        "forward:\n  - {name: soc, type: webhook, url: 'http://127.0.0.1:9/hook', max_attempts: 1,\n"
        "     secret_env: GW_T_SECRET,\n"
        f"     drain_timeout_secs: 0.5, retry_max_backoff_secs: 0.1, dead_letters: '{blocker / 'dl.ndjson'}'}}\n"
    )
    code = main(["replay", "--config", str(config), "--app", str(app), "--alerts-out", str(tmp_path / "a.ndjson"),
                 "--store", "none"])  # fmt: skip
    assert code == 2
