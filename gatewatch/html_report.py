"""``gatewatch report``: one self-contained HTML page an analyst opens from any store.

Sections: alerts by rule and severity over time, 4xx/5xx rates per route with
the alerts marked, top clients, and each alert's evidence (the timelines of its
requests across gateway and Billing, from the events).

The page fetches nothing: CSS, SVG and its one small script are inline, and a
Content-Security-Policy (``default-src 'none'``, the script allowed by its hash)
stops the browser from loading or running anything else. Every data-derived
text goes through :func:`~gatewatch.svg_charts.esc` — control characters, bidi
overrides and line separators shown as escapes, as in the terminal, then
HTML-escaped — log lines are written by whoever sends requests.

Named ``html_report`` because ``gatewatch/report.py`` is the terminal run summary
that ``replay`` and ``demo`` print; the two share no code.
"""

from __future__ import annotations

import base64
import hashlib
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pandas as pd

from detectors import registry
from gatewatch.errors import GatewatchError
from gatewatch.hunt import NO_ROUTE, event_routes, load_alerts, load_events, route_rates, timeline, top_clients
from gatewatch.notebook import open_store
from gatewatch.svg_charts import (
    COLOR_4XX,
    COLOR_5XX,
    SEVERITY_COLORS,
    SEVERITY_ORDER,
    Bucket,
    Marker,
    Span,
    esc,
    minutes,
    rate_chart,
    swimlanes,
)
from ingest.records import Dataset

MAX_ROUTES = 8
EVIDENCE_REQUESTS = 5
EVIDENCE_RECORDS = 12
BUCKET_SECS = 60.0


@dataclass(frozen=True)
class ReportData:
    """What the page shows: the canonical events and alerts of one store (see :mod:`gatewatch.hunt`)."""

    source: str
    events: pd.DataFrame
    alerts: pd.DataFrame
    dead_letters: int

    def is_empty(self) -> bool:
        return not len(self.events) and not len(self.alerts) and not self.dead_letters


def load_report_data(url: str, index_prefix: str = "gatewatch") -> ReportData:
    """Read everything the report needs from the store at ``url`` (``duckdb:``, ``elasticsearch:``, ``opensearch:``)."""
    store = open_store(url, index_prefix)
    dead_letters = len(store.dead_letters(limit=None, columns=["id"]))
    return ReportData(searched(url, index_prefix), load_events(store), load_alerts(store), dead_letters)


def searched(url: str, index_prefix: str) -> str:
    """The store at ``url`` as the page names it, without credentials; for a search store with the indices read,
    so a misspelt ``store.index_prefix`` shows on an empty page instead of a bare "no records"."""
    shown = _without_credentials(url)
    return shown if url.startswith("duckdb:") else f"{shown} (indices {index_prefix}-*)"


def write_report(data: ReportData, out: Path) -> Path:
    """Render the report of ``data`` (:func:`load_report_data`) into ``out``; returns ``out``."""
    page = render_report(data)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(page, encoding="utf-8")
    except OSError as error:
        raise GatewatchError(f"cannot write the report to {out}: {error.strerror}") from None
    return out


def _without_credentials(url: str) -> str:
    kind, _, target = url.partition(":")
    parts = urlsplit(target)
    if not parts.password and not parts.username:
        return url
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return f"{kind}:{urlunsplit(parts._replace(netloc=netloc))}"


# --- the page ---------------------------------------------------------------------------

_SCRIPT = """
document.querySelectorAll('button[data-open]').forEach(function (button) {
  button.addEventListener('click', function () {
    var open = button.getAttribute('data-open') === 'yes';
    document.querySelectorAll('details.alert').forEach(function (d) { d.open = open; });
  });
});
var filter = document.getElementById('filter');
filter.addEventListener('input', function () {
  var needle = filter.value.toLowerCase();
  document.querySelectorAll('details.alert').forEach(function (d) {
    d.hidden = needle !== '' && d.textContent.toLowerCase().indexOf(needle) < 0;
  });
});
"""
_SCRIPT_HASH = base64.b64encode(hashlib.sha256(_SCRIPT.encode()).digest()).decode()
_CSP = f"default-src 'none'; style-src 'unsafe-inline'; script-src 'sha256-{_SCRIPT_HASH}'; img-src data:"

