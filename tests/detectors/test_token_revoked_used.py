"""token_revoked_used edges: the revocation-time boundary, severity by outcome, odd transactions."""

from __future__ import annotations

from detectors.base import DetectorContext, Finding, Severity
from detectors.sample import T0, app_event, gateway_event, transaction
from detectors.token_revoked_used import TokenRevokedUsed
from detectors.trust import TrustPolicy
from ingest.records import Transaction
from tests.detectors.test_examples import EXAMPLE_CONTEXT

REVOKED_AT = T0 + 100  # EXAMPLE_CONTEXT revokes "jti-revoked" then


def observe(txn: Transaction, context: DetectorContext = EXAMPLE_CONTEXT) -> list[Finding]:
    return list(TokenRevokedUsed(TokenRevokedUsed.Config(), context).observe_transaction(txn))


def joined(ts: float, gateway_status: int = 200, app_status: int | None = 200, jti: str = "jti-revoked") -> Transaction:
    return transaction(
        "r-1",
        gateway=(gateway_event(ts, request_id="r-1", source_ip="203.0.113.7", status=gateway_status, token_jti=jti),),
        app=(app_event(ts + 0.05, request_id="r-1", status=app_status),),
    )


def test_use_exactly_at_revocation_fires_and_just_before_does_not() -> None:
    [finding] = observe(joined(100))
    assert (finding.rule, finding.entity_type, finding.entity_value, finding.ts) == (
        "token_revoked_used", "token.jti", "jti-revoked", REVOKED_AT,
    )  # fmt: skip
    assert finding.request_ids == ("r-1",)
    assert finding.details["revoked_at"] == "2026-01-01T00:01:40.000Z"
    assert observe(joined(99.999)) == []


def test_transaction_time_is_its_first_record() -> None:
    # the gateway saw the request before revocation; the app line after it does not make it a post-revocation use
    assert observe(joined(99.99)) == []


def test_severity_critical_only_when_answered_2xx() -> None:
    assert observe(joined(150))[0].severity is Severity.CRITICAL
    refused = observe(joined(150, gateway_status=401, app_status=None))
    assert refused[0].severity is Severity.HIGH
    assert refused[0].details["status"] == 401


def test_gateway_last_attempt_is_what_the_client_got() -> None:
    txn = transaction(
        "r-1",
        gateway=(
            gateway_event(150, request_id="r-1", status=503, token_jti="jti-revoked"),
            gateway_event(150.5, request_id="r-1", status=200, token_jti="jti-revoked"),
        ),
    )
    assert observe(txn)[0].severity is Severity.CRITICAL


def test_app_only_use_takes_the_app_status() -> None:
    txn = transaction("r-1", app=(app_event(150, request_id="r-1", status=200, token_jti="jti-revoked"),))
    [finding] = observe(txn)
    assert (finding.severity, finding.details["transaction_kind"]) == (Severity.CRITICAL, "app_only")


def test_unrevoked_token_and_empty_revocation_list_are_quiet() -> None:
    assert observe(joined(150, jti="jti-fine")) == []
    assert observe(joined(150), DetectorContext(trust=TrustPolicy.build())) == []
    assert observe(transaction("r-1", app=(app_event(150, request_id="r-1", status=200),))) == []


def test_deterministic() -> None:
    txn = joined(150)
    assert observe(txn) == observe(txn)
