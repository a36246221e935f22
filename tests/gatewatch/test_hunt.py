"""Hunting queries over canonical frames: the trust rules, the token rules, and times that round alike."""

from __future__ import annotations

from typing import Any

import duckdb
import pandas as pd
import pytest

from gatewatch.config import TrustConfig
from gatewatch.hunt import (
    EVENT_COLUMNS, _milliseconds, _typed, bypass_incidents, request_timeline, token_incidents, top_clients,
)  # fmt: skip
from ingest.ecs import iso

T0 = 1772442000.0  # 2026-03-02T09:00:00Z
GATEWAY_ID = "spiffe://billing.example/ns/edge/sa/ambassador"
TRUST = TrustConfig(gateway_identities=[GATEWAY_ID], gateway_networks=["10.0.0.0/24"],
                    internal_callers=["spiffe://billing.example/ns/ops/sa/reconciler", "10.3.0.0/24"])  # fmt: skip


def frame(*rows: dict[str, Any]) -> pd.DataFrame:
    """Canonical events from partial rows (``ts`` and ``token_exp`` in epoch seconds)."""
    columns: dict[str, list[Any]] = {column: [] for column in EVENT_COLUMNS}
    for number, row in enumerate(rows):
        full = {"id": f"e{number}", **row}
        for column in EVENT_COLUMNS:
            value = full.get(column)
            if column in ("ts", "token_exp") and value is not None:
                value = pd.Timestamp(value, unit="s", tz="UTC")
            columns[column].append(value)
    return pd.DataFrame({c: _typed(pd.Series(v, dtype="object"), EVENT_COLUMNS[c][1], len(rows))
                         for c, v in columns.items()})  # fmt: skip


def gateway(ts: float, request_id: str, **fields: Any) -> dict[str, Any]:
    return {"dataset": "envoy.access", "ts": T0 + ts, "request_id": request_id, "method": "GET", "path": "/v1/x",
            "status": 200, **fields}  # fmt: skip


def app(ts: float, request_id: str | None, source_ip: str, peer: str | None = None, **fields: Any) -> dict[str, Any]:
    return {"dataset": "billing.app", "ts": T0 + ts, "request_id": request_id, "method": "GET", "path": "/v1/x",
            "status": 200, "source_ip": source_ip, "peer_identity": peer, **fields}  # fmt: skip


def found(incidents: pd.DataFrame) -> set[tuple[str, str, str | None]]:
    return {(r.entity_value, r.rule, None if pd.isna(r.reason) else r.reason) for r in incidents.itertuples()}


def test_bypass_reasons_and_what_is_trusted() -> None:
    events = frame(
        gateway(0, "r-1"), app(0.5, "r-1", "10.0.0.11", GATEWAY_ID),            # joined: fine
        app(1, "r-2", "10.0.0.11", GATEWAY_ID),                                 # the gateway never logged r-2
        app(2, "r-3", "10.9.9.9"), app(2.1, "r-3", "10.9.9.9"),                 # foreign peer, one request
        app(3, None, "10.9.9.8"),                                               # foreign peer, no request id
        app(4, None, "10.2.0.1", path="/healthz"),                              # allowlisted probe
        app(5, "r-5", "10.3.0.5", "spiffe://billing.example/ns/ops/sa/reconciler"),  # internal caller
        app(6, None, "10.0.0.12", GATEWAY_ID),                                  # gateway peer, no id: a logging gap
        app(7, None, "10.9.9.7", method=None, path=None, status=None),          # "cache warmed": not served
        gateway(8, "r-8", duration_ms=100.0), app(8.05, "r-8", "10.0.0.13", GATEWAY_ID),
        app(300, "r-8", "10.0.0.14", GATEWAY_ID),                               # r-8 reused minutes later
        gateway(9, "r-9"), app(400, "r-9", "10.0.0.15", GATEWAY_ID),            # no duration logged: any time
    )  # fmt: skip
    incidents = bypass_incidents(events, TRUST)
    assert found(incidents) == {("10.0.0.11", "gateway_bypass", "no_gateway_record"),
                                ("10.0.0.14", "gateway_bypass", "no_gateway_record"),
                                ("10.9.9.9", "gateway_bypass", "untrusted_peer"),
                                ("10.9.9.8", "gateway_bypass", "no_request_id")}  # fmt: skip
    assert incidents.set_index("entity_value").loc["10.9.9.9", "requests"] == 1
    # With no gateway identity or network configured, every peer would look foreign: only the join tells.
    assert found(bypass_incidents(events, TrustConfig())) == {
        (ip, "gateway_bypass", "no_gateway_record") for ip in ("10.0.0.11", "10.9.9.9", "10.3.0.5", "10.0.0.14")
    }


