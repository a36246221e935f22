"""http_5xx_burst: thresholds at their edges, the window, the baseline, bounded state."""

from __future__ import annotations

import math

import pytest

from detectors.http_5xx_burst import Http5xxBurst, route_key
from detectors.sample import T0, app_event, gateway_event
from ingest.records import Event
from tests.detectors.test_examples import EXAMPLE_CONTEXT
from tests.detectors.test_examples import feed as run


def detector(**overrides: object) -> Http5xxBurst:
    return Http5xxBurst(Http5xxBurst.Config(**overrides), EXAMPLE_CONTEXT)




def req(t: float, status: int = 200, route: str = "billing-invoices", **fields: object) -> Event:
    return gateway_event(t, request_id=f"r-{t:.3f}-{status}", route_name=route, status=status, **fields)


def flow(
    begin: float, end: float, per_sec: float, error_every: int = 0, route: str = "billing-invoices"
) -> list[Event]:
    """Evenly spaced requests; every ``error_every``-th one is a 503 (0: none)."""
    count = int((end - begin) * per_sec)
    return [
        req(begin + i / per_sec, 503 if error_every and i % error_every == error_every - 1 else 200, route)
        for i in range(count)
    ]


def test_route_key_prefers_route_name_then_cluster_then_authority_and_first_segment() -> None:
    assert route_key(gateway_event(0, route_name="r", upstream_cluster="c", authority="a")) == "r"
    assert route_key(gateway_event(0, upstream_cluster="c", authority="a")) == "c"
    assert route_key(gateway_event(0, authority="API.Example.com", path="/v1/invoices/9?x=1")) == "api.example.com/v1"
    # A red-team trial split one route's 500s by Host: ports and a trailing dot are the same route.
    for authority in ("api.example.com:443", "api.example.com.", "API.EXAMPLE.COM.:8443"):
        assert route_key(gateway_event(0, authority=authority, path="/v1/x")) == "api.example.com/v1"
    assert route_key(gateway_event(0, authority="[2001:DB8::1]:443", path="/v1")) == "2001:db8::1/v1"
    assert route_key(gateway_event(0, authority="api.example.com", path="/?q")) == "api.example.com/"
    assert route_key(gateway_event(0, path="/v1")) is None


def test_fires_at_exactly_min_errors_not_below() -> None:
    det = detector()
    below = run(det, [req(i * 0.5, 503) for i in range(19)], end=False)
    assert below == []
    (finding,) = det.observe_event(req(10.0, 503))
    assert finding.entity_type == "route" and finding.entity_value == "billing-invoices"
    assert finding.ts == T0 + 10.0
    assert finding.details == {
        "errors": 20, "requests": 20, "error_rate": 1.0, "baseline_rate": 0.01,
        "learned_rate": 0.0, "rate_factor": 5.0, "window_secs": 120.0,
    }
    assert finding.summary == (
        "route billing-invoices: 20 of 20 requests (100.0%) returned 5xx in the last 120 s, "
        "100.0× its baseline 1.00%"
    )
    assert len(finding.request_ids) == 20


def test_rate_at_exactly_factor_times_baseline_fires_just_below_does_not() -> None:
    # one bucket of history at 2 %: once it has left the window the baseline is exactly 0.02
    history = [req(i * 0.009, 503 if i % 50 == 49 else 200) for i in range(1000)]
    errors = [req(202 + i * 0.01, 503) for i in range(20)]
    at_factor = history + [req(200 + i * 0.01, 200) for i in range(180)] + errors
    (finding,) = run(detector(), at_factor)
    details = finding.details
    assert (details["errors"], details["requests"], details["baseline_rate"]) == (20, 200, 0.02)
    below = history + [req(200 + i * 0.01, 200) for i in range(181)] + errors
    assert run(detector(), below) == []