_STYLE = """
:root { --ink:#0f172a; --muted:#64748b; --line:#e2e8f0; --panel:#ffffff; --bg:#f1f5f9; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color:var(--ink);
       background:var(--bg); }
header { background:#0f172a; color:#f8fafc; padding:18px 28px; }
header h1 { margin:0 0 4px; font-size:20px; } header .sub { color:#cbd5e1; font-size:13px; word-break:break-all; }
main { padding:18px 28px 40px; max-width:1240px; }
section { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:14px 18px; margin:0 0 18px; }
h2 { font-size:16px; margin:0 0 10px; } h3 { font-size:14px; margin:0 0 4px; }
.cards { display:flex; gap:12px; flex-wrap:wrap; margin-bottom:18px; }
.card { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:10px 16px; min-width:150px; }
.card .n { font-size:22px; font-weight:600; } .card .l { color:var(--muted); font-size:12px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:left; padding:4px 8px; border-bottom:1px solid var(--line); vertical-align:top; }
th { color:var(--muted); font-weight:600; background:#f8fafc; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; white-space:nowrap; }
code, .mono { font-family:ui-monospace, SFMono-Regular, Menlo, monospace; font-size:12px; word-break:break-all; }
.sev { display:inline-block; padding:1px 8px; border-radius:10px; color:#fff; font-size:12px; font-weight:600; }
.legend span { margin-right:14px; font-size:12px; color:var(--muted); }
.legend i { display:inline-block; width:12px; height:12px; border-radius:2px; margin-right:4px; vertical-align:-1px; }
.routes { display:grid; grid-template-columns:repeat(auto-fill, minmax(520px, 1fr)); gap:14px; }
.route h3 .meta { color:var(--muted); font-weight:400; }
svg.chart text { font-size:11px; fill:#475569; } svg.chart text.lane { font-size:12px; fill:#0f172a; }
svg.chart text.flag { font-size:10px; font-weight:600; }
svg.chart .grid { stroke:#e2e8f0; } svg.chart .baseline { stroke:#94a3b8; }
svg.chart .volume { fill:#cbd5e1; fill-opacity:0.55; }
details.alert { border:1px solid var(--line); border-left:5px solid var(--sev); border-radius:6px; margin:0 0 10px;
                padding:8px 12px; background:#fff; }
details.alert summary { cursor:pointer; list-style:none; } details.alert summary::-webkit-details-marker { display:none; }
details.alert .what { font-weight:600; } details.alert .when { color:var(--muted); font-size:12px; }
.request { margin:10px 0 0; } .request .rid { color:var(--muted); font-size:12px; }
.side { display:inline-block; min-width:62px; padding:0 6px; border-radius:4px; font-size:11px; font-weight:600;
        text-align:center; }
.side.gateway { background:#dbeafe; color:#1e40af; } .side.billing { background:#dcfce7; color:#166534; }
.s4 { color:#b45309; font-weight:600; } .s5 { color:#b91c1c; font-weight:600; }
.toolbar { display:flex; gap:8px; align-items:center; margin-bottom:10px; }
.toolbar input { flex:1; max-width:360px; padding:5px 8px; border:1px solid var(--line); border-radius:6px; }
.toolbar button { padding:5px 10px; border:1px solid var(--line); border-radius:6px; background:#f8fafc; cursor:pointer; }
.note { color:var(--muted); font-size:12px; }
.pair { display:grid; grid-template-columns:repeat(auto-fit, minmax(480px, 1fr)); gap:18px; }
table.timeline { table-layout:fixed; }
tr.rid td { background:#f8fafc; color:var(--muted); font-size:12px; padding-top:8px; }
"""


