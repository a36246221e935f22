"""http_4xx_burst: the threshold and window edges, client keys, repeats, bounded state."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from detectors.http_4xx_burst import Http4xxBurst
from detectors.sample import T0, app_event, gateway_event
from ingest.records import Event
from tests.detectors.test_examples import EXAMPLE_CONTEXT
from tests.detectors.test_examples import feed as run


def detector(**overrides: object) -> Http4xxBurst:
    return Http4xxBurst(Http4xxBurst.Config(**overrides), EXAMPLE_CONTEXT)




def errors(
    count: int, every_secs: float = 1.0, start: float = 0.0, status: int | None = 401, **fields: object
) -> list[Event]:
    fields.setdefault("source_ip", "203.0.113.50")
    return [
        gateway_event(start + i * every_secs, request_id=f"e-{start + i * every_secs:g}", status=status, **fields)
        for i in range(count)
    ]


def test_fires_at_exactly_min_errors_not_below_with_every_error_that_reached_it() -> None:
    assert run(detector(), errors(29)) == []
    findings = run(detector(), errors(30))
    # Each of the 30 errors is a finding at its own time, keyed by it: the alert counts the burst's errors.
    assert [f.ts for f in findings] == [T0 + i for i in range(30)]
    assert len({f.key for f in findings}) == 30
    for finding in findings:
        assert (finding.entity_type, finding.entity_value) == ("source.ip", "203.0.113.50")
        assert finding.summary == "203.0.113.50 got 30 client errors in 60 s (401×30)"
        assert finding.reason == "auth_failures"
        assert finding.details == {"count": 30, "window_secs": 60.0, "statuses": {"401": 30}}
    # the burst's first 20 errors name their requests (max_request_ids): the alert's evidence
    assert [f.request_ids for f in findings] == [(f"e-{i}",) for i in range(20)] + [()] * 10
    assert {f.window_ts for f in findings} == {T0}  # the alert window of the burst's first error


def test_every_further_error_above_the_threshold_is_a_finding() -> None:
    findings = run(detector(), errors(35))
    assert [f.details["count"] for f in findings] == [30] * 30 + [31, 32, 33, 34, 35]
    assert [f.ts for f in findings[30:]] == [T0 + i for i in range(30, 35)]


def test_the_alert_counts_the_burst_from_its_first_error() -> None:
    # An analyst found "got 30 client errors" alerts for bursts of 35 and 150, naming requests 10-29.
    from detectors.alerts import AlertBook

    book = AlertBook()
    alert = [book.add(finding) for finding in run(detector(), errors(35))][-1]
    assert (alert.count, alert.first_seen, alert.last_seen) == (35, T0, T0 + 34)
    assert alert.request_ids == tuple(f"e-{i}" for i in range(20))


def test_a_burst_across_an_alert_window_edge_is_one_alert_at_its_threshold() -> None:
    """A detection audit: 30 errors from 15 s before a window's edge made two alerts of count 15, each below the
    threshold (a SIEM filter on count >= 30 saw neither), and an error that went on made one with no request ids."""
    from detectors.alerts import AlertBook

    book = AlertBook(suppression_window_secs=600)
    alerts = {}
    for finding in run(detector(), errors(30, start=585)):
        alert = book.add(finding)
        alerts[alert.id] = alert
    [alert] = alerts.values()
    assert (alert.count, alert.first_seen, alert.last_seen) == (30, T0 + 585, T0 + 614)
    assert alert.request_ids == tuple(f"e-{585 + i}" for i in range(20))

    # Errors after the threshold are each in their own window: a burst that goes on alerts per window, with evidence.
    book, alerts = AlertBook(suppression_window_secs=600), {}
    for finding in run(detector(), errors(60, every_secs=0.5, start=585.5)):
        alert = book.add(finding)
        alerts[alert.id] = alert
    first, then = sorted(alerts.values(), key=lambda a: a.first_seen)
    assert (first.count, first.first_seen, first.last_seen) == (30, T0 + 585.5, T0 + 600)
    assert (then.count, then.first_seen, len(then.request_ids)) == (30, T0 + 600.5, 20)


def test_window_is_half_open() -> None:
    # first and 30th error exactly window_secs apart: the first has left the window
    assert run(detector(), errors(29) + errors(1, start=60.0)) == []
    assert len(run(detector(), errors(29) + errors(1, start=59.9))) == 30


def test_errors_slide_out_of_the_window() -> None:
    det = detector()
    run(det, errors(29), end=False)
    # at t=100 every earlier error is older than the window
    assert run(det, errors(1, start=100.0), end=False) == []
    assert len(det._clients[("source.ip", "203.0.113.50")].errors) == 1


def test_token_subject_is_the_client_when_present() -> None:
    spread = [
        gateway_event(i, request_id=f"t-{i}", status=403, token_sub="user-4711", source_ip=f"192.0.2.{i}")
        for i in range(30)
    ]
    findings = run(detector(), spread)
    assert {(f.entity_type, f.entity_value) for f in findings} == {("token.sub", "user-4711")}


def test_only_gateway_4xx_with_a_client_count() -> None:
    ignored = errors(40, status=500) + errors(40, start=0.5, status=399) + errors(40, start=0.25, status=None)
    ignored += [app_event(i, status=401, source_ip="203.0.113.50") for i in range(40)]
    ignored += [gateway_event(i, status=401) for i in range(40)]  # no token, no address
    ignored.sort(key=lambda e: e.ts)
    det = detector()
    assert run(det, ignored, end=False) == []
    assert det._clients == {}


def test_reason_and_histogram_follow_the_mix() -> None:
    mixed = errors(10, status=404) + errors(10, start=0.3, status=400) + errors(10, start=0.6, status=422)
    mixed.sort(key=lambda e: e.ts)
    finding = run(detector(), mixed)[0]
    assert finding.reason == "client_errors"
    assert finding.details["statuses"] == {"400": 10, "404": 10, "422": 10}
    assert finding.summary.endswith("(400×10, 404×10, 422×10)")
    assert {f.reason for f in run(detector(), errors(30, status=429))} == {"rate_limited"}


def test_a_flood_is_capped_and_still_alerts() -> None:
    det = detector(max_tracked_errors=50)
    findings = run(det, errors(500, every_secs=0.01), end=False)
    assert len(findings) == 500 and len({f.key for f in findings}) == 500  # the first 30 when reached, then each
    assert len(det._clients[("source.ip", "203.0.113.50")].errors) == 50
    assert findings[-1].details["count"] == 50
    assert findings[-1].details["statuses"] == {"401": 50}
    assert "got 50+ client errors" in findings[-1].summary


def test_cap_below_threshold_is_rejected() -> None:
    with pytest.raises(ValidationError, match="max_tracked_errors"):
        Http4xxBurst.Config(min_errors=30, max_tracked_errors=29)


def test_idle_clients_are_evicted() -> None:
    det = detector()
    many = [gateway_event(i * 0.01, status=404, source_ip=f"198.51.{i // 250}.{i % 250}") for i in range(5000)]
    run(det, many, end=False)
    assert len(det._clients) == 5000
    det.advance(T0 + 120)  # the sweep runs once per window_secs: all are a window old by now
    assert det._clients == {}
    run(det, errors(3, start=200), end=False)
    det.advance(math.inf)
    assert det._clients == {}


def test_same_input_twice_gives_identical_findings() -> None:
    events = errors(40, every_secs=0.5) + errors(40, every_secs=0.5, start=0.25, status=404, source_ip="198.51.100.7")
    events.sort(key=lambda e: e.ts)
    first, second = run(detector(), events), run(detector(), events)
    assert len(first) == 2 * 40 and first == second  # every error of both bursts


def test_a_threshold_lowered_across_a_restart_reports_the_open_window_from_its_first_error() -> None:
    # A config trial: 12 errors under min_errors 30, a restart with min_errors 10, one more error: the alert
    # counted 1 from the 13th error, where replay with 10 from the start counts 13 from the first.
    before = detector()
    assert run(before, errors(12), end=False) == []
    after = detector(min_errors=10)
    after.restore_state(before.state())
    findings = run(after, errors(1, start=12), end=False)
    assert len(findings) == 13 and {f.window_ts for f in findings} == {T0}
    assert findings[0].details["count"] == 13 and findings[0].request_ids == ("e-0",)
    assert run(after, errors(1, start=13))[0].details["count"] == 14  # then one finding an error, as ever


def test_a_restart_with_the_same_threshold_does_not_report_a_burst_twice() -> None:
    before = detector(min_errors=10)
    assert len(run(before, errors(12), end=False)) == 12  # the 10 that reached it, then one an error
    after = detector(min_errors=10)
    after.restore_state(before.state())
    assert [f.details["count"] for f in run(after, errors(1, start=12))] == [13]


def _ambiguous(count: int, clients: str, start: float = 0.0) -> list[Event]:
    """Errors from lines whose client reads two ways ('" "' in a header): no source_ip, the addresses labelled."""
    from ingest.records import AMBIGUOUS_CLIENTS_LABEL

    return errors(count, start=start, source_ip=None,
                  labels=(("gatewatch.ambiguous_quotes", "user_agent,forwarded_for"),
                          (AMBIGUOUS_CLIENTS_LABEL, clients)))  # fmt: skip


def test_an_address_named_only_by_ambiguous_lines_says_it_may_be_one_the_client_wrote() -> None:
    """A client can write a victim's address into X-Forwarded-For behind '" "': the victim's address then
    counts the errors too, and a SOAR blocking the alert's entity would block the victim."""
    findings = run(detector(), _ambiguous(30, "203.0.113.52,198.51.100.99"))
    by_entity = {f.entity_value: f for f in findings}
    assert set(by_entity) == {"203.0.113.52", "198.51.100.99"}
    for finding in by_entity.values():
        assert finding.details["ambiguous_errors"] == 30
        assert finding.summary.endswith("; all from lines whose client address reads two ways: this address "
                                        "may be one the client wrote")  # fmt: skip
    mixed = run(detector(), sorted(errors(20, source_ip="203.0.113.52") +
                                   _ambiguous(10, "203.0.113.52,198.51.100.99", start=0.5), key=lambda e: e.ts))
    assert {f.details["ambiguous_errors"] for f in mixed if f.entity_value == "203.0.113.52"} == {10}
    assert "; 10 from lines whose" in mixed[0].summary
    assert "ambiguous_errors" not in run(detector(), errors(30))[0].details