def test_errors_that_left_the_window_do_not_count() -> None:
    det = detector()
    early = [req(i * 0.1, 503) for i in range(19)]  # bucket 0
    # bucket 120 is the first whose window no longer holds bucket 0
    assert run(det, early + [req(120.0, 503)]) == []
    assert run(detector(), early + [req(119.9, 503)]) != []


def test_one_finding_per_route_per_bucket() -> None:
    storm = [req(i * 0.1, 503) for i in range(300)]  # 30 s, three buckets
    findings = run(detector(), storm)
    assert [f.ts - T0 for f in findings] == pytest.approx([1.9, 10.0, 20.0])


def test_a_storm_does_not_raise_its_own_baseline_while_in_the_window() -> None:
    quiet = flow(0, 3600, 5, error_every=200)  # an hour at 0.5 %
    storm = flow(3600, 3900, 5, error_every=2)  # five minutes at 50 %
    findings = run(detector(), quiet + storm)
    assert len(findings) == 29  # one per bucket, from the bucket where errors reach 20 to the end
    first_window = [f.details["learned_rate"] for f in findings if f.ts < T0 + 3600 + 120]
    assert max(first_window) <= 0.0051
    assert findings[-1].details["learned_rate"] == 0.0483  # 17 storm buckets have left the window by now
    assert findings[-1].ts == pytest.approx(T0 + 3890.0)


def test_baseline_adapts_to_a_new_normal_rate() -> None:
    before = flow(0, 3600, 2, error_every=200)  # an hour at 0.5 %
    after = flow(3600, 7200, 2, error_every=12)  # then 8.3 % for good
    findings = run(detector(), before + after)
    assert findings, "the step change itself is news"
    first, last = findings[0].ts - T0, findings[-1].ts - T0
    assert 3600 < first < 3600 + 120
    assert last == pytest.approx(3600 + 455.5)  # the baseline caught up in under 8 minutes
    assert findings[-1].details["learned_rate"] == 0.0172  # 8.3 % is just over 5 × baseline here


def test_traffic_that_grows_with_a_constant_error_rate_is_quiet() -> None:
    events = sorted(
        (e for m in range(20) for e in flow(m * 60, m * 60 + 60, 1 + m, error_every=50)), key=lambda e: e.ts
    )
    assert run(detector(), events) == []


def test_app_events_and_missing_or_zero_status_are_ignored() -> None:
    det = detector()
    noise = [app_event(i * 0.1, status=500, route_name="billing-invoices") for i in range(50)]
    noise += [gateway_event(10 + i * 0.1, status=None, route_name="billing-invoices") for i in range(50)]
    noise += [gateway_event(20 + i * 0.1, status=0, route_name="billing-invoices") for i in range(50)]
    assert run(det, noise, end=False) == []
    assert det._routes == {}


def test_same_input_twice_gives_identical_findings() -> None:
    events = flow(0, 600, 5, error_every=200) + flow(600, 720, 5, error_every=3)
    first, second = run(detector(), events), run(detector(), events)
    assert first and first == second


def test_state_stays_bounded() -> None:
    det = detector(route_idle_secs=600)
    # unrouted scanning: every first path segment is a route key of its own
    run(det, [gateway_event(i * 0.01, status=404, authority="api.example.com", path=f"/x{i}/") for i in range(2000)],
        end=False)
    assert len(det._routes) == 2000
    lengths = []
    for event in flow(20, 1200, 2):
        det.advance(math.floor(event.ts))
        det.observe_event(event)
        lengths.append(len(det._routes["billing-invoices"].buckets))
    assert max(lengths) == 12  # window_secs / bucket_secs
    assert list(det._routes) == ["billing-invoices"]  # the scan's keys idled out after 600 s
    det.advance(T0 + 1900)
    assert det._routes == {}
    det.advance(math.inf)
    assert det._routes == {}