def render_report(data: ReportData) -> str:
    """The whole page as one string."""
    events, alerts = data.events, data.alerts
    start, end = _span(events, alerts)
    anchors = {alert_id: f"alert-{i + 1}" for i, alert_id in enumerate(alerts["id"])}
    body = [
        _cards(data),
        _alerts_over_time(alerts, anchors, start, end),
        _route_rates(events, alerts, anchors, start, end),
        _clients(events, alerts),
        _evidence(events, alerts, anchors),
    ]
    period = f"{_time(start)} – {_time(end)} UTC" if len(events) or len(alerts) else "no records"
    return (
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{esc(_CSP)}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>gatewatch report — {esc(data.source)}</title><style>{_STYLE}</style></head><body>"
        f'<header><h1>gatewatch report</h1><div class="sub">{esc(data.source)} · {esc(period)}</div></header>'
        f"<main>{''.join(body)}</main><script>{_SCRIPT}</script></body></html>\n"
    )


def _span(events: pd.DataFrame, alerts: pd.DataFrame) -> tuple[float, float]:
    stamps = [s for s in (events["ts"].min(), events["ts"].max(), alerts["first_seen"].min(),
                          alerts["last_seen"].max()) if pd.notna(s)]  # fmt: skip
    if not stamps:
        return 0.0, 60.0
    start, end = min(stamps).timestamp(), max(stamps).timestamp()
    return start, max(end, start + 60.0)


def _time(ts: float | pd.Timestamp) -> str:
    stamp = pd.Timestamp(ts, unit="s", tz="UTC") if isinstance(ts, float) else ts
    return stamp.strftime("%Y-%m-%d %H:%M:%S")


def _requests(gateway: pd.DataFrame) -> int:
    """Requests the gateway logged: its lines less a retry's or re-send's second line of one request id."""
    ids = gateway["request_id"]
    return int(ids.nunique()) + int(ids.isna().sum())


def _cards(data: ReportData) -> str:
    events, alerts = data.events, data.alerts
    gateway = events[events["dataset"] == str(Dataset.GATEWAY)]
    severities = Counter(alerts["severity"].dropna())
    cards = [
        (f"{_requests(gateway):,}", "gateway requests"),
        (f"{len(events) - len(gateway):,}", "Billing log lines"),
        (f"{len(alerts):,}", "alerts: " + (", ".join(f"{severities[s]} {s}" for s in SEVERITY_ORDER if severities[s])
                                           or "none")),  # fmt: skip
        (f"{int(gateway['status'].between(500, 599).fillna(False).sum()):,}", "gateway 5xx answers"),
        (f"{data.dead_letters:,}", "dead letters (unparseable lines)"),
    ]
    return '<div class="cards">' + "".join(
        f'<div class="card"><div class="n">{esc(n)}</div><div class="l">{esc(label)}</div></div>' for n, label in cards
    ) + "</div>"  # fmt: skip


def _legend() -> str:
    return '<div class="legend">' + "".join(
        f'<span><i style="background:{SEVERITY_COLORS[s]}"></i>{s}</span>' for s in SEVERITY_ORDER
    ) + "</div>"  # fmt: skip


def _alerts_over_time(alerts: pd.DataFrame, anchors: dict[str, str], start: float, end: float) -> str:
    if not len(alerts):
        return '<section id="alerts-over-time"><h2>Alerts over time</h2><p class="note">No alerts.</p></section>'
    lanes = sorted(alerts["rule"].unique())
    spans = [
        Span(a.rule, a.first_seen.timestamp(), a.last_seen.timestamp(), a.severity,
             f"{a.rule} · {a.severity} · {a.entity_type}={a.entity_value} · {a.count} {_counted(a.rule)} · "
             f"{_time(a.first_seen)} – {_time(a.last_seen)}", anchors[a.id])
        for a in alerts.itertuples()
    ]  # fmt: skip
    counts = alerts.groupby(["rule", "severity"]).size()
    header = "".join(f'<th class="num">{s}</th>' for s in SEVERITY_ORDER)
    rows = "".join(
        f"<tr><td><code>{esc(rule)}</code></td>"
        + "".join(f'<td class="num">{counts.get((rule, s), 0) or ""}</td>' for s in SEVERITY_ORDER)
        + f'<td class="num">{int(counts.get(rule, pd.Series(dtype="int64")).sum())}</td></tr>'
        for rule in lanes
    )
    return (
        '<section id="alerts-over-time"><h2>Alerts by rule and severity over time</h2>'
        f"{_legend()}{swimlanes(spans, lanes, start, end)}"
        f'<table><tr><th>rule</th>{header}<th class="num">total</th></tr>{rows}</table></section>'
    )


