"""The JSON Schemas in schemas/ describe exactly the documents the code builds.

Documents come from the real builders (ingest/ecs.py, Alert.to_document, the
search sink's store_rejected dead letters) fed with detectors/sample.py events
and every detector's own alerting examples. Both directions are checked: every
built document validates, and every schema property is written by some builder.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

import pytest
from jsonschema import Draft202012Validator, FormatChecker

from detectors import registry
from detectors.alerts import Alert, AlertBook
from ingest.alerts import AlertEvent, AlertState
from detectors.base import DetectorContext
from detectors.sample import T0, app_event, gateway_event, transaction
from detectors.trust import TrustPolicy
from tests.detectors.test_examples import feed
from ingest.ecs import dead_letter_document, event_document, iso, transaction_document
from ingest.records import Dataset, DeadLetter, Event, Origin
from ingest.sinks.search import BulkAction, Rejection, rejection_dead_letter
from schemas import DOCUMENT_SCHEMAS, load_schema

_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
FORMATS = FormatChecker()


@FORMATS.checks("date-time", raises=ValueError)
def _rfc3339(value: object) -> bool:
    # jsonschema checks date-time only with an optional package; this one is strict enough.
    if not isinstance(value, str):
        return True
    if not _RFC3339.match(value):
        raise ValueError(f"{value!r} is not RFC 3339")
    datetime.fromisoformat(value)
    return True


def validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load_schema(name), format_checker=FORMATS)


def full_gateway_event() -> Event:
    return gateway_event(
        1.5, request_id="req-1", method="POST", path="/v1/invoices", protocol="HTTP/1.1", status=201,
        response_flags=("UH", "URX"), response_code_details="via_upstream", bytes_received=512, bytes_sent=2048,
        duration_ms=12.5, upstream_service_time_ms=10.0, upstream_host="10.0.1.7:8080",
        upstream_cluster="billing", route_name="invoices", authority="billing.example", user_agent="curl/8.5",
        forwarded_for="203.0.113.9, 10.0.0.2", source_ip="203.0.113.9", tls_version="TLSv1.3",
        token_jti="jti-1", token_sub="user-1", token_org="org-1", token_exp=T0 + 3600, token_iat=T0 - 60,
        labels=(("x_tenant", "acme"),), created=T0 + 1.6,
    )


def full_app_event() -> Event:
    return app_event(
        1.7, request_id="req-1", status=201, source_ip="10.0.0.5",
        peer_identity="spiffe://billing.example/ns/edge/sa/ambassador", user_id="user-1", org_id="org-1",
        action="invoice.create", outcome="success", level="info", message="invoice created", method="POST",
        path="/v1/invoices",
    )


def example_alerts() -> list[Alert]:
    """Alerts every detector raises on its own must-alert examples, folded like the engine does."""
    context = DetectorContext(
        trust=TrustPolicy.build(
            gateway_identities=["spiffe://billing.example/ns/edge/sa/ambassador"],
            gateway_networks=["10.0.0.0/24"],
            internal_callers=["spiffe://billing.example/ns/ops/sa/reconciler"],
        ),
        revoked={"jti-revoked": T0 + 100},
    )
    book = AlertBook()
    for cls in registry().values():
        for example in cls.examples():
            for finding in feed(cls(cls.Config(), context), example.records):
                book.add(finding)
                book.add(finding)  # a grown alert: count 2
    return list(book)


def documents() -> dict[str, list[dict[str, Any]]]:
    gateway, app = full_gateway_event(), full_app_event()
    minimal = gateway_event(3.0)
    letter = DeadLetter(Origin(Dataset.GATEWAY, "/var/log/envoy.log", 7), "invalid_utf8", "byte 3", b"GET \xff /")
    event_doc = event_document(gateway)
    rejected = rejection_dead_letter(
        Rejection(
            BulkAction("events", "gatewatch-events-2026.01.01", gateway.id, b'{"event.id": "x"}'),
            400,
            {"type": "document_parsing_exception", "reason": "failed to parse", "caused_by": {"type": "x"}},
        ),
        T0,
    )
    alert_rejected = rejection_dead_letter(
        Rejection(BulkAction("alerts", "gatewatch-alerts-2026.01.01", "a1", b"{}"), 400, {"type": "y"}), T0
    )
    return {
        "event": [event_doc, event_document(app), event_document(minimal)],
        "transaction": [
            transaction_document(transaction("req-1", (gateway,), (app,))),
            transaction_document(transaction("req-2", (minimal,))),
            transaction_document(transaction("req-3", app=(full_app_event(),))),
        ],
        "alert": [alert.to_document() for alert in example_alerts()] + [
            # A lifecycle event (the lifecycle file, forwarders, the alerts topic): a SIEM trial validated them
            # against this schema and refused every one.
            AlertEvent(alert, state, sequence, alert.last_seen).to_document()
            for alert in example_alerts()[:1]
            for state, sequence in ((AlertState.OPEN, 1), (AlertState.RESOLVED, 2))
        ],
        "dead_letter": [
            dead_letter_document(letter),
            {"@timestamp": iso(T0), **dead_letter_document(letter)},  # as the search sink stores it
            dead_letter_document(letter, "/var/log/envoy/access.log.1.gz"),  # as replay's dead-letter file has it
            rejected,
            alert_rejected,
        ],
    }


DOCUMENTS = documents()


@pytest.mark.parametrize("name", DOCUMENT_SCHEMAS)
def test_schema_is_valid_draft_2020_12(name: str) -> None:
    schema = load_schema(name)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    Draft202012Validator.check_schema(schema)
    for key, prop in schema["properties"].items():
        assert prop.get("description"), f"{name}: {key} has no description"


@pytest.mark.parametrize(
    ("name", "index"), [pytest.param(n, i, id=f"{n}-{i}") for n, docs in DOCUMENTS.items() for i in range(len(docs))]
)
def test_built_document_matches_schema(name: str, index: int) -> None:
    errors = sorted(validator(name).iter_errors(DOCUMENTS[name][index]), key=str)
    assert not errors, "\n".join(f"{list(e.absolute_path)}: {e.message}" for e in errors)


@pytest.mark.parametrize("name", DOCUMENT_SCHEMAS)
def test_every_schema_property_is_written_by_some_builder(name: str) -> None:
    written = {key for doc in DOCUMENTS[name] for key in doc}
    assert set(load_schema(name)["properties"]) == written


def test_every_rule_contributes_an_alert() -> None:
    assert {alert.rule for alert in example_alerts()} == set(registry())


@pytest.mark.parametrize(
    ("name", "document", "problem"),
    [
        ("event", {**event_document(full_gateway_event()), "http.response.status_code": "201"}, "not of type"),
        ("event", {**event_document(full_gateway_event()), "gatewatch.new_field": 1}, "Additional properties"),
        ("event", {**event_document(full_gateway_event()), "@timestamp": "2026-01-01 00:00"}, "is not a 'date-time'"),
        ("alert", {k: v for k, v in DOCUMENTS["alert"][0].items() if k != "rule"}, "'rule' is a required"),
    ],
)
def test_schema_catches_drift(name: str, document: dict[str, Any], problem: str) -> None:
    messages = [error.message for error in validator(name).iter_errors(document)]
    assert any(problem in m for m in messages), messages


def test_load_schema_unknown_name() -> None:
    with pytest.raises(KeyError, match="no schema 'nope'"):
        load_schema("nope")