def test_token_rules_and_their_benign_look_alikes() -> None:
    exp = T0 + 600
    events = frame(
        gateway(10, "a", token_jti="replayed", source_ip="198.51.100.1", token_exp=exp),
        gateway(20, "b", token_jti="replayed", source_ip="192.0.2.66", token_exp=exp),
        gateway(30, "c", token_jti="retried", source_ip="198.51.100.2", token_exp=exp),
        gateway(31, "c", token_jti="retried", source_ip="198.51.100.2", token_exp=exp),
        gateway(700, "d", token_jti="after-expiry", source_ip="198.51.100.3", token_exp=exp),
        gateway(701, "d2", token_jti="after-expiry", source_ip="198.51.100.4", token_exp=exp),  # not a replay: expired
        app(650, "e", "10.0.0.11", GATEWAY_ID, token_jti="stale", token_exp=exp),              # 50 s past: alert
        app(620, "f", "10.0.0.11", GATEWAY_ID, token_jti="grace", token_exp=exp),              # 20 s past: fine
        app(660, "g", "10.0.0.11", GATEWAY_ID, token_jti="refused", token_exp=exp, status=401),  # refused: fine
        app(100, "h", "10.0.0.11", GATEWAY_ID, token_jti="revoked"),                             # after revocation
        app(40, "i", "10.0.0.11", GATEWAY_ID, token_jti="logged-out"),                            # before it
        app(50, "j", "10.0.0.11", GATEWAY_ID, token_sub="u-1", token_org="org-1", org_id="org-2"),
        app(51, "k", "10.0.0.11", GATEWAY_ID, token_sub="u-2", token_org="org-1", org_id="org-2", status=403),
    )  # fmt: skip
    revoked = {"revoked": T0 + 90, "logged-out": T0 + 45}
    assert found(token_incidents(events, revoked, skew_allowance_secs=30)) == {
        ("replayed", "token_replay", None), ("stale", "token_expired_accepted", None),
        ("revoked", "token_revoked_used", None), ("u-1", "token_cross_org", None),
    }  # fmt: skip


def test_token_incidents_take_the_rules_bounds_and_entities() -> None:
    # Each case once differed from what the detectors alert on (an analyst's second look must agree).
    exp = T0 + 600
    events = frame(
        gateway(590, "a", token_jti="jA", source_ip="198.51.100.1", token_exp=exp),
        gateway(615, "b", token_jti="jA", source_ip="198.51.100.2", token_exp=exp),  # inside the 30 s allowance
        app(700, "c", "10.0.0.11", GATEWAY_ID, token_sub="u-5", token_exp=exp),     # expired, no jti: its subject
        app(60, "d", "10.0.0.11", GATEWAY_ID, token_org="org-x", org_id="org-2"),   # cross-org, only an org
        app(90, "e", "10.0.0.11", GATEWAY_ID, token_jti="revoked"),                 # at the revocation itself
    )  # fmt: skip
    incidents = token_incidents(events, {"revoked": T0 + 90}, skew_allowance_secs=30)
    assert {(r.rule, r.entity_type, r.entity_value) for r in incidents.itertuples()} == {
        ("token_replay", "token.jti", "jA"), ("token_expired_accepted", "token.sub", "u-5"),
        ("token_cross_org", "token.org", "org-x"), ("token_revoked_used", "token.jti", "revoked"),
    }  # fmt: skip
    revoked = incidents[incidents["rule"] == "token_revoked_used"].iloc[0]
    assert revoked["first_ts"] == pd.Timestamp(T0 + 90, unit="s", tz="UTC")