def _route_rates(events: pd.DataFrame, alerts: pd.DataFrame, anchors: dict[str, str], start: float, end: float) -> str:
    rates = route_rates(events, f"{int(BUCKET_SECS)}s")
    if not len(rates):
        return '<section id="routes"><h2>4xx / 5xx rates per route</h2><p class="note">No gateway records.</p></section>'
    totals = rates.groupby("route")[["requests", "errors_4xx", "errors_5xx"]].sum()
    markers = _route_markers(events, alerts, anchors)
    # The routes an alert points at first (a quiet route's burst must not be left out), then the busiest.
    busiest = list(totals.sort_values("requests", ascending=False, kind="stable").index)
    routes = sorted(busiest, key=lambda route: route not in markers)[:MAX_ROUTES]
    charts = []
    for route in routes:
        own = rates[rates["route"] == route]
        buckets = [Bucket(b.bucket.timestamp(), int(b.requests), int(b.errors_4xx), int(b.errors_5xx))
                   for b in own.itertuples()]  # fmt: skip
        total = totals.loc[route]
        meta = (f"{int(total.requests):,} requests · 4xx {total.errors_4xx / total.requests:.1%} · "
                f"5xx {total.errors_5xx / total.requests:.1%}")  # fmt: skip
        charts.append(
            f'<div class="route"><h3><code>{esc(route)}</code> <span class="meta">{esc(meta)}</span></h3>'
            f"{rate_chart(buckets, markers.get(route, []), start, end, BUCKET_SECS)}</div>"
        )
    hidden = len(totals) - len(routes)
    alerted = sum(1 for route in markers if route in totals.index and route not in routes)
    with_alerts = f", {alerted} of them with alerts" if alerted else ""
    more = f'<p class="note">{hidden} quieter routes not shown{with_alerts}.</p>' if hidden > 0 else ""
    key = (f'<div class="legend"><span><i style="background:{COLOR_4XX}"></i>4xx rate</span>'
           f'<span><i style="background:{COLOR_5XX}"></i>5xx rate</span>'
           '<span><i style="background:#cbd5e1"></i>requests per minute (right scale)</span>'
           "<span>dashed flags: alerts on the route's requests</span></div>")  # fmt: skip
    return f'<section id="routes"><h2>4xx / 5xx rates per route</h2>{key}<div class="routes">{"".join(charts)}</div>' \
           f"{more}</section>"  # fmt: skip


def _route_markers(events: pd.DataFrame, alerts: pd.DataFrame, anchors: dict[str, str]) -> dict[str, list[Marker]]:
    """Each alert on the routes of its evidence (at least a third of it), or on its own route entity."""
    gateway = events[(events["dataset"] == str(Dataset.GATEWAY)) & events["request_id"].notna()]
    route_of = dict(zip(gateway["request_id"], event_routes(gateway).fillna(NO_ROUTE)))
    markers: dict[str, list[Marker]] = defaultdict(list)
    for a in alerts.itertuples():
        routes = Counter(route_of[r] for r in a.request_ids if r in route_of)
        marked = {route for route, n in routes.items() if n * 3 >= len(a.request_ids)}
        if a.entity_type == "route":
            marked.add(a.entity_value)
        for route in marked:
            markers[route].append(Marker(a.first_seen.timestamp(), a.severity, a.rule,
                                         f"{a.rule} · {a.entity_type}={a.entity_value} · {_time(a.first_seen)}",
                                         anchors[a.id]))  # fmt: skip
    return markers