def test_ambiguous_errors_survive_a_restart_and_slide_out_with_their_window() -> None:
    before = detector()
    assert run(before, _ambiguous(20, "203.0.113.52,198.51.100.99"), end=False) == []
    after = detector()
    after.restore_state(before.state())
    findings = run(after, errors(10, start=20, source_ip="198.51.100.99"), end=False)
    assert findings[0].details["ambiguous_errors"] == 20
    later = run(after, errors(30, start=200, source_ip="198.51.100.99"))
    assert "ambiguous_errors" not in later[-1].details  # the ambiguous ones left the window long ago


def test_ambiguous_errors_leave_with_the_errors_the_cap_drops() -> None:
    # A review: trimmed by time only, the count said "all" of a window the cap had refilled with the
    # address's own errors, and grew without bound under a flood (100,000 times for 1,000 errors kept).
    findings = run(detector(min_errors=20, max_tracked_errors=30),
                   sorted(_ambiguous(30, "203.0.113.52,198.51.100.99") +
                          errors(30, every_secs=0.5, start=30.2, source_ip="198.51.100.99"), key=lambda e: e.ts),
                   end=False)  # fmt: skip
    last = [f for f in findings if f.entity_value == "198.51.100.99"][-1]
    assert "ambiguous_errors" not in last.details and "reads two ways" not in last.summary
    flooded = detector(max_tracked_errors=100)
    run(flooded, _ambiguous(5000, "203.0.113.52,198.51.100.99"), end=False)
    assert all(len(c.ambiguous) <= len(c.errors) <= 100 for c in flooded._clients.values())
