"""Alerts: findings folded into one alert per (rule, entity) per suppression window.

The first finding for a (rule, entity) opens an alert whose window runs for
``suppression_window_secs`` of event time from its ``first_seen``; findings
inside the window raise ``count`` and ``last_seen`` and add evidence; the first
finding after it opens a new alert. An alert's id is a hash of rule, entity and
``first_seen``, so the same input always yields the same ids and a store that
upserts by id updates a growing alert in place.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

from detectors.base import Finding, Severity
from ingest.ecs import iso

_SEVERITY_ORDER = {s: i for i, s in enumerate(Severity)}


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert, as the SIEM and the alerts index see it (see schemas/alert.schema.json)."""

    id: str
    rule: str
    severity: Severity
    entity_type: str
    entity_value: str
    first_seen: float
    last_seen: float
    count: int
    request_ids: tuple[str, ...]
    summary: str
    reason: str | None = None
    details: dict[str, object] = field(default_factory=dict)

    def to_document(self) -> dict[str, object]:
        doc: dict[str, object] = {
            "id": self.id,
            "@timestamp": iso(self.first_seen),
            "rule": self.rule,
            "severity": str(self.severity),
            "entity": {"type": self.entity_type, "value": self.entity_value},
            "first_seen": iso(self.first_seen),
            "last_seen": iso(self.last_seen),
            "count": self.count,
            "request_ids": list(self.request_ids),
            "summary": self.summary,
        }
        if self.reason is not None:
            doc["reason"] = self.reason
        if self.details:
            doc["details"] = self.details
        return doc


def alert_id(rule: str, entity_type: str, entity_value: str, first_seen: float) -> str:
    key = f"{rule}\x1f{entity_type}\x1f{entity_value}\x1f{first_seen:.6f}".encode()
    return hashlib.blake2b(key, digest_size=12).hexdigest()


class AlertBook:
    """Folds findings into alerts and remembers the open suppression windows.

    ``add`` returns the alert as it now stands (new or grown) so a streaming
    caller can upsert it at once; ``expire(watermark)`` forgets windows that
    ended, keeping memory bounded.
    """

    def __init__(self, suppression_window_secs: float = 600.0, max_request_ids: int = 20) -> None:
        self.suppression_window_secs = suppression_window_secs
        self.max_request_ids = max_request_ids
        self._open: dict[tuple[str, str, str], Alert] = {}

    def add(self, finding: Finding) -> Alert:
        key = (finding.rule, finding.entity_type, finding.entity_value)
        current = self._open.get(key)
        if current is None or finding.ts >= current.first_seen + self.suppression_window_secs:
            alert = Alert(
                id=alert_id(finding.rule, finding.entity_type, finding.entity_value, finding.ts),
                rule=finding.rule,
                severity=finding.severity,
                entity_type=finding.entity_type,
                entity_value=finding.entity_value,
                first_seen=finding.ts,
                last_seen=finding.ts,
                count=1,
                request_ids=tuple(dict.fromkeys(finding.request_ids))[: self.max_request_ids],
                summary=finding.summary,
                reason=finding.reason,
                details=dict(finding.details),
            )
        else:
            evidence = current.request_ids
            if len(evidence) < self.max_request_ids:
                evidence = tuple(dict.fromkeys(evidence + finding.request_ids))[: self.max_request_ids]
            severity = max(current.severity, finding.severity, key=_SEVERITY_ORDER.__getitem__)
            alert = replace(
                current,
                severity=severity,
                last_seen=max(current.last_seen, finding.ts),
                count=current.count + 1,
                request_ids=evidence,
            )
        self._open[key] = alert
        return alert

    def expire(self, watermark: float) -> None:
        """Forget alerts whose suppression window closed before ``watermark``."""
        horizon = watermark - self.suppression_window_secs
        stale = [key for key, alert in self._open.items() if alert.first_seen < horizon]
        for key in stale:
            del self._open[key]

    def __iter__(self) -> Iterator[Alert]:
        return iter(self._open.values())