def test_a_flood_of_made_up_routes_is_capped_and_a_real_route_keeps_its_history() -> None:
    """A flood trial: under Envoy's default format every made-up first path segment was a route kept for 6 h, with
    no cap (200k unique paths: replay at 565 MB). Past ``max_tracked_routes`` the least-used entries go."""
    det = detector(max_tracked_routes=100)
    scan = [gateway_event(i * 0.02, status=404, authority="api.example.com", path=f"/x{i}/",
                          upstream_host="10.1.0.9:80") for i in range(3000)]  # fmt: skip
    records = sorted([*scan, *flow(0, 1200, 2), *flow(1200, 1230, 2, error_every=2)], key=lambda e: e.ts)
    findings, sizes = [], []
    for event in records:
        findings += det.advance(math.floor(event.ts))
        findings += det.observe_event(event)
        sizes.append(max(len(det._routes), len(det._upstreams), len(det._hosted)))
    assert max(sizes) <= 100 + 10 / 0.02 + 1  # the cap, and what one bucket's sweep interval can add
    assert "billing-invoices" in det._routes and len(det._routes) <= 100
    assert {(f.entity_type, f.entity_value) for f in findings} == {("route", "billing-invoices")}


def test_a_failing_upstream_host_is_its_own_entity() -> None:
    det = detector()
    events = []
    for i in range(40):
        events.append(req(i * 0.5, 503, upstream_host="10.1.0.10:8080"))
        events += [req(i * 0.5 + 0.1 * n, 200, upstream_host=f"10.1.0.{n}:8080") for n in range(1, 4)]
    findings = run(det, events, end=False)
    assert {(f.entity_type, f.entity_value) for f in findings} == {
        ("route", "billing-invoices"), ("upstream.address", "10.1.0.10:8080"),
    }
    host = next(f for f in findings if f.entity_type == "upstream.address")  # the first; one per bucket follow
    assert host.summary == (
        "upstream host 10.1.0.10:8080: 20 of 20 requests (100.0%) returned 5xx in the last 120 s, "
        "100.0× its baseline 1.00%; its route's other hosts 0.0%"
    )
    assert host.details["siblings_rate"] == 0.0
    # a host alone on its route, or failing like its siblings, is the route's failure: one alert, the route's
    alone = run(detector(), [req(i * 0.5, 503, upstream_host="10.1.0.10:8080") for i in range(20)])
    assert {(f.entity_type, f.entity_value) for f in alone} == {("route", "billing-invoices")}
    everyone = [req(i * 0.5 + n * 0.1, 503, upstream_host=f"10.1.0.{n}:8080") for i in range(20) for n in range(3)]
    assert {f.entity_type for f in run(detector(), everyone)} == {"route"}


def test_without_any_route_key_a_host_is_judged_alone() -> None:
    events = [gateway_event(i * 0.5, request_id=f"r{i}", status=503, upstream_host="tcp://10.0.2.1:80")
              for i in range(20)]
    assert [(f.entity_type, f.entity_value) for f in run(detector(), events)] == [
        ("upstream.address", "tcp://10.0.2.1:80"),
    ]


def test_hosts_keep_separate_baselines() -> None:
    """A host that always fails 25 % stays quiet next to a sibling that jumps from 2 % to 40 %."""
    rates = {1: (4, 4), 2: (50, 50), 3: (50, 2.5)}  # host -> (one 503 in n at night, by day)
    events = [
        req(t + host, 503 if i % night == night - 1 else 200, upstream_host=f"10.1.0.{host}:8080")
        for host, (night, _) in rates.items() for i, t in enumerate(range(0, 900, 10))
    ]
    events += [
        req(900 + j * 0.6 + host * 0.1, 503 if (j % day) >= day - 1 else 200, upstream_host=f"10.1.0.{host}:8080")
        for j in range(1000) for host, (_, day) in rates.items()
    ]
    findings = run(detector(), sorted(events, key=lambda e: e.ts))
    assert {f.entity_value for f in findings if f.entity_type == "upstream.address"} == {"10.1.0.3:8080"}