def _clients(events: pd.DataFrame, alerts: pd.DataFrame) -> str:
    busiest, failing = top_clients(events), top_clients(events, by="errors")
    if not len(busiest):
        return ""
    by_ip = Counter(a.entity_value for a in alerts.itertuples() if a.entity_type == "source.ip")
    return (
        '<section id="clients"><h2>Top clients</h2><div class="pair">'
        f"<div><h3>by requests</h3>{_client_table(busiest, by_ip)}</div>"
        f"<div><h3>by 4xx + 5xx answers</h3>{_client_table(failing, by_ip)}</div></div>"
        '<p class="note">Client addresses as the gateway saw them (downstream address, else read from the '
        "right of X-Forwarded-For, past gateway.xff_num_trusted_hops: entries a client wrote itself do not "
        "count); tokens and users are distinct JWT ids and subjects, from the app's line where the gateway "
        "logs none.</p></section>"
    )


def _client_table(clients: pd.DataFrame, by_ip: Counter[str]) -> str:
    rows = "".join(
        f'<tr><td class="mono">{esc(c.source_ip)}</td><td class="num">{c.requests:,}</td>'
        f'<td class="num">{c.errors_4xx:,}</td><td class="num">{c.errors_5xx:,}</td>'
        f'<td class="num">{c.tokens:,}</td><td class="num">{c.users:,}</td><td class="num">{c.paths:,}</td>'
        f'<td class="num">{by_ip.get(c.source_ip, 0) or ""}</td></tr>'
        for c in clients.itertuples()
    )
    return (
        '<table><tr><th>client</th><th class="num">requests</th><th class="num">4xx</th><th class="num">5xx</th>'
        '<th class="num">tokens</th><th class="num">users</th><th class="num">paths</th>'
        f'<th class="num">alerts</th></tr>{rows}</table>'
    )


def _counted(rule: str) -> str:
    """What an alert's count counts, by its rule: a 4xx burst's errors are no 5xx burst's buckets."""
    detector = registry().get(rule)
    return getattr(detector, "counts", "findings")


def _evidence(events: pd.DataFrame, alerts: pd.DataFrame, anchors: dict[str, str]) -> str:
    wanted = {r for ids in alerts["request_ids"] for r in ids}
    by_request = {rid: rows for rid, rows in events[events["request_id"].isin(wanted)].groupby("request_id")}
    cards = []
    for a in alerts.itertuples():
        color = SEVERITY_COLORS.get(a.severity, "#64748b")
        reason = f" · reason <code>{esc(a.reason)}</code>" if pd.notna(a.reason) else ""
        body = _alert_requests(a, by_request) if a.request_ids else _entity_records(a, events)
        cards.append(
            f'<details class="alert" id="{esc(anchors[a.id])}" open style="--sev:{color}" '
            f'data-rule="{esc(a.rule)}" data-entity="{esc(a.entity_value)}"><summary>'
            f'<span class="sev" style="background:{color}">{esc(a.severity)}</span> '
            f'<span class="what"><code>{esc(a.rule)}</code> · {esc(a.entity_type)} = '
            f'<span class="mono">{esc(a.entity_value)}</span></span> '
            f'<span class="when">· {esc(a.count)} {esc(_counted(a.rule))} · {esc(_time(a.first_seen))} → '
            f'{esc(_time(a.last_seen))} UTC '
            f"({esc(minutes((a.last_seen - a.first_seen).total_seconds()))}){reason}</span>"
            f"<div>{esc(a.summary)}</div></summary>{body}</details>"
        )
    tools = ('<div class="toolbar"><input id="filter" type="search" placeholder="filter alerts (rule, address, '
             'token, text)…"><button type="button" data-open="yes">expand all</button>'
             '<button type="button" data-open="no">collapse all</button></div>')  # fmt: skip
    empty = '<p class="note">No alerts.</p>' if not cards else ""
    return f'<section id="evidence"><h2>Alert evidence</h2>{tools}{empty}{"".join(cards)}</section>'


