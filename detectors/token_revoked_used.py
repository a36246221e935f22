"""token_revoked_used: a request carried a token at or after its revocation.

JWT validation at the gateway is stateless, so a revoked but unexpired token
still passes it; only the revocation list (``context.revoked``: jti ->
revoked_at) tells. Any use is high: someone still holds the token. A use that
was answered 2xx is critical: it worked.
"""

from __future__ import annotations

from collections.abc import Iterable

from detectors.alerts import iso
from detectors.base import Detector, DetectorConfig, Example, Finding, Severity
from detectors.sample import app_event, gateway_event, transaction
from ingest.records import Transaction


class TokenRevokedUsed(Detector):
    """A transaction whose token ``jti`` was revoked at or before the request's first record."""

    rule_id = "token_revoked_used"
    severity = Severity.HIGH

    class Config(DetectorConfig):
        """No thresholds: the revocation list decides."""

    config: Config

    def observe_transaction(self, txn: Transaction) -> Iterable[Finding]:
        revoked = self.context.revoked
        if not revoked:
            return ()
        jti = txn.first("token_jti")
        if not isinstance(jti, str):
            return ()
        revoked_at = revoked.get(jti)
        ts = txn.first_ts
        if revoked_at is None or ts < revoked_at:
            return ()
        status = _answered_status(txn)
        accepted = status is not None and 200 <= status < 300
        return (
            self.finding(
                "token.jti",
                jti,
                ts,
                f"Token {jti} revoked at {iso(revoked_at)} was used {ts - revoked_at:.0f} s later "
                f"from {txn.client_ip or 'an unknown address'} ({txn.kind}, answered "
                f"{status if status is not None else 'with no recorded status'}).",
                [txn.request_id],
                severity=Severity.CRITICAL if accepted else None,
                details={
                    "revoked_at": iso(revoked_at),
                    "status": status,
                    "token_sub": txn.first("token_sub"),
                    "transaction_kind": txn.kind,
                },
            ),
        )

    @classmethod
    def examples(cls) -> Iterable[Example]:
        # tests/detectors/test_examples.py's EXAMPLE_CONTEXT revokes "jti-revoked" at T0 + 100.
        def used(ts: float, status: int) -> Transaction:
            rid = f"r-{ts:g}"
            return transaction(
                rid,
                gateway=(
                    gateway_event(ts, request_id=rid, source_ip="203.0.113.7", status=status, token_jti="jti-revoked"),
                ),
                app=(app_event(ts + 0.05, request_id=rid, status=status, token_jti="jti-revoked"),),
            )

        yield Example("revoked token used after revocation", (used(150, 200),), alerts=frozenset({"jti-revoked"}))
        yield Example("revoked token used before its revocation", (used(50, 200),), alerts=frozenset())


def _answered_status(txn: Transaction) -> int | None:
    """What the client got: the gateway's last attempt, else the app's last status."""
    for events in (txn.gateway, txn.app):
        for event in reversed(events):
            if event.status is not None:
                return event.status
    return None
