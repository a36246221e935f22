"""Alerts: findings folded into one alert per (rule, entity) per suppression window.

Suppression windows are fixed spans of event time, ``suppression_window_secs``
long and aligned to the UTC day (a 600 s window runs 12:00–12:10). Every field
of an alert is an order-free fold over the findings of its window:

- ``count``: findings, except that findings sharing a ``key`` (a request's
  several log lines) count once;
- ``first_seen`` / ``last_seen``: their earliest and latest time;
- ``severity``: the highest;
- ``request_ids``: the ``max_request_ids`` earliest;
- ``summary``, ``reason``, ``details``: those of the earliest finding (the
  summary with control characters escaped: it quotes attacker-written text).

So the same findings give the same alerts in any order: a detector may raise
them as records arrive (``observe_arrival``) or in event-time order, and a
restart or a second replica changes nothing. The id is a hash of rule, entity
and window start: a store that upserts by id updates a growing alert in place.
"""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterator
from typing import Any

import msgspec

from detectors.base import Finding, Severity
from ingest.alerts import Alert as Alert  # the value lives in the leaf; re-exported
from ingest.escape import visible

_SEVERITY_ORDER = {s: i for i, s in enumerate(Severity)}
DAY_SECS = 86_400
# How long a window stays open after it ends: transactions reach detectors a join
# window after their first record, and a finding may be that much behind the watermark.
MIN_GRACE_SECS = 300.0
# Distinct finding keys remembered per alert; past this, every keyed finding counts.
MAX_KEYS_PER_ALERT = 100_000


def alert_id(rule: str, entity_type: str, entity_value: str, window: str) -> str:
    key = f"{rule}\x1f{entity_type}\x1f{entity_value}\x1f{window}".encode()
    return hashlib.blake2b(key, digest_size=12).hexdigest()


def check_suppression_window(secs: float) -> float:
    """A window must divide the day, so an alert never straddles two daily indices."""
    if secs <= 0 or secs != int(secs) or DAY_SECS % int(secs):
        raise ValueError(f"must be a whole number of seconds that divides a day (60, 300, 600, 3600 …), not {secs:g}")
    return secs


class _Window:
    """The fold of one (rule, entity, window)'s findings so far."""

    __slots__ = ("id", "first", "last_seen", "severity", "keys", "unkeyed", "evidence")

    def __init__(self, alert_id: str, finding: Finding) -> None:
        self.id = alert_id
        self.first = finding  # the earliest finding (its ts is first_seen): its summary, reason and details
        self.last_seen = finding.ts
        self.severity = finding.severity
        self.keys: set[str] = set()
        self.unkeyed = 0
        self.evidence: list[tuple[float, str]] = []  # (earliest ts, request id), sorted, capped

    def add(self, finding: Finding, max_request_ids: int) -> None:
        ts = finding.ts
        if _precedence(finding) < _precedence(self.first):
            self.first = finding
        self.last_seen = max(self.last_seen, ts)
        if _SEVERITY_ORDER[finding.severity] > _SEVERITY_ORDER[self.severity]:
            self.severity = finding.severity
        if finding.key is not None and len(self.keys) < MAX_KEYS_PER_ALERT:
            self.keys.add(finding.key)
        else:
            self.unkeyed += 1
        self._add_evidence(ts, finding.request_ids, max_request_ids)

    def _add_evidence(self, ts: float, request_ids: tuple[str, ...], cap: int) -> None:
        """Keep the ``cap`` request ids seen earliest, each at the earliest time it was seen."""
        evidence = self.evidence
        for request_id in request_ids:
            entry = (ts, request_id)
            if len(evidence) >= cap and entry >= evidence[-1]:
                continue  # later than all kept (and than this id's own entry, if kept)
            for i, (seen_ts, seen_id) in enumerate(evidence):
                if seen_id == request_id:
                    if seen_ts <= ts:
                        break
                    del evidence[i]
                    bisect.insort(evidence, entry)
                    break
            else:
                bisect.insort(evidence, entry)
                del evidence[cap:]

    def alert(self) -> Alert:
        first = self.first
        return Alert(
            id=self.id,
            rule=first.rule,
            severity=self.severity,
            entity_type=first.entity_type,
            entity_value=first.entity_value,
            first_seen=first.ts,
            last_seen=self.last_seen,
            count=len(self.keys) + self.unkeyed,
            request_ids=tuple(request_id for _, request_id in self.evidence),
            summary=visible(first.summary),
            reason=first.reason,
            details=dict(first.details),
        )


