"""Webhook forwarder: each event POSTed as JSON, ECS-shaped or as an OCSF Detection Finding.

Headers: ``X-Gatewatch-Timestamp`` (Unix seconds at sending) and
``X-Gatewatch-Signature: sha256=<hex>``, the HMAC-SHA256 of
``<timestamp>.<body>`` with the key from the environment variable
``secret_env``. A receiver recomputes it and rejects stale timestamps, which
stops forged and replayed posts. ``X-Gatewatch-Event-Id`` carries the event id
for de-duplication (the body has it too).

Responses: 2xx delivered; 429 and 5xx (and network errors) retried, waiting at
least ``Retry-After`` (seconds or an HTTP date, capped by
``retry_max_backoff_secs``); any other status is final: the event becomes a
dead letter at once.
"""

from __future__ import annotations

import email.utils
import hashlib
import hmac
import os
import ssl
import time
import urllib.error
import urllib.request
from typing import Any

import orjson

from detectors.base import Severity
from gatewatch.config_text import printable_url
from gatewatch.errors import ConfigError, DeliveryError
from gatewatch.forward.cef import PRODUCT_VERSION
from gatewatch.forward.config import WebhookForwarderConfig
from gatewatch.forward.fields import alert_fields, neutral
from ingest.alerts import AlertEvent, AlertState
from ingest.ecs import iso

OCSF_VERSION = "1.3.0"
# OCSF severity_id: 1 informational, 2 low, 3 medium, 4 high, 5 critical.
OCSF_SEVERITY: dict[str, int] = {Severity.LOW: 2, Severity.MEDIUM: 3, Severity.HIGH: 4, Severity.CRITICAL: 5}
# Detection Finding activity_id (create, update, close) and status_id (new, in progress, resolved).
OCSF_ACTIVITY = {AlertState.OPEN: (1, "Create"), AlertState.UPDATED: (2, "Update"), AlertState.RESOLVED: (3, "Close")}
OCSF_STATUS = {
    AlertState.OPEN: (1, "New"),
    AlertState.UPDATED: (2, "In Progress"),
    AlertState.RESOLVED: (4, "Resolved"),
}
# ECS event.severity is a number; these follow the risk-score bands of Elastic Security.
ECS_SEVERITY: dict[str, int] = {Severity.LOW: 21, Severity.MEDIUM: 47, Severity.HIGH: 73, Severity.CRITICAL: 99}
DETECTION_FINDING_CLASS_UID = 2004


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """The ``X-Gatewatch-Signature`` value for ``body`` sent at ``timestamp``."""
    return "sha256=" + hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def ecs_document(event: AlertEvent) -> dict[str, object]:
    """The event in Elastic Common Schema terms, with the full alert under ``gatewatch.alert``."""
    alert = event.alert
    fields = alert_fields(alert)
    doc: dict[str, object] = {
        "@timestamp": iso(event.at),
        "message": alert.summary,
        "event": {
            "kind": "alert",
            "category": ["intrusion_detection"],
            "type": ["info"] if event.state is not AlertState.RESOLVED else ["end"],
            "action": f"alert-{event.state}",
            "id": event.id,
            "sequence": event.sequence,
            "severity": ECS_SEVERITY[alert.severity],
            "start": iso(alert.first_seen),
            "end": iso(alert.last_seen),
            "reason": alert.reason or alert.summary,
            "provider": "gatewatch",
        },
        "rule": {"id": alert.rule, "name": alert.rule, "description": alert.summary},
        "gatewatch": {
            "alert": alert.to_document(),
            "lifecycle": {"state": str(event.state), "sequence": event.sequence},
        },
    }
    if fields.source_ip is not None:
        doc["source"] = {"ip": fields.source_ip}
    if fields.user is not None:
        doc["user"] = {"name": fields.user}
    http: dict[str, object] = {}
    if fields.http_method is not None:
        http["request"] = {"method": fields.http_method}
    if fields.http_status is not None:
        http["response"] = {"status_code": fields.http_status}
    if http:
        doc["http"] = http
    if fields.url_path is not None:
        doc["url"] = {"path": fields.url_path}
    if fields.user_agent is not None:
        doc["user_agent"] = {"original": fields.user_agent}
    return doc


