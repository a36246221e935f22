"""Attacker bytes in log data never reach the operator's terminal raw, and never as rich markup."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

from gatewatch.serve_stage import kv
from ingest.escape import quoted, visible

HOSTILE_PATH = "/v1/invoices\x1b[2J\x1b[31mPWNED\r\nrecords 0  events 0 [/x] [bold]\x9b1m\u202egnp.exe"


def test_a_hostile_path_goes_through_replay_and_prints_inert(tmp_path: Path) -> None:
    app = tmp_path / "app.log"
    line = {"ts": "2026-03-02T09:00:00Z", "request_id": "r-1", "method": "GET", "path": HOSTILE_PATH,
            "status": 200, "peer": {"ip": "10.9.9.9"}, "msg": "[/x]\x1b]0;title\x07"}  # fmt: skip
    app.write_bytes(orjson.dumps(line) + b"\n")
    config = tmp_path / "gatewatch.yaml"
    config.write_text("trust: {gateway_networks: [10.0.0.0/24]}\n")
    alerts = tmp_path / "alerts.ndjson"
    run = subprocess.run(
        [sys.executable, "-m", "gatewatch.cli", "replay", "--config", str(config), "--app", str(app),
         "--alerts-out", str(alerts), "--store", f"duckdb:{tmp_path / 's.duckdb'}"],
        capture_output=True, env={"COLUMNS": "400", "PATH": "/usr/bin:/bin"}, timeout=120,
    )  # fmt: skip
    printed = run.stdout + run.stderr
    assert run.returncode == 0, printed
    assert b"Traceback" not in printed
    for raw in (b"\x1b", b"\r", b"\xc2\x9b", "\u202e".encode()):
        assert raw not in printed
    text = printed.decode()
    assert "[/x]" in text  # shown literally, not taken as markup
    assert "\\x1b[31mPWNED\\r\\nrecords" in text  # the forged line stays inside the table, visibly escaped
    summaries = [orjson.loads(row)["summary"] for row in alerts.read_bytes().splitlines()]
    assert summaries and all("\x1b" not in s and "\n" not in s and "\\x1b[2J" in s for s in summaries)


def test_visible_escapes_every_control_and_keeps_text() -> None:
    assert visible("GET /ok café ✓") == "GET /ok café ✓"
    assert visible("a\x00b\x1bc\x7fd\x85e\tf\u2066g") == "a\\x00b\\x1bc\\x7fd\\x85e\\tf\\u2066g"
    hostile = "\x1b[31m\r\n\u202e"
    assert visible(visible(hostile)) == visible(hostile) == "\\x1b[31m\\r\\n\\u202e"  # escaping twice is harmless
    assert visible("a\u2028b\u2029c") == "a\\u2028b\\u2029c"  # line and paragraph separators break lines too
    assert visible("\u061cx") == "\\u061cx"  # the Arabic letter mark, a bidi control
    dangerous = {*range(0x20), 0x7F, *range(0x80, 0xA0), 0x200E, 0x200F, *range(0x202A, 0x202F), *range(0x2066, 0x206A),
                 0x2028, 0x2029, 0x061C}  # fmt: skip
    every = "".join(chr(c) for c in range(0x30000) if not 0xD800 <= c <= 0xDFFF)
    assert not {ord(c) for c in visible(every)} & dangerous


def test_log_values_are_quoted_and_escaped() -> None:
    line = kv("store_unreachable", error='refused\nevent=forged key="v"', path="/a\x1b[31m\\", n=3)
    assert "\n" not in line and "\x1b" not in line
    assert line == 'event=store_unreachable error="refused\\nevent=forged key=\\"v\\"" path="/a\\x1b[31m\\\\" n=3'
    assert quoted("plain-word") == "plain-word" and quoted("") == '""'
