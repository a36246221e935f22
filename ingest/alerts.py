"""Alerts as values: what detection hands to stores, files and forwarders.

A leaf module, like :mod:`ingest.records`: the alert book and the lifecycle
(:mod:`detectors.alerts`, :mod:`detectors.lifecycle`) build these, and the
sinks in :mod:`ingest.sinks` store them, without either package importing the
other. ``severity`` is a ``detectors.base.Severity`` at run time, a ``str``
here (a ``StrEnum`` is one): the sinks only write it out.

Both values build their JSON document once and keep it: serve hands the same
alert to the store, the Kafka alerts topic and every forwarder, and each would
otherwise build it again. The document is shared, so a consumer that wants to
change it copies it first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from ingest.ecs import epoch, iso

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert, as the SIEM and the alerts index see it (see schemas/alert.schema.json)."""

    id: str
    rule: str
    severity: str
    entity_type: str
    entity_value: str
    first_seen: float
    last_seen: float
    count: int
    request_ids: tuple[str, ...]
    summary: str
    reason: str | None = None
    details: dict[str, object] = field(default_factory=dict)
    _document: dict[str, object] | None = field(default=None, init=False, repr=False, compare=False)

    def to_document(self) -> dict[str, object]:
        """The alert's JSON document (the alerts index, the NDJSON file): built on the first call, then shared."""
        if self._document is not None:
            return self._document
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
        object.__setattr__(self, "_document", doc)  # frozen: the cache is the one field set after init
        return doc


class AlertState(StrEnum):
    OPEN = "open"
    UPDATED = "updated"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One transition of an alert: what a SIEM receives.

    ``sequence`` counts the alert's transitions from 1; ``at`` is the event time
    at which the transition was decided; ``alert`` is the alert as folded then.
    ``epoch`` names a lifecycle that started afresh part way through the input
    (see :class:`~detectors.lifecycle.AlertLifecycle`); it is part of the id, so
    a new count from 1 never reuses an id a receiver already holds.
    """

    alert: Alert
    state: AlertState
    sequence: int
    at: float
    epoch: str = ""
    _document: dict[str, object] | None = field(default=None, init=False, repr=False, compare=False)

    @property
    def id(self) -> str:
        if self.epoch:
            return f"{self.alert.id}.{self.epoch}-{self.sequence}"
        return f"{self.alert.id}-{self.sequence}"

    def to_document(self) -> dict[str, object]:
        """The alert document plus a ``lifecycle`` object (see schemas/alert.schema.json): built once, then shared."""
        if self._document is not None:
            return self._document
        doc = {
            **self.alert.to_document(),
            "lifecycle": {
                "event_id": self.id,
                "state": str(self.state),
                "sequence": self.sequence,
                "at": iso(self.at),
            },
        }
        object.__setattr__(self, "_document", doc)
        return doc

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> AlertEvent:
        """The event :meth:`to_document` wrote ``doc`` from (a forwarder's dead letter, the alerts topic).

        ValueError, saying which field, for a document this version would not have written: its
        event rebuilt must give ``doc`` back exactly, or a receiver would get other content under
        the same event id.
        """
        try:
            lifecycle, entity = _typed(doc, "lifecycle", dict), _typed(doc, "entity", dict)
            request_ids = _typed(doc, "request_ids", list)
            if not all(isinstance(request_id, str) for request_id in request_ids):
                raise ValueError("field 'request_ids' should hold text only")
            reason = doc.get("reason")
            alert = Alert(
                id=_typed(doc, "id", str), rule=_typed(doc, "rule", str), severity=_typed(doc, "severity", str),
                entity_type=_typed(entity, "type", str), entity_value=_typed(entity, "value", str),
                first_seen=epoch(_typed(doc, "first_seen", str)), last_seen=epoch(_typed(doc, "last_seen", str)),
                count=_typed(doc, "count", int), request_ids=tuple(request_ids), summary=_typed(doc, "summary", str),
                reason=None if reason is None else _typed(doc, "reason", str),
                details=_typed(doc, "details", dict) if "details" in doc else {},
            )  # fmt: skip
            sequence = _typed(lifecycle, "sequence", int)
            event = cls(alert, AlertState(_typed(lifecycle, "state", str)), sequence,
                        epoch(_typed(lifecycle, "at", str)),
                        _epoch_of(_typed(lifecycle, "event_id", str), alert.id, sequence))  # fmt: skip
        except KeyError as error:
            raise ValueError(f"no {error.args[0]!r} field") from None
        rebuilt = event.to_document()
        for key in sorted(rebuilt.keys() | doc.keys()):
            if rebuilt.get(key) != doc.get(key):
                raise ValueError(f"field {key!r} is not as gatewatch writes it")
        return event


def _typed(doc: dict[str, Any], key: str, kind: type[_T]) -> _T:
    value = doc[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ValueError(f"field {key!r} should be {kind.__name__}, not {type(value).__name__}")
    return value


def _epoch_of(event_id: str, alert_id: str, sequence: int) -> str:
    """The ``epoch`` part of an event id ``<alert id>[.<epoch>]-<sequence>``."""
    if not event_id.startswith(alert_id) or not event_id.endswith(f"-{sequence}"):
        raise ValueError(f"lifecycle.event_id {event_id!r} is not <alert id>-<sequence>")
    middle = event_id[len(alert_id) : len(event_id) - len(f"-{sequence}")]
    if middle and not middle.startswith("."):
        raise ValueError(f"lifecycle.event_id {event_id!r} is not <alert id>-<sequence>")
    return middle[1:]
