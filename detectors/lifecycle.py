"""Alert lifecycle: each alert goes ``open`` -> ``updated`` ... -> ``resolved``, as ordered events.

The alert book answers "what is this alert now" as findings arrive, and some
findings arrive before the reorder buffer (``observe_arrival``), in any order.
Its intermediate versions therefore depend on arrival order; only its final
fold does not. A SIEM receiving transitions needs more: the same events, with
the same contents and sequence numbers, in any record order and after a
restart. So this stage keeps its own fold of each alert's findings, and lets a
finding in only once event time has passed it:

- ``add(finding, alert_id)`` parks the finding until the tick passes its time;
- ``advance(tick)`` (called once per whole event-time second, after the
  detectors advanced to it) folds every parked finding older than ``tick``.
  By then every non-late record older than ``tick`` has been released, so the
  fold at ``tick`` is the same however the records arrived. Then, per alert:

  - the first settled finding emits ``open`` (sequence 1);
  - growth (``count`` or ``last_seen``) emits ``updated``, at most once per
    ``update_interval_secs`` of event time; growth inside the interval is sent
    when it ends, even if nothing else comes;
  - no finding for ``resolve_after_secs`` (per rule) after ``last_seen``
    emits ``resolved``; a finding for a resolved alert (its suppression window
    still open) emits ``open`` again, with the next sequence number.

- ``finish(tick)`` (end of input) lets event time run on, as a live run whose
  inputs fell quiet does: pending growth goes out when its interval ends and
  every alert is resolved, each at the tick it would have had live.

Events of one tick come out sorted (opens and updates by alert id, then
resolutions by due time and id). An event's id is ``<alert id>-<sequence>``,
so a receiver orders by sequence and drops repeats (a restart re-sends what
followed its checkpoint). A lifecycle that starts empty part way through its
input (serve's ALERT task after ``state_fresh``: a detection setting changed, a
checkpoint did not decode) counts from 1 again, and the alerts it had sent may
continue: it is given an ``epoch`` (where it started), and its ids are
``<alert id>.<epoch>-<sequence>``, so they never repeat an id sent before with
other contents.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Mapping
from typing import Any

from detectors.alerts import _Window
from detectors.base import Finding, Severity
from ingest.alerts import Alert, AlertEvent as AlertEvent, AlertState as AlertState  # values live in the leaf
from ingest.errors import WireError

# Per-rule quiet time before an alert resolves, in event time. Bursts are judged over
# one or two minutes, so five quiet minutes mean the burst is over; the outlier model
# judges 5-minute windows, so three clean windows. Token and bypass findings come one
# request at a time: ten quiet minutes, the default suppression window.
DEFAULT_RESOLVE_AFTER_SECS: Mapping[str, float] = {
    "http_5xx_burst": 300.0,
    "http_4xx_burst": 300.0,
    "behaviour_outlier": 900.0,
}
FALLBACK_RESOLVE_AFTER_SECS = 600.0
STATE_VERSION = 1


class _Tracked:
    """One alert's settled fold and what was last sent about it."""

    __slots__ = ("window", "sequence", "resolved", "sent_at", "sent_count", "sent_last_seen")

    def __init__(self, window: _Window) -> None:
        self.window = window
        self.sequence = 0
        self.resolved = False
        self.sent_at = float("-inf")
        self.sent_count = 0
        self.sent_last_seen = float("-inf")


