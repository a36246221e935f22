"""Correlate: join gateway and app records of one request id in event time.

Records arrive from :mod:`ingest.order` in event-time order. A request's group
stays open until event time passes its last record by ``join_window_secs``
(a session gap): long enough for retries, for the app's lines written while
the request runs, and for clock skew between hosts of a few seconds. A gateway
record is dated by the request's start (``%START_TIME%``) and the app's line
usually by its end, so a gateway record counts from its end (start plus its
``duration_ms``, at most :data:`MAX_REQUEST_MS`): a 45 s export is joined,
not reported as two halves and a bypass. Then the
group leaves memory as one :class:`Transaction` — joined, gateway-only or
app-only. Closing happens at deterministic points of event time, in
``(deadline, request_id)`` order, so the output does not depend on how the
inputs were read.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from math import ceil
from operator import attrgetter

import msgspec

from ingest.codec import decode_event_state, encode_event_state
from ingest.errors import WireError
from ingest.records import MAX_REQUEST_MS, Dataset, Event, Transaction

_GATEWAY = Dataset.GATEWAY  # a module global: reading an enum's member costs ~80 ns on Python 3.11
DEADLINE_PAST_SECS = 1e-6
"""Added to a group's deadline: a record exactly ``join_window_secs`` after the last one still joins. The
pipeline closes groups at whole seconds before it adds that second's records, so a deadline on a whole second
closed before a record at that very time came, and one a millisecond later waited for the next second (found by a
detection audit: a Billing line 30 s after its request's end made two transactions and a bypass alert)."""
MAX_SIDE_RECORDS = 5_000
"""A request's records a side (gateway attempts, app lines) before its group closes, at the next whole second: a
client that sets its own request id can keep one open for as long as it sends (a flood trial held 29,900 attempts,
~420 B each, in one transaction document of 800 KB). Later records of the id start a group of their own."""


class _Group(msgspec.Struct, gc=False):
    """One open request: its events a side, and when it closes. A Struct: built in C, one a request
    (a slots dataclass's ``__init__`` is Python: 350 ns against 110). ``gc=False``: it holds lists of
    events, which reference nothing back."""

    gateway: list[Event]
    app: list[Event]
    deadline: float = 0.0


class Correlator:
    """Open request groups keyed by request id, closed by event time."""

    def __init__(self, join_window_secs: float) -> None:
        self.join_window_secs = join_window_secs
        self._gap = join_window_secs + DEADLINE_PAST_SECS  # from a record to its group's deadline
        self._groups: dict[str, _Group] = {}
        # The schedule: request ids by the whole second their group's deadline falls in (its ceiling), and a
        # heap of those seconds. The pipeline closes once a second, so a second's groups close together: one
        # sort of a few hundred ids instead of a heap entry pushed and popped per record. An id whose group
        # was closed since, or whose deadline moved to a later second, is skipped where it is found.
        self._deadlines: dict[int, list[str]] = {}
        self._deadline_seconds: list[int] = []
        self.closing_deadline = float("-inf")  # the deadline of the transaction close_until yielded last

    def add(self, event: Event, now: float) -> None:
        """Add a record with a request id; ``now`` is the order's clock (for late records)."""
        request_id = event.request_id
        assert request_id is not None
        group = self._groups.get(request_id)
        if group is None:
            group = self._groups[request_id] = _Group([], [])
        ts = event.ts
        side = group.gateway if event.dataset is _GATEWAY else group.app
        side.append(event)
        if len(side) >= MAX_SIDE_RECORDS:
            self._close_soon(group, request_id, ts if ts > now else now)
            return
        if event.dataset is _GATEWAY and event.duration_ms:
            ts += (event.duration_ms if event.duration_ms < MAX_REQUEST_MS else MAX_REQUEST_MS) / 1000
        deadline = (ts if ts > now else now) + self._gap
        if deadline > group.deadline:
            second = ceil(deadline)
            if group.deadline <= second - 1:  # not yet scheduled in that second (most records of a request)
                self._schedule(second, request_id)
            group.deadline = deadline

    def add_released(self, events: list[Event]) -> None:
        """:meth:`add` for events just released by the order, in its order: each one's own ``ts`` is the clock.

        The records without a request id are skipped. The loop of :meth:`add`, written
        out for a batch (one call a release instead of one a record).
        """
        groups, window, schedule = self._groups, self._gap, self._schedule
        for event in events:
            request_id = event.request_id
            if request_id is None:
                continue
            group = groups.get(request_id)
            if group is None:
                group = groups[request_id] = _Group([], [])
            if event.dataset is _GATEWAY:
                side = group.gateway
                duration = event.duration_ms
                if duration:  # the request's end, where the app writes its line
                    deadline = event.ts + (duration if duration < MAX_REQUEST_MS else MAX_REQUEST_MS) / 1000 + window
                else:
                    deadline = event.ts + window
            else:
                side = group.app
                deadline = event.ts + window
            side.append(event)
            if len(side) >= MAX_SIDE_RECORDS:
                self._close_soon(group, request_id, event.ts)
                continue
            if deadline > group.deadline:
                second = ceil(deadline)
                if group.deadline <= second - 1:
                    schedule(second, request_id)
                group.deadline = deadline

    def _close_soon(self, group: _Group, request_id: str, ts: float) -> None:
        """Close a full group at the first whole second after ``ts`` (its records until then still join)."""
        deadline = ts + DEADLINE_PAST_SECS
        if deadline < group.deadline:
            group.deadline = deadline
            self._schedule(ceil(deadline), request_id)

    def _schedule(self, second: int, request_id: str) -> None:
        request_ids = self._deadlines.get(second)
        if request_ids is None:
            request_ids = self._deadlines[second] = []
            heapq.heappush(self._deadline_seconds, second)
        request_ids.append(request_id)

    def close_until(self, ts: float) -> Iterator[Transaction]:
        """Close and yield every group whose deadline is at or before ``ts``, in ``(deadline, request id)`` order."""
        groups, schedule, seconds = self._groups, self._deadlines, self._deadline_seconds
        while seconds and seconds[0] - 1 < ts:  # that second holds deadlines in (second - 1, second]
            second = seconds[0]
            due: list[tuple[float, str]] = []
            waiting: list[str] = []  # deadline in this second but after ts: ts is not a whole second
            earliest = second - 1
            for request_id in schedule[second]:
                group = groups.get(request_id)
                if group is None:
                    continue  # closed already
                deadline = group.deadline
                if not earliest < deadline <= second:
                    continue  # its deadline moved to a later second
                if deadline <= ts:
                    due.append((deadline, request_id))
                else:
                    waiting.append(request_id)
            due.sort()
            for deadline, request_id in due:
                group = groups.pop(request_id, None)
                if group is None:
                    continue  # listed twice: a consumer stopped early, and the request id opened again since
                self.closing_deadline = deadline
                gateway, app = group.gateway, group.app
                # Most requests have one record a side: nothing to sort, and no call to _in_order.
                yield Transaction(
                    request_id,
                    tuple(gateway) if len(gateway) < 2 else _in_order(gateway),
                    tuple(app) if len(app) < 2 else _in_order(app),
                )
            # Only now, so that a consumer stopping early leaves every group it was not given scheduled.
            if waiting:
                schedule[second] = waiting
                break
            del schedule[second]
            heapq.heappop(seconds)

    def close_all(self) -> Iterator[Transaction]:
        return self.close_until(float("inf"))

    def __len__(self) -> int:
        return len(self._groups)

    class State(msgspec.Struct, array_like=True, gc=False):
        """Open groups for a checkpoint: per group its request id, deadline and counts of its events."""

        groups: list[tuple[str, float, int, int]]  # (request id, deadline, gateway events, app events)
        # every group's gateway then app events, groups in order: encode_event_state (v1: an EventTable)
        events: msgspec.Raw
        # (deadline, request id) of the groups to close; an entry not matching its group's deadline is ignored
        deadlines: list[tuple[float, str]]

    def state(self) -> State:
        """The open groups, for a checkpoint."""
        groups = self._groups.items()
        rows = [(request_id, g.deadline, len(g.gateway), len(g.app)) for request_id, g in groups]
        events = encode_event_state(self._open_events())
        deadlines = sorted((g.deadline, request_id) for request_id, g in groups if g.deadline > 0.0)
        return self.State(rows, events, deadlines)

    def event_ids(self) -> set[str]:
        """The ids of every event in an open group."""
        return {e.id for e in self._open_events()}

    def _open_events(self) -> Iterator[Event]:
        """Every open group's gateway then app events, groups in order: what a state holds."""
        return (e for g in self._groups.values() for side in (g.gateway, g.app) for e in side)

    def restore_state(self, state: State, packed: bool = False) -> None:
        """Continue from a decoded :meth:`state`; ``join_window_secs`` stays this correlator's own.

        ``packed``: the state is a v1 one, its events in an EventTable. Raises WireError if it does not decode.
        """
        events = decode_event_state(state.events, packed)
        if sum(n_gateway + n_app for _, _, n_gateway, n_app in state.groups) != len(events):
            raise WireError("undecodable", "correlator state: group sizes do not match its events")
        groups: dict[str, _Group] = {}
        at = 0
        for request_id, deadline, n_gateway, n_app in state.groups:
            if n_gateway < 0 or n_app < 0:
                raise WireError("undecodable", "correlator state: negative group size")
            gateway, app = events[at : at + n_gateway], events[at + n_gateway : at + n_gateway + n_app]
            groups[request_id] = _Group(gateway, app, deadline)
            at += n_gateway + n_app
        self._groups = groups
        self._deadlines, self._deadline_seconds = {}, []
        for deadline, request_id in state.deadlines:
            group = groups.get(request_id)
            if group is not None and group.deadline == deadline:  # as written by an older gatewatch: stale ones too
                self._schedule(ceil(deadline), request_id)


def _in_order(events: list[Event]) -> tuple[Event, ...]:
    # Late records are appended when they arrive; keep each side in event time.
    return tuple(sorted(events, key=_TIME_AND_ID))


_TIME_AND_ID = attrgetter("ts", "id")  # an event's (ts, id), built in C
