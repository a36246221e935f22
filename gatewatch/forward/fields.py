"""What every forwarder format says about an alert: the fields SIEMs index, and text made safe to emit.

Values come from logs an attacker writes (User-Agent, path, request id), so
every encoder runs them through :func:`neutral` before its own escaping:
control characters become their visible Unicode "control pictures" (ESC ->
U+241B), C1 controls, bidirectional overrides and line/paragraph separators
become U+FFFD. Nothing a receiver or a terminal would interpret survives, and
no escaping scheme has to carry them. (CEF keeps CR and LF as ``\\r``/``\\n``
in extension values, as its specification asks.)
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from ingest.alerts import Alert, AlertEvent

_NEUTRAL = {c: 0x2400 + c for c in range(0x20)} | {0x7F: 0x2421}
_NEUTRAL |= {c: 0xFFFD for c in range(0x80, 0xA0)}
_NEUTRAL |= {c: 0xFFFD for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x2028, 0x2029, 0x200E, 0x200F)}
_NEUTRAL_KEEP_CRLF = {c: r for c, r in _NEUTRAL.items() if c not in (0x0A, 0x0D)}


def neutral(text: str, keep_crlf: bool = False) -> str:
    """``text`` with controls and direction overrides replaced by visible, inert characters."""
    return text.translate(_NEUTRAL_KEEP_CRLF if keep_crlf else _NEUTRAL)


@dataclass(frozen=True, slots=True)
class AlertFields:
    """The alert's facts in the vocabulary every SIEM mapping needs (``None``: not known for this rule)."""

    source_ip: str | None
    user: str | None
    http_method: str | None
    url_path: str | None
    user_agent: str | None
    http_status: int | None


def alert_fields(alert: Alert) -> AlertFields:
    """The client address, user, method, path, user agent and status of an alert, from its entity and details."""
    details = alert.details
    source_ip = alert.entity_value if alert.entity_type == "source.ip" else None
    source_ip = source_ip or _text(details.get("peer_ip")) or _text(details.get("new_address"))
    if source_ip is not None and not _is_ip(source_ip):
        source_ip = None
    user = alert.entity_value if alert.entity_type in ("token.sub", "user.id", "user.name") else None
    user = user or _text(details.get("token_sub")) or _text(details.get("user_id"))
    status = details.get("status")
    return AlertFields(
        source_ip=source_ip,
        user=user,
        http_method=_text(details.get("method")),
        url_path=_text(details.get("path")),
        user_agent=_text(details.get("user_agent")),
        http_status=status if isinstance(status, int) and not isinstance(status, bool) else None,
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


SHORT_TEXT_CHARS = 1023
"""A cut text's length, ``…`` included: CEF's limit for ``msg`` and ``request``."""
SHORT_REQUEST_IDS = 10


def shortened(event: AlertEvent, text_chars: int = SHORT_TEXT_CHARS, request_ids: int = SHORT_REQUEST_IDS) -> AlertEvent:
    """``event`` with each text cut to ``text_chars`` (``…`` included) and its first ``request_ids``
    request ids: for a receiver with a size limit, where the alert as it is would not go at all or
    be cut by the receiver. Values come from logs: a 34 KB path would otherwise keep the alert from
    the SIEM, or let its tail arrive as a message of its own."""
    alert = event.alert

    def cut(text: str) -> str:
        return text if len(text) <= text_chars else text[: text_chars - 1] + "…"

    cut_details = {key: cut(value) if isinstance(value, str) else value for key, value in alert.details.items()}
    short = replace(
        alert, entity_value=cut(alert.entity_value), summary=cut(alert.summary),
        reason=None if alert.reason is None else cut(alert.reason),
        request_ids=tuple(cut(request_id) for request_id in alert.request_ids[:request_ids]),
        details=cut_details,
    )  # fmt: skip
    return AlertEvent(short, event.state, event.sequence, event.at, event.epoch)
