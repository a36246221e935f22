"""Run every enabled detector over the arriving and the ordered stream, and fold findings into alerts."""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from detectors import registry
from detectors.alerts import Alert, AlertBook
from detectors.base import Detector, DetectorConfig, DetectorContext, Finding
from detectors.lifecycle import AlertLifecycle
from ingest.records import Dataset, Event, Transaction

log = logging.getLogger(__name__)


class DetectorSet:
    """All enabled detectors and the alert book they feed.

    A detector that raises skips only that record: the error is counted in
    ``errors`` and logged at most once a minute per rule, and the others go on.
    Every method returns the alerts that were opened or grew.
    """

    def __init__(
        self,
        configs: Mapping[str, DetectorConfig],
        context: DetectorContext,
        alert_book: AlertBook,
        lifecycle: AlertLifecycle | None = None,
    ) -> None:
        self.detectors = [
            cls(configs[rule_id], context) for rule_id, cls in registry().items() if configs[rule_id].enabled
        ]
        self.alert_book = alert_book
        self.lifecycle = lifecycle  # also sees each finding, with the alert id the book gave it
        self.errors: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}

    @property
    def detectors(self) -> list[Detector]:
        return self._detectors

    @detectors.setter
    def detectors(self, detectors: list[Detector]) -> None:
        # Built once: each hook's bound methods, per dataset for the record hooks. A detector is
        # offered only the records it can use (the hooks its class overrides, the datasets it
        # declares): most records interest two or three of the nine rules, and a call is a
        # measurable share of a record's budget.
        self._detectors = detectors
        self._arrival = {ds: _hooks(detectors, "observe_arrival", ds) for ds in Dataset}
        self._event = {ds: _hooks(detectors, "observe_event", ds) for ds in Dataset}
        self._transaction = _hooks(detectors, "observe_transaction")
        self._advancing = _hooks(detectors, "advance")

    def observe_arrival(self, event: Event) -> list[Alert]:
        return self._run(self._arrival[event.dataset], event)

    def observe_event(self, event: Event) -> list[Alert]:
        return self._run(self._event[event.dataset], event)

    def observe_transaction(self, txn: Transaction) -> list[Alert]:
        return self._run(self._transaction, txn)

    def advance(self, watermark: float) -> list[Alert]:
        alerts = self._run(self._advancing, watermark)
        self.alert_book.expire(watermark)
        return alerts

    def _run(self, hooks: list[tuple[str, Callable[[Any], Iterable[Finding]]]], argument: object) -> list[Alert]:
        alerts: list[Alert] = []
        for rule_id, hook in hooks:
            try:
                findings = hook(argument)
                if findings:
                    self._fold(findings, alerts)
            except Exception:
                self._record_error(rule_id)
        return alerts

    def _fold(self, findings: Iterable[Finding], alerts: list[Alert]) -> None:
        lifecycle = self.lifecycle
        for finding in findings:
            alert = self.alert_book.add(finding)
            alerts.append(alert)
            if lifecycle is not None:
                lifecycle.add(finding, alert.id)

    def _record_error(self, rule_id: str) -> None:
        self.errors[rule_id] += 1
        now = time.monotonic()
        if now - self._last_logged.get(rule_id, float("-inf")) >= 60.0:
            self._last_logged[rule_id] = now
            log.exception("detector_error rule=%s errors_total=%d", rule_id, self.errors[rule_id])


def _hooks(
    detectors: list[Detector], hook: str, dataset: Dataset | None = None
) -> list[tuple[str, Callable[[Any], Iterable[Finding]]]]:
    return [
        (d.rule_id, getattr(d, hook))
        for d in detectors
        if getattr(type(d), hook) is not getattr(Detector, hook) and (dataset is None or dataset in d.datasets)
    ]