def _alert_requests(alert: Any, by_request: dict[str, pd.DataFrame]) -> str:
    """The alert's earliest evidence requests, in time order; ids with no stored record after them."""
    request_ids: tuple[str, ...] = alert.request_ids
    stored = sorted((by_request[rid].sort_values(["ts", "id"], kind="stable") for rid in request_ids
                     if rid in by_request), key=lambda rows: (rows["ts"].iloc[0], rows["request_id"].iloc[0]))  # fmt: skip
    groups = []
    for rows in stored[:EVIDENCE_REQUESTS]:
        rid = rows["request_id"].iloc[0]
        sides = " + ".join(dict.fromkeys(timeline(rows)["side"]))  # in the order the sides logged
        groups.append(_group_row(f"request <code>{esc(rid)}</code> · {esc(sides)}") + _timeline_rows(rows))
    for rid in [rid for rid in request_ids if rid not in by_request][: EVIDENCE_REQUESTS - len(groups)]:
        groups.append(_group_row(f"request <code>{esc(rid)}</code>: no stored record"))
    hidden = len(request_ids) - EVIDENCE_REQUESTS
    more = f'<p class="note">{hidden} more evidence request ids in the store.</p>' if hidden > 0 else ""
    return _timeline_table("".join(groups)) + more


def _entity_records(alert: Any, events: pd.DataFrame) -> str:
    """Evidence of an alert without request ids (e.g. requests that carried none): the entity's records."""
    a = alert
    column = {"source.ip": "source_ip", "token.jti": "token_jti", "token.sub": "token_sub", "route": "route",
              "peer.identity": "peer_identity"}.get(a.entity_type)  # fmt: skip
    if column is None:
        return '<p class="note">No request-level evidence for this alert.</p>'
    within = events["ts"].between(a.first_seen, a.last_seen)
    values = event_routes(events) if column == "route" else events[column]
    rows = events[within & (values == a.entity_value).fillna(False).astype(bool)]
    if not len(rows):
        return '<p class="note">No stored record of this entity in the alert\'s time span.</p>'
    header = _group_row(f"no request ids: the entity's {len(rows)} records between first and last seen")
    more = len(rows) - EVIDENCE_RECORDS
    tail = f'<p class="note">{more} more records not shown.</p>' if more > 0 else ""
    return _timeline_table(header + _timeline_rows(rows.head(EVIDENCE_RECORDS))) + tail


def _group_row(html_text: str) -> str:
    return f'<tr class="rid"><td colspan="8">{html_text}</td></tr>'


def _timeline_table(rows_html: str) -> str:
    return ('<table class="timeline"><colgroup><col style="width:10%"><col style="width:9%"><col style="width:7%">'
            '<col style="width:18%"><col style="width:26%"><col style="width:5%"><col style="width:12%">'
            '<col style="width:13%"></colgroup><tr><th>time (UTC)</th><th class="num">offset</th><th>side</th>'
            '<th>client / peer</th><th>request</th><th class="num">status</th><th>route</th><th>message</th></tr>'
            f"{rows_html}</table>")  # fmt: skip


def _timeline_rows(rows: pd.DataFrame) -> str:
    lines = []
    for r in timeline(rows).itertuples():
        code = None if pd.isna(r.status) else int(r.status)
        css = "s5" if code and code >= 500 else "s4" if code and code >= 400 else ""
        status = "" if code is None else code
        peer = esc(r.source_ip) if pd.notna(r.source_ip) else ""
        if pd.notna(r.peer_identity):
            peer += f'<br><span class="note">{esc(r.peer_identity)}</span>'
        lines.append(
            f'<tr><td class="mono">{esc(r.ts.strftime("%H:%M:%S.%f")[:-3])}</td>'
            f'<td class="num">+{r.offset_ms:,.0f} ms</td><td><span class="side {esc(r.side)}">{esc(r.side)}</span></td>'
            f'<td class="mono">{peer}</td><td class="mono">{esc(_text(r.method))} {esc(_text(r.path))}</td>'
            f'<td class="num {css}">{status}</td><td class="mono">{esc(_text(r.route))}</td>'
            f"<td>{esc(_text(r.message))}</td></tr>"
        )
    return "".join(lines)


def _text(value: object) -> str:
    return "" if value is None or value is pd.NA or (isinstance(value, float) and pd.isna(value)) else str(value)
