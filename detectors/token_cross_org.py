"""token_cross_org: the app served one org's resource to another org's token.

Billing logs the org owning the resource (``org_id``) and the org claim of the
caller's token (``token_org``). A 2xx with the two different is a tenant
isolation failure (an IDOR); a 403 is the app doing its job. Each line is
judged as it arrives; a request's lines count once (``key``: its id).
"""

from __future__ import annotations

from collections.abc import Iterable

from detectors.base import Detector, DetectorConfig, Example, Finding, Severity
from detectors.sample import app_event
from ingest.records import Dataset, Event


class TokenCrossOrg(Detector):
    """An app event answered 2xx for a resource of an org other than the token's."""

    rule_id = "token_cross_org"
    counts = "requests"
    severity = Severity.CRITICAL
    datasets = frozenset({Dataset.APP})

    class Config(DetectorConfig):
        """No thresholds: one served cross-org request is enough."""

    config: Config

    def observe_arrival(self, event: Event) -> Iterable[Finding]:
        token_org, org = event.token_org, event.org_id
        if token_org is None or org is None or token_org == org or event.dataset is Dataset.GATEWAY:
            return ()
        if event.status is None or not 200 <= event.status < 300:
            return ()
        # The subject is who crossed; jti, then the token's org, when the app did not log it.
        if event.token_sub:
            entity_type, entity = "token.sub", event.token_sub
        elif event.token_jti:
            entity_type, entity = "token.jti", event.token_jti
        else:
            entity_type, entity = "token.org", token_org
        return (
            self.finding(
                entity_type,
                entity,
                event.ts,
                f"Billing answered {event.status} to {event.method or '?'} {event.path or '?'} "
                f"for a resource of org {org} with a token of org {token_org} ({entity_type} {entity}).",
                [event.request_id],
                key=event.request_id,
                details={
                    "token_org": token_org,
                    "resource_org": org,
                    "token_jti": event.token_jti,
                    "user_id": event.user_id,
                    "status": event.status,
                    "path": event.path,
                },
            ),
        )

    @classmethod
    def examples(cls) -> Iterable[Example]:
        def served(status: int, org: str) -> Event:
            return app_event(
                10, request_id="r-1", method="GET", path="/v1/orgs/acme/invoices", status=status,
                token_sub="user-1", token_jti="jti-1", token_org="globex", org_id=org,
            )  # fmt: skip

        yield Example("another org's invoices served", (served(200, "acme"),), alerts=frozenset({"user-1"}))
        yield Example("own org's invoices served", (served(200, "globex"),), alerts=frozenset())
        yield Example("cross-org attempt refused with 403", (served(403, "acme"),), alerts=frozenset())
