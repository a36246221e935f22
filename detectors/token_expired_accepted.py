"""token_expired_accepted: the app answered 2xx to a request whose token had expired.

The gateway should refuse an expired JWT; an accepted one at the app means the
check was skipped (a bypass, a misrouted listener, a cached session). Clocks of
the gateway, the app and the token issuer differ a little, so only a request
begun more than ``skew_allowance_secs`` past ``exp`` counts (Billing writes its
line when it answers: the duration it logged is taken off). Each line is judged
as it arrives; a request's lines count once (``key``: its id).
"""

from __future__ import annotations

from collections.abc import Iterable

from detectors.base import Detector, DetectorConfig, Example, Finding, Severity, request_start, seconds
from detectors.sample import T0, app_event
from ingest.ecs import iso
from ingest.records import Dataset, Event


class TokenExpiredAccepted(Detector):
    """An app event answered 2xx to a request begun more than ``skew_allowance_secs`` after its token's ``exp``."""

    rule_id = "token_expired_accepted"
    counts = "requests"
    severity = Severity.HIGH
    datasets = frozenset({Dataset.APP})

    class Config(DetectorConfig):
        skew_allowance_secs: float = 30.0

    config: Config

    def observe_arrival(self, event: Event) -> Iterable[Finding]:
        exp = event.token_exp
        if exp is None:
            return ()
        # Nearly every token is alive: that test goes first (a request's start is at or before its line).
        if event.ts - exp <= self.config.skew_allowance_secs or event.dataset is Dataset.GATEWAY:
            return ()
        late_secs = request_start(event) - exp  # a request begun in time used the token in time
        if late_secs <= self.config.skew_allowance_secs:
            return ()
        if event.status is None or not 200 <= event.status < 300:
            return ()
        # jti names the token; sub is the next best handle. Neither: nothing to alert on.
        if event.token_jti:
            entity_type, entity = "token.jti", event.token_jti
        elif event.token_sub:
            entity_type, entity = "token.sub", event.token_sub
        else:
            return ()
        return (
            self.finding(
                entity_type,
                entity,
                event.ts,
                f"Billing answered {event.status} to {event.method or '?'} {event.path or '?'} "
                f"with token {entity}, {seconds(late_secs)} s after it expired at {iso(exp)} "
                f"(allowance {seconds(self.config.skew_allowance_secs)} s).",
                [event.request_id],
                key=event.request_id,
                details={
                    "token_exp": iso(exp),
                    "seconds_past_exp": round(late_secs, 3),
                    "token_sub": event.token_sub,
                    "status": event.status,
                    "path": event.path,
                },
            ),
        )

    @classmethod
    def examples(cls) -> Iterable[Example]:
        exp = T0 + 300
        token = {"token_jti": "jti-old", "token_sub": "user-1", "token_exp": exp}
        yield Example(
            "expired token answered 200",
            (app_event(420, request_id="r-1", method="GET", path="/v1/invoices", status=200, **token),),
            alerts=frozenset({"jti-old"}),
        )
        yield Example(
            "no jti: the subject is the entity",
            (app_event(420, request_id="r-1", status=200, token_sub="user-9", token_exp=exp),),
            alerts=frozenset({"user-9"}),
        )
        yield Example(
            "used 10 s after exp, inside the clock-skew allowance",
            (app_event(310, request_id="r-1", method="GET", path="/v1/invoices", status=200, **token),),
            alerts=frozenset(),
        )
        yield Example(
            "expired token refused by the app",
            (app_event(420, request_id="r-1", method="GET", path="/v1/invoices", status=401, **token),),
            alerts=frozenset(),
        )
