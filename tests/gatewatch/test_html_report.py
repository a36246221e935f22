"""``gatewatch report``: what the page shows, that data cannot inject markup, and the CLI contract."""

from __future__ import annotations

import base64
import hashlib
import re
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pandas as pd
import pytest

from gatewatch.cli import main
from gatewatch.hunt import ALERT_COLUMNS, EVENT_COLUMNS, _typed
from gatewatch.html_report import ReportData, render_report, searched


class Page(HTMLParser):
    """The alert cards, script bodies and every element of a rendered page."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.cards: list[dict[str, str | None]] = []
        self.scripts: list[str] = []
        self.tags: set[str] = set()
        self._in_script = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)
        attributes = dict(attrs)
        if tag == "details" and "alert" in (attributes.get("class") or ""):
            self.cards.append(attributes)
        self._in_script = tag == "script"
        if self._in_script:
            self.scripts.append("")

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.scripts[-1] += data


def test_the_demo_report_shows_every_injected_incident(demo_out: Path) -> None:
    page = Page((demo_out / "report.html").read_text(encoding="utf-8"))
    shown = {(card["data-rule"], card["data-entity"]) for card in page.cards}
    expected = orjson.loads((demo_out / "expected.json").read_bytes())
    injected = {(i["rule"], i["entity_value"]) for i in expected["injections"] if i["required"]}
    assert injected and injected <= shown
    alerts = [orjson.loads(line) for line in (demo_out / "alerts.ndjson").read_bytes().splitlines()]
    assert len(page.cards) == len(alerts)


def test_each_alert_count_is_shown_in_its_rules_unit(demo_out: Path) -> None:
    # An analyst's trial: "150×" was a 4xx burst's errors and "19×" a 5xx burst's buckets, shown alike.
    text = (demo_out / "report.html").read_text(encoding="utf-8")
    alerts = [orjson.loads(line) for line in (demo_out / "alerts.ndjson").read_bytes().splitlines()]
    units = {"http_4xx_burst": "errors", "http_5xx_burst": "buckets", "gateway_bypass": "requests"}
    for alert in alerts:
        if alert["rule"] in units:
            assert f'<span class="when">· {alert["count"]} {units[alert["rule"]]} · ' in text


def test_the_page_fetches_nothing_and_runs_only_its_own_script(demo_out: Path) -> None:
    text = (demo_out / "report.html").read_text(encoding="utf-8")
    page = Page(text)
    assert not page.tags & {"link", "img", "iframe", "object", "embed"}
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", text)
    (script,) = page.scripts
    digest = base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
    (policy,) = re.findall(r'http-equiv="Content-Security-Policy" content="([^"]+)"', text)
    assert "default-src &#x27;none&#x27;" in policy and f"sha256-{digest}" in policy


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>"\'&\x1b[31m'


def hostile_data(text: str = HOSTILE) -> ReportData:
    ts = pd.Timestamp("2026-03-02T09:00:00Z")
    events = pd.DataFrame({column: _typed(None, kind, 2) for column, (_, kind) in EVENT_COLUMNS.items()})
    values = {
        "id": ["e1", "e2"], "dataset": ["envoy.access", "billing.app"], "ts": [ts, ts + pd.Timedelta(seconds=1)],
        "request_id": [text, text], "method": ["GET", "GET"], "path": [f"/{text}", f"/{text}"],
        "status": [403, 200], "route_name": [text, None], "source_ip": [text, "10.9.9.9"],
        "peer_identity": [None, text], "message": [None, text], "user_agent": [text, None],
    }  # fmt: skip
    for column, column_values in values.items():
        events[column] = _typed(pd.Series(column_values, dtype="object"), EVENT_COLUMNS[column][1], 2)
    alerts = pd.DataFrame({
        column: _typed(pd.Series([value], dtype="object"), kind, 1)
        for (column, (_, kind)), value in zip(ALERT_COLUMNS.items(), [
            "a1", "gateway_bypass", "high", "source.ip", text, ts, ts, 2, [text], text, text])
    })  # fmt: skip
    return ReportData(f"duckdb:/{text}", events, alerts, 0)


def test_data_cannot_inject_markup() -> None:
    text = render_report(hostile_data())
    assert "<script>alert" not in text and "<img" not in text and "onerror=alert(1)>" not in text
    assert "\x1b" not in text and "\\x1b[31m" in text  # shown, not acted on
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in text
    page = Page(text)
    assert len(page.scripts) == 1 and not page.tags & {"img"}
    (card,) = page.cards
    assert card["data-entity"] == HOSTILE.replace("\x1b", "\\x1b")  # the attribute reads back as the text


def test_report_command_errors_are_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "r.html"
    assert main(["report", "--store", f"duckdb:{tmp_path / 'missing.duckdb'}", "--out", str(out)]) == 2
    assert main(["report", "--store", "none", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 2 and "Traceback" not in err
    assert "missing.duckdb" in err and "'none' is not duckdb:PATH" in err
    assert not out.exists()


def test_report_command_writes_the_page(demo_out: Path, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "report.html"
    assert main(["report", "--store", f"duckdb:{demo_out / 'gatewatch.duckdb'}", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == (demo_out / "report.html").read_text(encoding="utf-8")


def test_an_empty_report_says_where_it_looked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A trial: a misspelt store.index_prefix wrote a "no records" page, exit 0, naming no index."""
    (tmp_path / "empty.log").write_text("")
    store = f"duckdb:{tmp_path / 'empty.duckdb'}"
    assert main(["replay", "--gateway", str(tmp_path / "empty.log"), "--alerts-out", str(tmp_path / "a.ndjson"),
                 "--store", store]) == 0  # fmt: skip
    capsys.readouterr()
    assert main(["report", "--store", store, "--out", str(tmp_path / "r.html")]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert f"report: no events, alerts or dead letters in {store}: check --store" in err, err


def test_a_search_store_is_named_with_the_indices_read() -> None:
    assert searched("elasticsearch:https://u:pw@es.internal:9200", "gw-nonexist") == (
        "elasticsearch:https://es.internal:9200 (indices gw-nonexist-*)"
    )
    assert searched("duckdb:/var/lib/gatewatch.duckdb", "gatewatch") == "duckdb:/var/lib/gatewatch.duckdb"


# ESC, a bidi override, the line separator, NEL (C1) and LF, between two markers.
CONTROLS = "MARK\x1b[31m\u202e\u2028\x85\nEND"


def test_control_characters_and_bidi_overrides_are_shown_as_escapes() -> None:
    text = render_report(hostile_data(CONTROLS))
    for raw in ("\x1b", "\u202e", "\u2028", "\x85"):
        assert raw not in text
    shown = "MARK\\x1b[31m\\u202e\\u2028\\x85\\nEND"  # as ingest.escape.visible writes them
    assert text.count("MARK") == text.count(shown) >= 10  # every place the data is drawn, LF included


def test_a_stored_number_that_is_not_one_is_escaped_too() -> None:
    data = hostile_data()
    data.alerts["count"] = pd.array([None], dtype="Int64")  # a store row without its count
    text = render_report(data)
    assert "<NA>" not in text and "&lt;NA&gt; requests" in text


def test_requests_are_counted_once_and_evidence_is_shown_in_time_order() -> None:
    ts = pd.Timestamp("2026-03-02T09:00:00Z")
    rows = [("r-b", 30), ("r-a", 20), ("r-c", 10), ("r-c", 10.5), (None, 40), ("r-d", 50), ("r-e", 60), ("r-f", 5)]
    n = len(rows)
    events = pd.DataFrame({column: _typed(None, kind, n) for column, (_, kind) in EVENT_COLUMNS.items()})
    values = {"id": [f"e{i}" for i in range(n)], "dataset": ["envoy.access"] * n,
              "ts": [ts + pd.Timedelta(seconds=s) for _, s in rows], "request_id": [r for r, _ in rows],
              "status": [404] * n, "source_ip": ["198.51.100.66"] * n}  # fmt: skip
    for column, column_values in values.items():
        events[column] = _typed(pd.Series(column_values, dtype="object"), EVENT_COLUMNS[column][1], n)
    # The alert lists ids as its rule gave them (not in time order), one with no stored record.
    evidence = ["r-a", "r-b", "r-c", "r-d", "r-e", "r-f", "r-gone"]
    alerts = pd.DataFrame({
        column: _typed(pd.Series([value], dtype="object"), kind, 1)
        for (column, (_, kind)), value in zip(ALERT_COLUMNS.items(), [
            "a1", "http_4xx_burst", "medium", "source.ip", "198.51.100.66", ts, ts, 7, evidence, "burst", None])
    })  # fmt: skip
    text = render_report(ReportData("duckdb:x", events, alerts, 0))
    assert '<div class="n">7</div><div class="l">gateway requests' in text  # r-c's retry once; the line without an id
    shown = re.findall(r"request <code>(r-[a-z]+)</code>", text)
    assert shown == ["r-f", "r-c", "r-a", "r-b", "r-d"]  # the earliest five, earliest first
    assert "2 more evidence request ids" in text


def test_a_route_an_alert_points_at_is_charted_however_quiet_it_is() -> None:
    # An analyst's trial: the report charted the 8 busiest routes, and a burst on the 9th, quietest one had no chart.
    from gatewatch.html_report import MAX_ROUTES

    ts = pd.Timestamp("2026-03-02T09:00:00Z")
    routes = [f"busy_{i}" for i in range(MAX_ROUTES) for _ in range(3)] + ["admin_quiet"]
    n = len(routes)
    events = pd.DataFrame({column: _typed(None, kind, n) for column, (_, kind) in EVENT_COLUMNS.items()})
    values = {"id": [f"e{i}" for i in range(n)], "dataset": ["envoy.access"] * n, "route_name": routes,
              "ts": [ts + pd.Timedelta(seconds=i) for i in range(n)], "request_id": [f"r{i}" for i in range(n)],
              "status": [200] * (n - 1) + [503]}  # fmt: skip
    for column, column_values in values.items():
        events[column] = _typed(pd.Series(column_values, dtype="object"), EVENT_COLUMNS[column][1], n)
    alerts = pd.DataFrame({
        column: _typed(pd.Series([value], dtype="object"), kind, 1)
        for (column, (_, kind)), value in zip(ALERT_COLUMNS.items(), [
            "a1", "http_5xx_burst", "high", "route", "admin_quiet", ts, ts, 1, [f"r{n - 1}"], "burst", None])
    })  # fmt: skip
    text = render_report(ReportData("duckdb:x", events, alerts, 0))
    charted = re.findall(r'<div class="route"><h3><code>([^<]+)</code>', text)
    assert charted[0] == "admin_quiet" and len(charted) == MAX_ROUTES
    assert "1 quieter routes not shown." in text
