"""token_cross_org edges: status classes, missing orgs, entity fallback, gateway lines."""

from __future__ import annotations

from typing import Any

from detectors.base import Finding, Severity
from detectors.sample import app_event, gateway_event
from detectors.token_cross_org import TokenCrossOrg
from ingest.records import Event
from tests.detectors.test_examples import EXAMPLE_CONTEXT


def observe(event: Event) -> list[Finding]:
    return list(TokenCrossOrg(TokenCrossOrg.Config(), EXAMPLE_CONTEXT).observe_arrival(event))


def served(status: int = 200, **fields: Any) -> Event:
    values = {"token_sub": "user-1", "token_jti": "jti-1", "token_org": "globex", "org_id": "acme"} | fields
    return app_event(10, request_id="r-1", method="GET", path="/v1/orgs/acme/invoices", status=status, **values)


def test_cross_org_2xx_is_critical_on_the_subject() -> None:
    [finding] = observe(served())
    assert (finding.rule, finding.severity, finding.entity_type, finding.entity_value, finding.reason) == (
        "token_cross_org", Severity.CRITICAL, "token.sub", "user-1", None,
    )  # fmt: skip
    assert finding.request_ids == ("r-1",)
    assert (finding.details["token_org"], finding.details["resource_org"]) == ("globex", "acme")


def test_only_2xx_counts() -> None:
    assert [len(observe(served(s))) for s in (200, 201, 299, 302, 403, 404, 500)] == [1, 1, 1, 0, 0, 0, 0]


def test_either_org_missing_or_equal_is_quiet() -> None:
    assert observe(served(org_id=None)) == []
    assert observe(served(token_org=None)) == []
    assert observe(served(org_id="globex")) == []


def test_entity_falls_back_to_jti_then_token_org() -> None:
    assert [(f.entity_type, f.entity_value) for f in observe(served(token_sub=None))] == [("token.jti", "jti-1")]
    assert [(f.entity_type, f.entity_value) for f in observe(served(token_sub=None, token_jti=None))] == [
        ("token.org", "globex")
    ]


def test_gateway_lines_are_ignored() -> None:
    assert observe(gateway_event(10, request_id="r-1", status=200, token_org="globex", org_id="acme")) == []


def test_deterministic() -> None:
    event = served()
    assert observe(event) == observe(event)