class AlertLifecycle:
    """Turns findings (with the alert id the book gave them) and event-time ticks into :class:`AlertEvent`.

    ``forget_after_secs`` is how long a resolved alert's sequence number is kept
    (the alert book may still route findings to its id until its window has
    expired there: one suppression window plus the book's grace period).
    """

    def __init__(
        self,
        update_interval_secs: float = 60.0,
        resolve_after_secs: Mapping[str, float] | None = None,
        forget_after_secs: float = 1200.0,
        max_request_ids: int = 20,
    ) -> None:
        self.update_interval_secs = update_interval_secs
        self.resolve_after_secs = {**DEFAULT_RESOLVE_AFTER_SECS, **(resolve_after_secs or {})}
        self.forget_after_secs = forget_after_secs
        self.max_request_ids = max_request_ids
        self.epoch = ""  # set by a lifecycle that started empty part way through its input
        self._parked: list[tuple[float, int, Finding, str]] = []  # heap by finding time
        self._parked_n = 0  # tie-breaker only: the fold is order-free
        self._alerts: dict[str, _Tracked] = {}
        self._dirty: set[str] = set()
        self._due: list[tuple[float, str]] = []  # (resolve time, id); stale entries skipped
        self._resolved: deque[tuple[float, str]] = deque()  # (resolved at, id), oldest first

    def add(self, finding: Finding, alert_id: str) -> None:
        """Park ``finding`` (which the alert book folded into ``alert_id``) until event time passes it."""
        self._parked_n += 1
        heapq.heappush(self._parked, (finding.ts, self._parked_n, finding, alert_id))

    def advance(self, tick: float) -> list[AlertEvent]:
        """Fold findings older than ``tick`` and emit the transitions due at ``tick``."""
        self._settle(tick)
        events = self._emit_growth(tick, throttle=True)
        events.extend(self._resolve(tick))
        self._forget(tick)
        return events

    def finish(self, tick: float) -> list[AlertEvent]:
        """End of input: let event time run on from ``tick`` until every alert is resolved.

        That is what a live run does once its inputs fall quiet (serve advances
        quiet inputs with the wall clock): each parked finding, pending update and
        resolution happens at the whole-second tick it would have had there, so a
        replay's last events equal those of a live run that went idle.
        """
        events: list[AlertEvent] = []
        while True:
            due: list[float] = []
            if self._parked:
                due.append(math.floor(self._parked[0][0]) + 1)
            for alert_id in self._dirty:
                tracked = self._alerts[alert_id]
                throttled = not tracked.resolved and tracked.sequence > 0
                due.append(math.ceil(tracked.sent_at + self.update_interval_secs) if throttled else tick + 1)
            if self._due:
                due.append(math.ceil(self._due[0][0]))
            if not due:
                return events
            tick = max(tick + 1, min(due))
            events.extend(self.advance(tick))

    def alerts(self) -> list[Alert]:
        """Every alert still tracked, as settled so far (resolved ones included)."""
        return [tracked.window.alert() for tracked in self._alerts.values()]

    # -- internals ------------------------------------------------------------

    def _settle(self, tick: float) -> None:
        parked = self._parked
        while parked and parked[0][0] < tick:
            _, _, finding, alert_id = heapq.heappop(parked)
            tracked = self._alerts.get(alert_id)
            if tracked is None:
                tracked = self._alerts[alert_id] = _Tracked(_Window(alert_id, finding))
            tracked.window.add(finding, self.max_request_ids)
            self._dirty.add(alert_id)

    def _emit_growth(self, tick: float, throttle: bool) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        for alert_id in sorted(self._dirty):
            tracked = self._alerts[alert_id]
            if tracked.resolved or tracked.sequence == 0:
                state = AlertState.OPEN
                tracked.resolved = False
            elif throttle and tick < tracked.sent_at + self.update_interval_secs:
                continue  # stays dirty: sent once the interval has passed
            else:
                state = AlertState.UPDATED
            self._dirty.discard(alert_id)
            alert = tracked.window.alert()
            if state is AlertState.UPDATED and (alert.count, alert.last_seen) == (
                tracked.sent_count,
                tracked.sent_last_seen,
            ):
                continue  # a repeat of a request already counted: nothing a SIEM would see
            events.append(self._transition(tracked, alert, state, tick))
            heapq.heappush(self._due, (alert.last_seen + self._quiet_secs(alert.rule), alert_id))
        return events

    def _resolve(self, tick: float) -> list[AlertEvent]:
        events: list[AlertEvent] = []
        due = self._due
        while due and due[0][0] <= tick:
            due_at, alert_id = heapq.heappop(due)
            tracked = self._alerts.get(alert_id)
            if tracked is None or tracked.resolved:
                continue
            alert = tracked.window.alert()
            if alert.last_seen + self._quiet_secs(alert.rule) != due_at:
                continue  # grew since: a later entry stands for it
            self._dirty.discard(alert_id)  # the resolution carries the latest fold
            tracked.resolved = True
            events.append(self._transition(tracked, alert, AlertState.RESOLVED, tick))
            self._resolved.append((tick, alert_id))
        return events

    def _forget(self, tick: float) -> None:
        resolved = self._resolved
        while resolved and resolved[0][0] + self.forget_after_secs <= tick:
            _, alert_id = resolved.popleft()
            tracked = self._alerts.get(alert_id)
            if tracked is not None and tracked.resolved:
                del self._alerts[alert_id]

    def _transition(self, tracked: _Tracked, alert: Alert, state: AlertState, tick: float) -> AlertEvent:
        tracked.sequence += 1
        tracked.sent_at = tick
        tracked.sent_count, tracked.sent_last_seen = alert.count, alert.last_seen
        return AlertEvent(alert=alert, state=state, sequence=tracked.sequence, at=tick, epoch=self.epoch)

    def _quiet_secs(self, rule: str) -> float:
        return self.resolve_after_secs.get(rule, FALLBACK_RESOLVE_AFTER_SECS)

    # -- state as plain data ----------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """Everything event-time dependent, as msgpack/JSON-able data (settings excluded)."""
        return {
            "version": STATE_VERSION,
            "epoch": self.epoch,
            "parked": [[_finding_to_state(f), alert_id] for _, _, f, alert_id in sorted(self._parked)],
            "alerts": {alert_id: _tracked_to_state(t) for alert_id, t in self._alerts.items()},
            "dirty": sorted(self._dirty),
            "due": [[due_at, alert_id] for due_at, alert_id in sorted(self._due)],
            "resolved": [[at, alert_id] for at, alert_id in self._resolved],
        }

    @classmethod
    def from_state(cls, state: Mapping[str, Any], **settings: Any) -> AlertLifecycle:
        """A lifecycle with this process's ``settings`` continuing from :meth:`to_state`'s output."""
        if state.get("version") != STATE_VERSION:
            raise WireError(
                "unknown_version", f"alert lifecycle state version {state.get('version')!r}, expected {STATE_VERSION}"
            )
        lifecycle = cls(**settings)
        lifecycle.epoch = str(state.get("epoch", ""))  # absent from checkpoints written before it existed
        for finding, alert_id in state["parked"]:
            lifecycle.add(_finding_from_state(finding), alert_id)
        lifecycle._alerts = {alert_id: _tracked_from_state(alert_id, t) for alert_id, t in state["alerts"].items()}
        lifecycle._dirty = set(state["dirty"])
        lifecycle._due = [(float(due_at), alert_id) for due_at, alert_id in state["due"]]
        heapq.heapify(lifecycle._due)
        lifecycle._resolved = deque((float(at), alert_id) for at, alert_id in state["resolved"])
        return lifecycle