def ocsf_finding(event: AlertEvent) -> dict[str, object]:
    """The event as an OCSF Detection Finding (class_uid 2004)."""
    alert = event.alert
    fields = alert_fields(alert)
    activity_id, activity_name = OCSF_ACTIVITY[event.state]
    status_id, status_name = OCSF_STATUS[event.state]
    evidence: dict[str, object] = {}
    if fields.source_ip is not None:
        evidence["src_endpoint"] = {"ip": fields.source_ip}
    if fields.user is not None:
        evidence["actor"] = {"user": {"name": fields.user}}
    request: dict[str, object] = {}
    if fields.http_method is not None:
        request["http_method"] = fields.http_method
    if fields.url_path is not None:
        request["url"] = {"path": fields.url_path}
    if fields.user_agent is not None:
        request["user_agent"] = fields.user_agent
    if request:
        evidence["http_request"] = request
    if fields.http_status is not None:
        evidence["http_response"] = {"code": fields.http_status}
    finding: dict[str, object] = {
        "class_uid": DETECTION_FINDING_CLASS_UID,
        "class_name": "Detection Finding",
        "category_uid": 2,
        "category_name": "Findings",
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": DETECTION_FINDING_CLASS_UID * 100 + activity_id,
        "severity_id": OCSF_SEVERITY[alert.severity],
        "severity": str(alert.severity).capitalize(),
        "status_id": status_id,
        "status": status_name,
        "time": round(event.at * 1000),
        "count": alert.count,
        "message": alert.summary,
        "metadata": {
            "version": OCSF_VERSION,
            "uid": event.id,
            "sequence": event.sequence,
            "product": {"name": "gatewatch", "vendor_name": "gatewatch", "version": PRODUCT_VERSION},
        },
        "finding_info": {
            "uid": alert.id,
            "title": alert.summary,
            "desc": alert.reason or alert.summary,
            "analytic": {"uid": alert.rule, "name": alert.rule, "type_id": 1, "type": "Rule"},
            "first_seen_time": round(alert.first_seen * 1000),
            "last_seen_time": round(alert.last_seen * 1000),
            "related_events": [{"uid": request_id} for request_id in alert.request_ids],
        },
        "resources": [{"type": alert.entity_type, "name": alert.entity_value}],
        "unmapped": {"gatewatch": {"alert": alert.to_document()}},
    }
    if evidence:
        finding["evidences"] = [evidence]
    return finding


class WebhookForwarder:
    """POSTs one signed JSON document per event."""

    def __init__(self, config: WebhookForwarderConfig) -> None:
        secret = os.environ.get(config.secret_env)
        if not secret:
            raise ConfigError(f"forward.{config.name}.secret_env: environment variable {config.secret_env} is not set")
        self.config = config
        self._secret = secret.encode()
        self._context: ssl.SSLContext | None = None
        if config.url.startswith("https:"):
            tls = config.tls
            self._context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
            if tls.cert_file is not None:
                self._context.load_cert_chain(str(tls.cert_file), str(tls.key_file) if tls.key_file else None)
            if not tls.verify:
                self._context.check_hostname = False
                self._context.verify_mode = ssl.CERT_NONE
        # No redirect is followed: urllib would turn the POST into a GET without its body (the alert
        # lost, yet counted as sent) and take the Authorization header to whatever host it names.
        self._opener = urllib.request.build_opener(urllib.request.HTTPSHandler(context=self._context), _NoRedirect())

    def body(self, event: AlertEvent) -> bytes:
        document = ocsf_finding(event) if self.config.format == "ocsf" else ecs_document(event)
        return orjson.dumps(_neutral_texts(document))

    def send(self, event: AlertEvent) -> None:
        body = self.body(event)
        timestamp = str(int(time.time()))
        request = urllib.request.Request(self.config.url, data=body, method="POST")
        for name, value in self.config.headers.items():
            request.add_header(name, value)
        request.add_header("Content-Type", "application/json")
        request.add_header("X-Gatewatch-Timestamp", timestamp)
        request.add_header("X-Gatewatch-Signature", signature(self._secret, timestamp, body))
        request.add_header("X-Gatewatch-Event-Id", event.id)
        try:
            with self._opener.open(request, timeout=self.config.timeout_secs) as response:
                response.read()
        except urllib.error.HTTPError as error:
            status = error.code
            retry_after = _retry_after_secs(error.headers.get("Retry-After"))
            location = error.headers.get("Location")
            error.close()
            retryable = status == 429 or status >= 500
            moved = ""
            if location:  # shown as the forward url is, without credentials or a query
                moved = f" (a redirect to {printable_url(location)[:200]!r}, not followed: set forward url to it)"
            raise DeliveryError(f"webhook answered {status}{moved}", retryable, retry_after) from None
        except (urllib.error.URLError, OSError) as error:
            # The URL as logged and dead-lettered: its query may hold a token.
            raise DeliveryError(f"webhook {printable_url(self.config.url)}: {error}") from None

    def close(self) -> None:
        return None


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A 3xx answer is an error like any other 4xx: final, to the dead-letter file."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _neutral_texts(value: object) -> object:
    """``value`` with every string in it made :func:`neutral`: JSON would carry an ESC or a LF as an
    escape, and the receiver would hand the character itself to whatever shows or parses the value."""
    if isinstance(value, str):
        return neutral(value)
    if isinstance(value, dict):
        return {key: _neutral_texts(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_neutral_texts(item) for item in value]
    return value


def _retry_after_secs(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
