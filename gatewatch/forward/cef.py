"""CEF (ArcSight Common Event Format, rev. 25) lines for alert events.

``CEF:0|gatewatch|gatewatch|<version>|<rule>|<name>|<severity>|<extension>``

Header fields escape ``\\`` and ``|``; extension values escape ``\\``, ``=``,
CR (``\\r``) and LF (``\\n``), as the specification asks. Before that, every
value is made :func:`~gatewatch.forward.fields.neutral`, so an attacker's
User-Agent or path can neither end a field, add a key, nor start a line.
"""

from __future__ import annotations

import ipaddress
from importlib.metadata import PackageNotFoundError, version

import orjson

from detectors.base import Severity
from gatewatch.forward.fields import alert_fields, neutral
from ingest.alerts import AlertEvent

# CEF severity 0-10: 0-3 low, 4-6 medium, 7-8 high, 9-10 very high.
CEF_SEVERITY: dict[str, int] = {Severity.LOW: 3, Severity.MEDIUM: 5, Severity.HIGH: 8, Severity.CRITICAL: 10}
# The header Name is shown in ArcSight's channel; its documented limit is 512 characters.
MAX_NAME_CHARS = 512
# The specification's longest value of each extension key that carries text from logs (characters).
MAX_VALUE_CHARS = {
    "msg": 1023, "request": 1023, "requestClientApplication": 1023, "suser": 1023, "requestMethod": 1023,
    "cs1": 4000, "cs2": 4000, "cs3": 4000, "cs4": 4000, "cs5": 4000,
}  # fmt: skip

try:
    PRODUCT_VERSION = version("gatewatch")
except PackageNotFoundError:  # pragma: no cover (running from a bare checkout)
    PRODUCT_VERSION = "0"


def escape_header(value: str) -> str:
    return neutral(value).replace("\\", "\\\\").replace("|", "\\|")


def escape_extension(value: str) -> str:
    return (
        neutral(value, keep_crlf=True)
        .replace("\\", "\\\\")
        .replace("=", "\\=")
        .replace("\r", "\\r")
        .replace("\n", "\\n")
    )


def cef_line(event: AlertEvent) -> str:
    """One CEF line (no trailing newline) carrying every field of the alert event."""
    alert = event.alert
    fields = alert_fields(alert)
    extension: list[tuple[str, str]] = [
        ("rt", _ms(event.at)),
        ("start", _ms(alert.first_seen)),
        ("end", _ms(alert.last_seen)),
        ("cnt", str(alert.count)),
        ("act", str(event.state)),
        ("cat", alert.rule),
        ("externalId", alert.id),
        ("msg", alert.summary),
        ("cs1Label", "entityType"),
        ("cs1", alert.entity_type),
        ("cs2Label", "entityValue"),
        ("cs2", alert.entity_value),
        ("cs3Label", "reason"),
        ("cs3", alert.reason or ""),
        ("cs4Label", "requestIds"),
        ("cs4", _request_ids(alert.request_ids, MAX_VALUE_CHARS["cs4"])),
        ("cs5Label", "eventId"),
        ("cs5", event.id),
        ("cn1Label", "sequence"),
        ("cn1", str(event.sequence)),
    ]
    if fields.source_ip is not None:
        if ipaddress.ip_address(fields.source_ip).version == 4:
            extension.append(("src", fields.source_ip))
        else:
            extension += [("c6a2Label", "sourceIPv6Address"), ("c6a2", fields.source_ip)]
    if fields.user is not None:
        extension.append(("suser", fields.user))
    if fields.http_method is not None:
        extension.append(("requestMethod", fields.http_method))
    if fields.url_path is not None:
        extension.append(("request", fields.url_path))
    if fields.user_agent is not None:
        extension.append(("requestClientApplication", fields.user_agent))
    if fields.http_status is not None:
        extension += [("cn2Label", "httpStatus"), ("cn2", str(fields.http_status))]
    header = [
        "CEF:0",
        escape_header("gatewatch"),
        escape_header("gatewatch"),
        escape_header(PRODUCT_VERSION),
        escape_header(alert.rule),
        escape_header(alert.summary[:MAX_NAME_CHARS]),
        str(CEF_SEVERITY[alert.severity]),
    ]
    return "|".join(header) + "|" + " ".join(f"{key}={escape_extension(_fit(key, value))}" for key, value in extension)


def _fit(key: str, value: str) -> str:
    limit = MAX_VALUE_CHARS.get(key)
    return value if limit is None or len(value) <= limit else value[: limit - 1] + "…"


def _request_ids(request_ids: tuple[str, ...], limit: int) -> str:
    """The request ids as a JSON array of at most ``limit`` characters: the first ones that fit, whole."""
    kept = list(request_ids)
    text = orjson.dumps(kept).decode()
    while len(text) > limit and kept:
        kept.pop()
        text = orjson.dumps(kept).decode()
    return text


def _ms(ts: float) -> str:
    return str(round(ts * 1000))
