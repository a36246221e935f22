"""token_revoked_used: a request carried a token at or after its revocation.

JWT validation at the gateway is stateless, so a revoked but unexpired token
still passes it; only the revocation list (``context.revoked``: jti ->
revoked_at) tells. Any use is high: someone still holds the token. A use that
was answered 2xx (by the gateway or by Billing) is critical: it worked.

Each gateway or app line is judged as it arrives, by when its request began
(Billing's line less the duration it logged); a request's lines share its
id as ``key``, so it counts once, and the alert takes the highest severity.
"""

from __future__ import annotations

from collections.abc import Iterable

from detectors.base import NO_REVOCATIONS, Detector, DetectorConfig, Example, Finding, Severity, request_start, seconds
from detectors.sample import app_event, gateway_event
from ingest.ecs import iso
from ingest.records import Event


class TokenRevokedUsed(Detector):
    """A request whose token ``jti`` was revoked at or before the request began."""

    rule_id = "token_revoked_used"
    counts = "requests"
    severity = Severity.HIGH

    class Config(DetectorConfig):
        """No thresholds: the revocation list decides."""

    config: Config

    def wants(self, hook: str) -> bool:
        # No revocation list: nothing to find. A list empty at the start may fill while serve runs.
        return self.context.revoked is not NO_REVOCATIONS and super().wants(hook)

    def observe_arrival(self, event: Event) -> Iterable[Finding]:
        revoked = self.context.revoked
        jti = event.token_jti
        if not revoked or not jti:
            return ()
        revoked_at = revoked.get(jti)
        if revoked_at is None:
            return ()
        used_at = request_start(event)  # a request begun before the revocation used the token in time
        if used_at < revoked_at:
            return ()
        status = event.status
        accepted = status is not None and 200 <= status < 300
        seen_by = "the gateway" if event.is_gateway else "Billing"
        return (
            self.finding(
                "token.jti",
                jti,
                event.ts,
                f"Token {jti} revoked at {iso(revoked_at)} was used {seconds(used_at - revoked_at)} s later: "
                f"{seen_by} saw it from {event.source_ip or 'an unknown address'} and answered "
                f"{status if status is not None else 'with no recorded status'}.",
                [event.request_id],
                severity=Severity.CRITICAL if accepted else None,
                key=event.request_id,
                details={
                    "revoked_at": iso(revoked_at),
                    "status": status,
                    "token_sub": event.token_sub,
                    "seen_by": str(event.dataset),
                },
            ),
        )

    @classmethod
    def examples(cls) -> Iterable[Example]:
        # tests/detectors/test_examples.py's EXAMPLE_CONTEXT revokes "jti-revoked" at T0 + 100.
        def used(ts: float, status: int) -> tuple[Event, Event]:
            rid = f"r-{ts:g}"
            return (
                gateway_event(ts, request_id=rid, source_ip="203.0.113.7", status=status, token_jti="jti-revoked"),
                app_event(ts + 0.05, request_id=rid, status=status, token_jti="jti-revoked"),
            )

        yield Example("revoked token used after revocation", used(150, 200), alerts=frozenset({"jti-revoked"}))
        yield Example("revoked token used before its revocation", used(50, 200), alerts=frozenset())
