"""Elastic Common Schema names, and the documents that stores and SIEMs receive.

Every ECS field name gatewatch writes is spelled here once. What ECS lacks
(token claims, peer identity, Envoy's response flags) lives under the single
``gatewatch.`` namespace. The JSON Schemas in ``schemas/`` describe exactly
these documents; a test checks documents built here against them.
"""

from __future__ import annotations

from datetime import datetime, timezone
from functools import lru_cache
from typing import Any

from ingest.records import DeadLetter, Event, Transaction
from ingest.routes import route_of

TIMESTAMP = "@timestamp"
EVENT_ID = "event.id"
EVENT_DATASET = "event.dataset"
EVENT_KIND = "event.kind"
EVENT_ACTION = "event.action"
EVENT_OUTCOME = "event.outcome"
EVENT_DURATION = "event.duration"  # nanoseconds, as ECS defines it
EVENT_CREATED = "event.created"  # when the container runtime wrote the line
REQUEST_ID = "http.request.id"
METHOD = "http.request.method"
REQUEST_BYTES = "http.request.bytes"
STATUS = "http.response.status_code"
RESPONSE_BYTES = "http.response.bytes"
HTTP_VERSION = "http.version"
URL_PATH = "url.path"
URL_DOMAIN = "url.domain"
USER_AGENT = "user_agent.original"
SOURCE_IP = "source.ip"
TLS_VERSION = "tls.version"
USER_ID = "user.id"
ORG_ID = "organization.id"
LOG_LEVEL = "log.level"
MESSAGE = "message"
LABELS = "labels"
ROUTE = "gatewatch.route"  # ingest.routes.route_of: a route under Envoy's default format too (no route name)

# Event attribute -> document field, for attributes copied as they are.
EVENT_FIELDS: dict[str, str] = {
    "request_id": REQUEST_ID,
    "method": METHOD,
    "path": URL_PATH,
    "authority": URL_DOMAIN,
    "status": STATUS,
    "bytes_received": REQUEST_BYTES,
    "bytes_sent": RESPONSE_BYTES,
    "user_agent": USER_AGENT,
    "source_ip": SOURCE_IP,
    "tls_version": TLS_VERSION,
    "user_id": USER_ID,
    "org_id": ORG_ID,
    "action": EVENT_ACTION,
    "outcome": EVENT_OUTCOME,
    "level": LOG_LEVEL,
    "message": MESSAGE,
    "response_code_details": "gatewatch.envoy.response_code_details",
    "upstream_service_time_ms": "gatewatch.envoy.upstream_service_time_ms",
    "upstream_host": "gatewatch.envoy.upstream_host",
    "upstream_cluster": "gatewatch.envoy.upstream_cluster",
    "route_name": "gatewatch.envoy.route_name",
    "forwarded_for": "gatewatch.envoy.x_forwarded_for",
    "duration_ms": "gatewatch.duration_ms",
    "peer_identity": "gatewatch.peer.identity",
    "token_jti": "gatewatch.token.jti",
    "token_sub": "gatewatch.token.sub",
    "token_org": "gatewatch.token.org",
}


def iso(ts: float) -> str:
    """Epoch seconds as ISO 8601 UTC with milliseconds and a ``Z``."""
    milliseconds = round(ts * 1000)
    seconds, fraction = divmod(milliseconds, 1000)
    return f"{_iso_second(seconds)}.{fraction:03d}Z"


def epoch(text: str) -> float:
    """Epoch seconds of an ISO 8601 time with an offset or ``Z`` (:func:`iso`'s inverse); ValueError if not one."""
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        raise ValueError(f"{text!r} has no time zone offset")
    return moment.timestamp()


@lru_cache(maxsize=8192)
def _iso_second(seconds: int) -> str:
    # Formatting dominates document building; consecutive records share their second.
    return datetime.fromtimestamp(seconds, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")


def event_document(event: Event) -> dict[str, Any]:
    """The flat (dotted-key) ECS document for one event."""
    doc: dict[str, Any] = {
        TIMESTAMP: iso(event.ts),
        EVENT_ID: event.id,
        EVENT_DATASET: str(event.dataset),
        EVENT_KIND: "event",
        "gatewatch.origin.stream": event.origin.stream,
        "gatewatch.origin.offset": event.origin.offset,
    }
    for attribute, name in EVENT_FIELDS.items():
        value = getattr(event, attribute)
        if value is not None:
            doc[name] = value
    if (route := route_of(event.route_name, event.upstream_cluster, event.authority, event.path)) is not None:
        doc[ROUTE] = route
    if event.protocol is not None:
        doc[HTTP_VERSION] = event.protocol.removeprefix("HTTP/")
    if event.duration_ms is not None:
        doc[EVENT_DURATION] = int(event.duration_ms * 1_000_000)
    if event.response_flags:
        doc["gatewatch.envoy.response_flags"] = list(event.response_flags)
    if event.created is not None:
        doc[EVENT_CREATED] = iso(event.created)
    if event.token_exp is not None:
        doc["gatewatch.token.exp"] = iso(event.token_exp)
    if event.token_iat is not None:
        doc["gatewatch.token.iat"] = iso(event.token_iat)
    if event.labels:
        doc[LABELS] = dict(event.labels)
    return doc


def transaction_document(txn: Transaction) -> dict[str, Any]:
    """One request seen from both sides: the join of its gateway attempts and app lines."""
    doc: dict[str, Any] = {
        TIMESTAMP: iso(txn.first_ts),
        EVENT_ID: txn.id,
        EVENT_DATASET: "gatewatch.transaction",
        EVENT_KIND: "event",
        REQUEST_ID: txn.request_id,
        "gatewatch.transaction.kind": txn.kind,
        "gatewatch.transaction.gateway_attempts": len(txn.gateway),
        "gatewatch.transaction.app_records": len(txn.app),
        "gatewatch.transaction.end": iso(txn.last_ts),
        "gatewatch.transaction.event_ids": [e.id for e in txn.gateway + txn.app],
    }
    optional = {
        SOURCE_IP: txn.client_ip,
        METHOD: txn.first("method"),
        URL_PATH: txn.first("path"),
        USER_ID: txn.first("user_id"),
        ORG_ID: txn.first("org_id"),
        "gatewatch.envoy.route_name": txn.first("route_name"),
        ROUTE: route_of(*(_text(txn.first(name)) for name in ("route_name", "upstream_cluster", "authority", "path"))),
        "gatewatch.token.jti": txn.first("token_jti"),
        "gatewatch.token.sub": txn.first("token_sub"),
        "gatewatch.transaction.gateway_status": txn.gateway_status,
        "gatewatch.transaction.app_status": txn.app_status,
        STATUS: txn.gateway_status if txn.gateway_status is not None else txn.app_status,
    }
    doc.update((k, v) for k, v in optional.items() if v is not None)
    return doc


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def dead_letter_document(letter: DeadLetter, file: str | None = None) -> dict[str, Any]:
    """A record that could not be parsed, with why and where it came from (``file``: the path of its file)."""
    document = {
        "id": letter.id,
        "reason": letter.reason,
        "detail": letter.detail,
        "dataset": str(letter.origin.dataset),
        "stream": letter.origin.stream,
        "offset": letter.origin.offset,
        "line": letter.line.decode("utf-8", errors="backslashreplace"),
    }
    if file is not None:
        document["file"] = file
    return document