def test_top_clients_count_the_tokens_only_the_app_logs() -> None:
    events = frame(
        gateway(10, "a", source_ip="198.51.100.9"), app(10.1, "a", "10.0.0.11", token_jti="j1", token_sub="u1"),
        gateway(20, "b", source_ip="198.51.100.9"), app(20.1, "b", "10.0.0.11", token_jti="j2", token_sub="u1"),
        gateway(30, "c", source_ip="198.51.100.8", token_jti="j3", token_sub="u3"),
    )  # fmt: skip
    clients = top_clients(events).set_index("source_ip")
    assert clients.loc["198.51.100.9", ["requests", "tokens", "users"]].tolist() == [2, 2, 1]
    assert clients.loc["198.51.100.8", ["requests", "tokens", "users"]].tolist() == [1, 1, 1]


def test_a_replay_is_found_when_only_the_app_logs_the_token() -> None:
    # Envoy's default format logs no jti: the detector joins each request with its app line, and so does the hunt.
    events = frame(
        gateway(10, "a", source_ip="198.51.100.1"), app(10.1, "a", "10.0.0.11", GATEWAY_ID, token_jti="t1"),
        gateway(20, "b", source_ip="192.0.2.66"), app(20.1, "b", "10.0.0.11", GATEWAY_ID, token_jti="t1"),
        gateway(30, "c", source_ip="198.51.100.2"), app(30.1, "c", "10.0.0.11", GATEWAY_ID, token_jti="t2"),
        gateway(31, "d", source_ip="198.51.100.2"), app(31.1, "d", "10.0.0.11", GATEWAY_ID, token_jti="t2"),
    )  # fmt: skip
    assert found(token_incidents(events, {})) == {("t1", "token_replay", None)}


@pytest.mark.parametrize("app_side", ["none", "tokenless"])
def test_token_incidents_of_a_store_whose_app_lines_carry_no_token(app_side: str) -> None:
    """A gateway-only store, or app lines without a jti: nothing to take from them, and no error."""
    rows = [gateway(10, "a", source_ip="198.51.100.1", token_jti="t9"),
            gateway(20, "b", source_ip="192.0.2.66", token_jti="t9")]  # fmt: skip
    if app_side == "tokenless":
        rows.append(app(10.1, "a", "10.0.0.11", GATEWAY_ID))
    assert found(token_incidents(frame(*rows), {})) == {("t9", "token_replay", None)}
    assert found(token_incidents(frame(), {})) == set()


def test_a_request_timeline_spans_both_sides_in_order() -> None:
    events = frame(app(2.5, "r-1", "10.0.0.11", GATEWAY_ID, message="charged"), gateway(0, "r-1"),
                   gateway(0.2, "r-2"))  # fmt: skip
    timeline = request_timeline(events, "r-1")
    assert list(timeline["side"]) == ["gateway", "billing"] and list(timeline["offset_ms"]) == [0.0, 2500.0]


@pytest.mark.parametrize("seconds", [T0 + 0.0615, T0 + 0.0625, T0 + 0.9995, T0 + 59.999_5, T0 + 0.000_499, T0 + 1e-6])
def test_duckdb_times_round_to_the_millisecond_the_search_documents_carry(seconds: float) -> None:
    stored = duckdb.sql(f"SELECT to_timestamp({seconds!r}) AS ts").df()["ts"]
    assert _milliseconds(stored).iloc[0] == _milliseconds(pd.Series([iso(seconds)], dtype="object")).iloc[0]