def _finding_to_state(finding: Finding) -> dict[str, Any]:
    return {
        "rule": finding.rule,
        "severity": str(finding.severity),
        "entity_type": finding.entity_type,
        "entity_value": finding.entity_value,
        "ts": finding.ts,
        "summary": finding.summary,
        "request_ids": list(finding.request_ids),
        "reason": finding.reason,
        "details": dict(finding.details),
        "key": finding.key,
    }


def _finding_from_state(data: Mapping[str, Any]) -> Finding:
    return Finding(
        rule=data["rule"],
        severity=Severity(data["severity"]),
        entity_type=data["entity_type"],
        entity_value=data["entity_value"],
        ts=float(data["ts"]),
        summary=data["summary"],
        request_ids=tuple(data["request_ids"]),
        reason=data["reason"],
        details=dict(data["details"]),
        key=data["key"],
    )


def _tracked_to_state(tracked: _Tracked) -> dict[str, Any]:
    window = tracked.window
    return {
        "first": _finding_to_state(window.first),
        "last_seen": window.last_seen,
        "severity": str(window.severity),
        "keys": sorted(window.keys),
        "unkeyed": window.unkeyed,
        "evidence": [[ts, request_id] for ts, request_id in window.evidence],
        "sequence": tracked.sequence,
        "resolved": tracked.resolved,
        "sent_at": tracked.sent_at,
        "sent_count": tracked.sent_count,
        "sent_last_seen": tracked.sent_last_seen,
    }


def _tracked_from_state(alert_id: str, data: Mapping[str, Any]) -> _Tracked:
    window = _Window(alert_id, _finding_from_state(data["first"]))
    window.last_seen = float(data["last_seen"])
    window.severity = Severity(data["severity"])
    window.keys = set(data["keys"])
    window.unkeyed = int(data["unkeyed"])
    window.evidence = [(float(ts), request_id) for ts, request_id in data["evidence"]]
    tracked = _Tracked(window)
    tracked.sequence = int(data["sequence"])
    tracked.resolved = bool(data["resolved"])
    tracked.sent_at = float(data["sent_at"])
    tracked.sent_count = int(data["sent_count"])
    tracked.sent_last_seen = float(data["sent_last_seen"])
    return tracked
