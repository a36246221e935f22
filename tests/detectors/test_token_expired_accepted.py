"""token_expired_accepted edges: the skew boundary, status classes, entity fallback, gateway lines."""

from __future__ import annotations

from typing import Any

from detectors.base import Finding
from detectors.sample import T0, app_event, gateway_event
from detectors.token_expired_accepted import TokenExpiredAccepted
from ingest.records import Event
from tests.detectors.test_examples import EXAMPLE_CONTEXT

EXP = T0 + 300


def observe(event: Event, **config: Any) -> list[Finding]:
    detector = TokenExpiredAccepted(TokenExpiredAccepted.Config(**config), EXAMPLE_CONTEXT)
    return list(detector.observe_arrival(event))


def served(ts: float, status: int = 200, **fields: Any) -> Event:
    token = {"token_jti": "jti-1", "token_sub": "user-1", "token_exp": EXP} | fields
    return app_event(ts, request_id="r-1", method="GET", path="/v1/invoices", status=status, **token)


def test_exactly_at_skew_allowance_is_quiet_and_just_past_it_fires() -> None:
    assert observe(served(330)) == []
    [finding] = observe(served(330.001))
    assert (finding.rule, finding.severity, finding.entity_type, finding.entity_value) == (
        "token_expired_accepted", "high", "token.jti", "jti-1",
    )  # fmt: skip
    assert finding.request_ids == ("r-1",)
    assert finding.details["token_exp"] == "2026-01-01T00:05:00.000Z"
    assert finding.details["seconds_past_exp"] == 30.001


def test_skew_allowance_is_configurable() -> None:
    assert observe(served(310), skew_allowance_secs=5) != []
    assert observe(served(400), skew_allowance_secs=120) == []


def test_only_2xx_counts() -> None:
    statuses = (200, 204, 299, 301, 304, 401, 403, 500)
    assert [len(observe(served(400, status=s))) for s in statuses] == [1, 1, 1, 0, 0, 0, 0, 0]


def test_missing_status_or_exp_is_quiet() -> None:
    assert observe(app_event(400, request_id="r-1", token_jti="jti-1", token_exp=EXP)) == []
    assert observe(served(400, token_exp=None)) == []


def test_entity_falls_back_to_sub_then_skips() -> None:
    [finding] = observe(served(400, token_jti=None))
    assert (finding.entity_type, finding.entity_value) == ("token.sub", "user-1")
    assert observe(served(400, token_jti=None, token_sub=None)) == []


def test_gateway_lines_are_ignored() -> None:
    event = gateway_event(400, request_id="r-1", status=200, token_jti="jti-1", token_exp=EXP)
    assert observe(event) == []


def test_deterministic() -> None:
    event = served(400)
    assert observe(event) == observe(event)


def test_a_request_begun_before_expiry_used_the_token_in_time() -> None:
    """A detection audit: a 60 s export begun 10 s before ``exp`` raised an alert "50 s after it expired"."""
    assert observe(served(350, duration_ms=60_000.0)) == []
    [finding] = observe(served(350, duration_ms=10_000.0))  # begun 40 s past exp
    assert finding.details["seconds_past_exp"] == 40.0 and "40 s after it expired" in finding.summary


def test_the_summary_does_not_round_a_late_use_down_to_the_allowance() -> None:
    [finding] = observe(served(330.5))
    assert "30.5 s after it expired" in finding.summary and "(allowance 30 s)" in finding.summary
