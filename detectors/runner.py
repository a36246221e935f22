"""Run every enabled detector over the arriving and the ordered stream, and fold findings into alerts."""

from __future__ import annotations

import functools
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import itemgetter
from typing import Any

from detectors import registry
from detectors.alerts import Alert, AlertBook
from detectors.base import Detector, DetectorConfig, DetectorContext, Finding
from detectors.lifecycle import AlertLifecycle
from ingest.records import Dataset, Event, Transaction

log = logging.getLogger(__name__)


class DetectorSet:
    """All enabled detectors (or those ``select`` picks) and the alert book they feed.

    A detector that raises skips only that record: the error is counted in
    ``errors`` and logged at most once a minute per rule, and the others go on.
    Every method returns the alerts that were opened or grew.

    Partitioned detection (:mod:`gatewatch.tasks`) runs a share of the rules
    per task: ``sink`` then receives each finding instead of the alert book
    (the methods return no alerts), ``gathering`` leaves out gathering rules'
    ``advance`` (the task calls :meth:`gather` instead), and the ``*_masked``
    hooks offer an item only to the rules its mask names (see
    :func:`rule_mask`).
    """

    def __init__(
        self,
        configs: Mapping[str, DetectorConfig],
        context: DetectorContext,
        alert_book: AlertBook | None,
        lifecycle: AlertLifecycle | None = None,
        *,
        select: Callable[[type[Detector]], bool] | None = None,
        sink: Callable[[Finding], None] | None = None,
        gathering: bool = False,
    ) -> None:
        self._gathering = gathering
        self.detectors = [
            cls(configs[rule_id], context)
            for rule_id, cls in registry().items()
            if configs[rule_id].enabled and (select is None or select(cls))
        ]
        self.alert_book = alert_book
        self.lifecycle = lifecycle  # also sees each finding, with the alert id the book gave it
        self.sink = sink
        self.errors: Counter[str] = Counter()
        self._last_logged: dict[str, float] = {}

    @property
    def detectors(self) -> list[Detector]:
        return self._detectors

    @detectors.setter
    def detectors(self, detectors: list[Detector]) -> None:
        # Built once: each hook's bound methods, per dataset for the record hooks. A detector is
        # offered only the records it can use (the hooks it wants, the datasets it declares): most
        # records interest two or three of the eight rules, and a call is a measurable share of a
        # record's budget.
        self._detectors = detectors
        self._arrival = {ds: _hooks(detectors, "observe_arrival", ds) for ds in Dataset}
        self._event = {ds: _hooks(detectors, "observe_event", ds) for ds in Dataset}
        self._transaction = _hooks(detectors, "observe_transaction")
        # The same hooks for the batch methods: each rule once, with the datasets it reads.
        self._arrival_batch = _batch_hooks(detectors, "observe_arrival")
        self._event_batch = _batch_hooks(detectors, "observe_event")
        self._transaction_batch = _batch_hooks(detectors, "observe_transaction")
        advancing = [d for d in detectors if not (self._gathering and d.Row is not None)]
        self._advancing = _hooks(advancing, "advance")
        self._gatherers = [d for d in detectors if d.Row is not None]
        self._event_bits = {ds: [(rule_mask(r), r, h) for r, h in self._event[ds]] for ds in Dataset}
        self._transaction_bits = [(rule_mask(r), r, h) for r, h in self._transaction]
        self._event_batch_bits = [(rule_mask(r), r, h, ds) for r, h, ds in self._event_batch]
        self._transaction_batch_bits = [(rule_mask(r), r, h, ds) for r, h, ds in self._transaction_batch]

    # A dataset no rule reads (the app's lines, for observe_event) costs no call to _run.

    def observe_arrival(self, event: Event) -> list[Alert]:
        hooks = self._arrival[event.dataset]
        return self._run(hooks, event) if hooks else []

    def observe_event(self, event: Event) -> list[Alert]:
        hooks = self._event[event.dataset]
        return self._run(hooks, event) if hooks else []

    def observe_transaction(self, txn: Transaction) -> list[Alert]:
        return self._run(self._transaction, txn)

    # The batch methods: the same calls as the record hooks above, item by item in the order given, but
    # the loop over a batch runs inside each rule's turn (a rule's calls one after the other, then the next
    # rule's) instead of one trip through the runner per item. Rules keep no state in common, so each rule
    # still sees exactly the same sequence; the findings are folded into the book in the order the
    # record hooks would have folded them (by item, then by rule).

    def observe_arrivals(self, events: Sequence[Event]) -> list[Alert]:
        """``observe_arrival`` for each of ``events``, in order."""
        return self._run_batch(self._arrival_batch, events) if self._arrival_batch else []

    def observe_events(self, events: Sequence[Event]) -> list[Alert]:
        """``observe_event`` for each of ``events`` (in event-time order), in order."""
        return self._run_batch(self._event_batch, events) if self._event_batch else []

    def observe_transactions(self, txns: Sequence[Transaction]) -> list[Alert]:
        """``observe_transaction`` for each of ``txns``, in order."""
        return self._run_batch(self._transaction_batch, txns) if self._transaction_batch else []

    def advance(self, watermark: float) -> list[Alert]:
        alerts = self._run(self._advancing, watermark)
        if self.alert_book is not None:
            self.alert_book.expire(watermark)
        return alerts

    def observe_event_masked(self, event: Event, mask: int) -> None:
        """``observe_event`` for the rules in ``mask`` only (findings go to the sink)."""
        self._run_masked(self._event_bits[event.dataset], mask, event)

    def observe_transaction_masked(self, txn: Transaction, mask: int) -> None:
        """``observe_transaction`` for the rules in ``mask`` only (findings go to the sink)."""
        self._run_masked(self._transaction_bits, mask, txn)

    def observe_events_masked(self, events: Sequence[Event], masks: Sequence[int]) -> None:
        """``observe_event_masked`` for each of ``events`` with its mask, in order, run as the batch methods run."""
        self._run_masked_batch(self._event_batch_bits, events, masks)

    def observe_transactions_masked(self, txns: Sequence[Transaction], masks: Sequence[int]) -> None:
        """``observe_transaction_masked`` for each of ``txns`` with its mask, in order, run as the batch methods run."""
        self._run_masked_batch(self._transaction_batch_bits, txns, masks)

    def gather(self, watermark: float) -> dict[str, list[Any]]:
        """Each gathering rule's rows of the windows ``watermark`` closed (rules with none left out)."""
        gathered: dict[str, list[Any]] = {}
        for detector in self._gatherers:
            try:
                rows = detector.gather(watermark)
            except Exception:
                self._record_error(detector.rule_id)
                continue
            if rows:
                gathered[detector.rule_id] = rows
        return gathered

    def judge(self, watermark: float, gathered: Mapping[str, list[Any]]) -> list[Alert]:
        """Each gathering rule's model over the rows gathered from every partition."""
        alerts: list[Alert] = []
        for detector in self._gatherers:
            rows = gathered.get(detector.rule_id)
            if rows:
                alerts += self._run([(detector.rule_id, functools.partial(_judge, detector, rows))], watermark)
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

    def _run_batch(self, hooks: list[_BatchHook], items: Sequence[Any]) -> list[Alert]:
        found: list[_Found] = []  # (item's place in what the rule was offered, rank, findings)
        subsets: dict[frozenset[Dataset], list[Any]] = {}  # the items of the datasets some rules read
        for rank, (rule_id, hook, datasets) in enumerate(hooks):
            if datasets is None:
                offered = items
            elif datasets in subsets:
                offered = subsets[datasets]
            else:
                offered = subsets[datasets] = [item for item in items if item.dataset in datasets]
            self._offer(rank, rule_id, hook, enumerate(offered), found)
        if not found:  # nearly every batch
            return []
        # Findings are rare: only now is a place in a subset turned into the item's place in the batch.
        places = {datasets: [at for at, item in enumerate(items) if item.dataset in datasets] for datasets in subsets}
        for i, (at, rank, findings) in enumerate(found):
            datasets = hooks[rank][2]
            if datasets is not None:
                found[i] = (places[datasets][at], rank, findings)
        alerts: list[Alert] = []
        self._fold_in_order(found, [rule_id for rule_id, _, _ in hooks], alerts)
        return alerts

    def _run_masked(
        self, hooks: list[tuple[int, str, Callable[[Any], Iterable[Finding]]]], mask: int, argument: object
    ) -> None:
        # A masked run's findings go to the sink: the alerts _run returns stay empty.
        self._run([(rule_id, hook) for bit, rule_id, hook in hooks if mask & bit], argument)

    def _run_masked_batch(self, hooks: list[_MaskedBatchHook], items: Sequence[Any], masks: Sequence[int]) -> None:
        # _run_batch's order with a mask an item: each rule offered the items its bit is set in (and whose
        # dataset it reads, as observe_event_masked checks), its findings folded by item, then by rule.
        found: list[_Found] = []
        for rank, (bit, rule_id, hook, datasets) in enumerate(hooks):
            offered = [(at, items[at]) for at, mask in enumerate(masks)
                       if mask & bit and (datasets is None or items[at].dataset in datasets)]  # fmt: skip
            self._offer(rank, rule_id, hook, offered, found)
        self._fold_in_order(found, [rule_id for _, rule_id, _, _ in hooks], [])

    def _offer(
        self, rank: int, rule_id: str, hook: Callable[[Any], Iterable[Finding]], offered: Iterable[tuple[int, Any]],
        found: list[_Found],
    ) -> None:
        """One rule's turn in a batch: ``hook`` on each ``(place, item)``; findings kept with place and rank."""
        for at, item in offered:
            try:
                findings = hook(item)
                if findings:
                    found.append((at, rank, list(findings)))
            except Exception:
                self._record_error(rule_id)

    def _fold_in_order(self, found: list[_Found], rule_ids: Sequence[str], alerts: list[Alert]) -> None:
        """Fold a batch's findings by their item's place, then by rule, as the record hooks would have."""
        found.sort(key=_PLACE_AND_RANK)
        for _, rank, findings in found:
            try:
                self._fold(findings, alerts)
            except Exception:
                self._record_error(rule_ids[rank])

    def _fold(self, findings: Iterable[Finding], alerts: list[Alert]) -> None:
        if self.sink is not None:
            for finding in findings:
                self.sink(finding)
            return
        assert self.alert_book is not None
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
        if d.wants(hook) and (dataset is None or dataset in d.datasets)
    ]


_BatchHook = tuple[str, Callable[[Any], Iterable[Finding]], "frozenset[Dataset] | None"]
_MaskedBatchHook = tuple[int, str, Callable[[Any], Iterable[Finding]], "frozenset[Dataset] | None"]
_Found = tuple[int, int, list[Finding]]  # an item's place (in the batch, or what the rule was offered), rank, findings
_PLACE_AND_RANK = itemgetter(0, 1)


def _batch_hooks(detectors: list[Detector], hook: str) -> list[_BatchHook]:
    # None: the rule reads every dataset (and a transaction has none), so it is offered the whole batch.
    every = frozenset(Dataset)
    return [
        (d.rule_id, getattr(d, hook), None if hook == "observe_transaction" or every <= d.datasets else d.datasets)
        for d in detectors
        if d.wants(hook)
    ]


def rule_mask(rule_id: str) -> int:
    """The rule's bit in an item's mask: its index in :func:`detectors.registry` (alphabetical, stable)."""
    return 1 << list(registry()).index(rule_id)


def _judge(detector: Detector, rows: list[Any], watermark: float) -> Iterable[Finding]:
    return detector.judge(watermark, rows)