def test_token_and_bypass_incidents_judge_a_long_request_and_clock_skew_as_the_rules_do() -> None:
    """The rules now take a Billing line's logged duration off its time, and widen the reused-id slack with
    ``correlate.join_window_secs``: the analyst's second look must agree."""
    exp = T0 + 600
    events = frame(
        app(650, "long", "10.0.0.11", GATEWAY_ID, token_jti="j-exp", token_exp=exp, duration_ms=60_000.0),  # begun 590
        app(150, "export", "10.0.0.11", GATEWAY_ID, token_jti="revoked", duration_ms=60_000.0),  # begun at 90
        app(150, "after", "10.0.0.11", GATEWAY_ID, token_jti="revoked-2", duration_ms=10_000.0),  # begun at 140
        gateway(1000, "skewed", duration_ms=20.0), app(1045, "skewed", "10.0.0.12", GATEWAY_ID),
    )  # fmt: skip
    incidents = token_incidents(events, {"revoked": T0 + 100, "revoked-2": T0 + 100}, skew_allowance_secs=30)
    assert found(incidents) == {("revoked-2", "token_revoked_used", None)}
    skewed = events[events["request_id"] == "skewed"]
    assert found(bypass_incidents(skewed, TRUST)) == {("10.0.0.12", "gateway_bypass", "no_gateway_record")}
    assert found(bypass_incidents(skewed, TRUST, join_window_secs=90.0)) == set()


def test_bypass_incidents_match_each_app_row_against_every_span_of_its_request() -> None:
    """The spans are merged per request and matched once a row (a request id held open made 5,000 x 5,000 pairs):
    the rows found are those a check of every (app row, gateway row) pair finds, edges and unlogged durations
    included."""
    import random

    from gatewatch.hunt import _during_gateway_attempt

    rng = random.Random(5)
    for _ in range(60):
        rows = []
        for rid in ("a", "b", "c"):
            for _ in range(rng.randint(0, 4)):
                rows.append(gateway(rng.choice([0, 10, rng.uniform(0, 300)]), rid,
                                    duration_ms=rng.choice([None, 0.0, 5.0, 40_000.0])))  # fmt: skip
            for _ in range(rng.randint(1, 4)):
                rows.append(app(rng.choice([-30, 40, 60, rng.uniform(-100, 400)]), rid, "10.0.0.11", GATEWAY_ID))
        events = frame(*rows)
        app_rows = events[events["dataset"] == "billing.app"]
        gateway_rows = events[events["dataset"] == "envoy.access"]
        slack = pd.Timedelta(seconds=30)
        expected = [
            any(pd.isna(g.duration_ms)
                or g.ts - slack <= a.ts <= g.ts + pd.Timedelta(milliseconds=g.duration_ms) + slack
                for g in gateway_rows.itertuples() if g.request_id == a.request_id)
            for a in app_rows.itertuples()
        ]  # fmt: skip
        assert _during_gateway_attempt(app_rows, events, 30.0).tolist() == expected


def test_routes_are_keyed_as_the_rules_key_them_when_the_format_logs_no_route_name() -> None:
    # An analyst's trial: under Envoy's default format every per-route view read "(no route)", while
    # http_5xx_burst alerted on api.billing.example/v1.
    from gatewatch.hunt import event_routes, route_rates

    events = frame(
        gateway(0, "r1", authority="API.billing.example:443", path="/v1/invoices/7?x=1", status=503),
        gateway(1, "r2", authority="api.billing.example", path="/v1/customers", status=200),
        gateway(2, "r3", route_name="charges", authority="api.billing.example", status=200),
        gateway(3, "r4", upstream_cluster="billing_v2", status=502),
        gateway(4, "r5", path="/v1/x"),  # no Host at all
    )
    assert list(event_routes(events).fillna("-")) == [
        "api.billing.example/v1", "api.billing.example/v1", "charges", "billing_v2", "-"]
    totals = route_rates(events, "1h").set_index("route")
    assert totals.loc["api.billing.example/v1", ["requests", "errors_5xx"]].tolist() == [2, 1]
    assert totals.loc["(no route)", "requests"] == 1
    assert list(request_timeline(events, "r4")["route"]) == ["billing_v2"]