class AlertBook:
    """Folds findings into alerts and remembers the windows still open.

    ``add`` returns the alert as it now stands (new or grown) so a streaming
    caller can upsert it at once. ``expire(watermark)`` forgets windows that
    ended more than a grace period (one window, at least ``MIN_GRACE_SECS``)
    before the watermark, keeping memory bounded; it remembers for a day which
    ones it forgot. Findings for a forgotten window (their records came later
    than that: a shipper re-sending a backlog) fold into one late alert of that
    window, with an id of its own, so they never overwrite the stored alert with
    a smaller count, nor make an alert each. A finding for an old window that was
    never open (a rule that reports on a past window, a record later than the
    allowed lateness) opens it as usual.
    """

    def __init__(self, suppression_window_secs: float = 600.0, max_request_ids: int = 20) -> None:
        self.suppression_window_secs = check_suppression_window(suppression_window_secs)
        self.max_request_ids = max_request_ids
        self.grace_secs = max(suppression_window_secs, MIN_GRACE_SECS)
        self._open: dict[tuple[str, str, str, float], _Window] = {}
        self._forgotten: dict[tuple[str, str, str, float], None] = {}  # in the order forgotten
        self._late: dict[tuple[str, str, str, float], _Window] = {}  # forgotten windows' late alerts
        self._horizon = float("-inf")  # windows starting before this are no longer kept open

    def add(self, finding: Finding) -> Alert:
        at = finding.ts if finding.window_ts is None else finding.window_ts
        start = at - at % self.suppression_window_secs
        key = (finding.rule, finding.entity_type, finding.entity_value, start)
        window = self._open.get(key)
        if window is None:
            if key in self._forgotten:
                window = self._late.get(key)
                if window is None:
                    window = self._late[key] = _Window(_late_id(finding, start), finding)
                window.add(finding, self.max_request_ids)
                return window.alert()
            window = self._open[key] = _Window(
                alert_id(finding.rule, finding.entity_type, finding.entity_value, f"{start:.0f}"), finding
            )
        window.add(finding, self.max_request_ids)
        return window.alert()

    def expire(self, watermark: float) -> None:
        """Forget windows that ended at least a grace period before ``watermark``."""
        horizon = watermark - self.grace_secs - self.suppression_window_secs
        if horizon <= self._horizon:
            return
        self._horizon = horizon
        for key in [key for key in self._open if key[3] < horizon]:
            del self._open[key]
            self._forgotten[key] = None
        forgotten = self._forgotten
        while forgotten and (oldest := next(iter(forgotten)))[3] < watermark - DAY_SECS:
            del forgotten[oldest]
            self._late.pop(oldest, None)

    def __iter__(self) -> Iterator[Alert]:
        return (window.alert() for window in self._open.values())

    class State(msgspec.Struct, array_like=True, gc=False):
        """The open windows and the forgotten ones' keys, for a checkpoint."""

        open: list[_WindowState]
        forgotten: list[tuple[str, str, str, float]]  # in the order forgotten
        horizon: float
        late: list[_WindowState] = []  # absent from a state written before late alerts folded

    def state(self) -> State:
        """The book, for a checkpoint; the window length and caps stay this book's own (from the config)."""
        return self.State(_window_states(self._open), list(self._forgotten), self._horizon, _window_states(self._late))

    def restore_state(self, state: State) -> None:
        """Continue from a decoded :meth:`state`."""
        self._open = _windows(state.open)
        self._forgotten = dict.fromkeys(state.forgotten)
        self._horizon = state.horizon
        self._late = _windows(state.late)


def _window_states(windows: dict[tuple[str, str, str, float], _Window]) -> list[_WindowState]:
    return [
        _WindowState(key, w.id, _FindingState(*(getattr(w.first, f) for f in _FindingState.__struct_fields__)),
                     w.last_seen, w.severity, list(w.keys), w.unkeyed, w.evidence)
        for key, w in windows.items()
    ]  # fmt: skip


def _windows(states: list[_WindowState]) -> dict[tuple[str, str, str, float], _Window]:
    windows = {}
    for saved in states:
        window = _Window(saved.id, Finding(*msgspec.structs.astuple(saved.first)))
        window.last_seen, window.severity = saved.last_seen, saved.severity
        window.keys, window.unkeyed, window.evidence = set(saved.keys), saved.unkeyed, list(saved.evidence)
        windows[saved.key] = window
    return windows


class _FindingState(msgspec.Struct, array_like=True, gc=False):
    """A :class:`~detectors.base.Finding`, field for field; ``details`` come back as plain JSON-like values."""

    rule: str
    severity: Severity
    entity_type: str
    entity_value: str
    ts: float
    summary: str
    request_ids: tuple[str, ...]
    reason: str | None
    details: dict[str, Any]
    key: str | None
    window_ts: float | None = None  # absent from a state written before findings named their window


class _WindowState(msgspec.Struct, array_like=True, gc=False):
    key: tuple[str, str, str, float]  # (rule, entity type, entity value, window start)
    id: str
    first: _FindingState
    last_seen: float
    severity: Severity
    keys: list[str]
    unkeyed: int
    evidence: list[tuple[float, str]]


def _precedence(finding: Finding) -> tuple[float, str, str, tuple[str, ...]]:
    return (finding.ts, finding.summary, finding.reason or "", finding.request_ids)


def _late_id(finding: Finding, start: float) -> str:
    return alert_id(finding.rule, finding.entity_type, finding.entity_value, f"late {start:.0f}")
