"""token_revoked_used edges: the revocation-time boundary, severity by outcome, one count per request."""

from __future__ import annotations

from detectors.alerts import AlertBook
from detectors.base import DetectorContext, Finding, Severity
from detectors.sample import T0, app_event, gateway_event
from detectors.token_revoked_used import TokenRevokedUsed
from detectors.trust import TrustPolicy
from ingest.records import Event
from tests.detectors.test_examples import EXAMPLE_CONTEXT

REVOKED_AT = T0 + 100  # EXAMPLE_CONTEXT revokes "jti-revoked" then


def observe(*events: Event, context: DetectorContext = EXAMPLE_CONTEXT) -> list[Finding]:
    detector = TokenRevokedUsed(TokenRevokedUsed.Config(), context)
    return [finding for event in events for finding in detector.observe_arrival(event)]


def edge(ts: float, status: int = 200, jti: str = "jti-revoked", rid: str = "r-1") -> Event:
    return gateway_event(ts, request_id=rid, source_ip="203.0.113.7", status=status, token_jti=jti)


def app(ts: float, status: int | None = 200, jti: str = "jti-revoked", rid: str = "r-1") -> Event:
    return app_event(ts, request_id=rid, status=status, token_jti=jti)


def test_use_exactly_at_revocation_fires_and_just_before_does_not() -> None:
    [finding] = observe(edge(100))
    assert (finding.rule, finding.entity_type, finding.entity_value, finding.ts) == (
        "token_revoked_used", "token.jti", "jti-revoked", REVOKED_AT,
    )  # fmt: skip
    assert finding.request_ids == ("r-1",) and finding.key == "r-1"
    assert finding.details["revoked_at"] == "2026-01-01T00:01:40.000Z"
    assert observe(edge(99.999)) == []


def test_severity_critical_only_when_answered_2xx() -> None:
    assert observe(edge(150))[0].severity is Severity.CRITICAL
    [refused] = observe(edge(150, status=401))
    assert refused.severity is Severity.HIGH and refused.details["status"] == 401
    assert observe(app(150, status=None))[0].severity is Severity.HIGH


def test_a_request_counts_once_and_its_alert_takes_the_worst_outcome() -> None:
    # the gateway's first attempt failed, the retry got through; Billing logged the use too
    lines = [edge(150, status=503), edge(150.5, status=200), app(150.6)]
    for order in (lines, lines[::-1]):
        book = AlertBook()
        alerts = [book.add(finding) for finding in observe(*order)]
        assert (alerts[-1].count, alerts[-1].severity, alerts[-1].first_seen) == (1, Severity.CRITICAL, T0 + 150)
    second = book.add(observe(edge(200, rid="r-2"))[0])
    assert second.count == 2 and second.request_ids == ("r-1", "r-2")


def test_app_only_use_fires_too() -> None:
    [finding] = observe(app(150))
    assert (finding.severity, finding.details["seen_by"]) == (Severity.CRITICAL, "billing.app")


def test_unrevoked_token_and_empty_revocation_list_are_quiet() -> None:
    assert observe(edge(150, jti="jti-fine")) == []
    assert observe(edge(150), context=DetectorContext(trust=TrustPolicy.build())) == []
    assert observe(app_event(150, request_id="r-1", status=200)) == []


def test_a_request_begun_before_the_revocation_used_the_token_in_time() -> None:
    """A detection audit: a 60 s export begun 10 s before the revocation was a critical alert, "used 50 s later":
    Billing writes its line when it answers, so its logged duration is taken off."""
    export = app_event(150, request_id="r-1", status=200, token_jti="jti-revoked", duration_ms=60_000.0)
    assert observe(export) == []
    begun_after = app_event(150, request_id="r-2", status=200, token_jti="jti-revoked", duration_ms=40_000.0)
    [finding] = observe(begun_after)
    assert finding.ts == T0 + 150 and "was used 10 s later" in finding.summary
    assert observe(edge(90)) == []  # the gateway's line is dated at the request's start already
