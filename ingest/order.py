"""Put events from several inputs into one event-time order, behind a watermark.

Each input (a file, a Kafka partition) is roughly in time order but may run
late: a log shipper can deliver one side a minute behind the other. Events
wait in a sorted buffer until the watermark — the slowest open input's newest
timestamp, minus ``lateness_secs`` — has passed them, then leave in
``(ts, id)`` order. Because ids are deterministic and the order is total, every
stage downstream sees the same sequence however the inputs were read or
batched: that is what makes a replay and a live run raise the same alerts.

Taking the minimum over inputs matters when catching up a backlog: a fast input
cannot push the watermark past events a slower input has yet to deliver.
An event that arrives when the order has already moved past its time is
"late"; it is handed back at once rather than reordered, and counted.

A clock only moves on credible time. One record dated 9999 (or next month)
among normal traffic would otherwise set its input's clock, and once the
other inputs end, the watermark with it: every later record turns late.
Kafka bounds this against the broker's wall clock
(``message.timestamp.after.max.ms``); Flink's bounded out-of-orderness takes
the largest timestamp seen, outlier or not. gatewatch compares with event time
instead, so a replay stays deterministic: an event more than
``max_future_secs`` ahead of the newest credible event of any input (the
*horizon*) is held aside (see :meth:`EventOrder.hold`), kept out of
detection and of every clock, until another record lands within
``max_future_secs`` of it (logs that really jumped a day corroborate
themselves with their next record) or the traffic catches up with it.

Whatever the arrival order, the events held at the end are the same: the
ones that stand alone (no other record within ``max_future_secs``) above the
latest pair of records that do. With no credible time at all yet, even the
first record is held until a second one vouches for it; at the end of a run
where none ever did, the earliest anchors time (:meth:`EventOrder.settle`).
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from operator import itemgetter

import msgspec

from ingest.codec import decode_event_state, encode_event_state
from ingest.records import Event

# Far-future events held at most; past it a lone one is counted and left out of detection.
MAX_HELD_EVENTS = 10_000

_NEVER = float("-inf")  # the clock of an input that has delivered nothing yet
_TS = itemgetter(0)  # of a buffer entry (ts, id, event)
_EVENT = itemgetter(2)
# The sort key: two entries of one id and time (a record delivered twice) keep their arrival order,
# and are never compared by their events, which have no order.
_TS_ID = itemgetter(0, 1)
_NEWEST_ENTRIES = 512  # arrivals earlier than the buffer's newest this many are inserted (_insert_far)
# Far arrivals are sorted in together when at most this many buffered entries an arrival lie between the
# first and the last: a merge compares ~30 ns an entry, where an insert searches and moves every newer
# entry (~2-3 us).
_FAR_SPAN_AN_ARRIVAL = 64


class EventOrder:
    """The reorder buffer. Memory is bounded by ``lateness_secs`` of traffic."""

    def __init__(self, lateness_secs: float, max_future_secs: float = 86_400.0) -> None:
        self.lateness_secs = lateness_secs
        self.max_future_secs = max_future_secs
        self.clock = float("-inf")  # ts of the last event released
        self.late_events = 0
        self.horizon = float("-inf")  # newest credible ts + max_future_secs: later events are held
        self.future_discarded = 0
        # The buffer: (ts, id, event), sorted up to _sorted, then the arrivals since the last release in
        # arrival order. A heap once, and still named so (the memory bench measures it), it is kept sorted
        # instead: an input is about in time order, so new events land near the end, and sorting that
        # tail once per release costs a few comparisons an event where a heap's pop cost ~17, each a
        # cache miss in a buffer of minutes of traffic. Releasing is then cutting off a prefix.
        self._heap: list[tuple[float, str, Event]] = []
        self._sorted = 0
        self._stream_clock: dict[str, float] = {}
        self._held: list[tuple[float, str, Event]] = []  # sorted by (ts, id)

    def open_stream(self, stream: str) -> None:
        """Register an input; until it delivers, it holds the watermark back."""
        self._stream_clock.setdefault(stream, float("-inf"))

    def close_stream(self, stream: str) -> None:
        """The input has ended (end of file, partition revoked): stop waiting for it."""
        self._stream_clock.pop(stream, None)

    def advance_stream(self, stream: str, ts: float) -> None:
        """Move an input's clock to ``ts`` without an event: an idle partition on a live stream."""
        if ts > self._stream_clock.get(stream, _NEVER):
            self._stream_clock[stream] = ts

    def add(self, stream: str, event: Event) -> bool:
        """Queue ``event``; return False if it is late and must be handled now, out of order."""
        ts = event.ts
        if ts > self._stream_clock.get(stream, _NEVER):
            self._stream_clock[stream] = ts
            if ts + self.max_future_secs > self.horizon:
                self.horizon = ts + self.max_future_secs
        if ts < self.clock:
            self.late_events += 1
            return False
        self._heap.append((ts, event.id, event))
        return True

    def hold(self, event: Event) -> list[Event]:
        """Hold ``event``, which lies beyond :attr:`horizon`; return the held events now credible.

        Called instead of :meth:`add` for such an event. It becomes credible
        with another held event within ``max_future_secs`` of it: then it, that
        one, and every held event within reach of them are returned, oldest
        first, to be added like any other. Otherwise nothing is returned and the
        event waits (at most :data:`MAX_HELD_EVENTS`; past that it is only counted).
        """
        held = self._held
        ts, reach = event.ts, self.max_future_secs
        at = bisect.bisect_left(held, (ts, event.id))
        vouched = (at > 0 and ts - held[at - 1][0] <= reach) or (at < len(held) and held[at][0] - ts <= reach)
        if not vouched and len(held) >= MAX_HELD_EVENTS:
            self.future_discarded += 1
            return []
        held.insert(at, (ts, event.id, event))
        return self._release_held(max(self.horizon, ts + reach)) if vouched else []

    def reached(self) -> list[Event]:
        """Held events the horizon has caught up with, oldest first, to be added now."""
        if self._held and self._held[0][0] <= self.horizon:
            return self._release_held(self.horizon)
        return []

    def settle(self) -> list[Event]:
        """End of input: if no time was ever credible, the earliest held event anchors it.

        A run whose records all stand alone (one record, or a few days apart)
        is still processed; far-future outliers stay held. Returns what to add.
        """
        if self.horizon == float("-inf") and self._held:
            return self._release_held(self._held[0][0])
        return self.reached()

    @property
    def future_events(self) -> int:
        """Events held as far-future now, plus those dropped from detection past the cap."""
        return len(self._held) + self.future_discarded

    def _release_held(self, reach: float) -> list[Event]:
        held = self._held
        released: list[Event] = []
        while held and held[0][0] <= reach:
            ts, _, event = held.pop(0)
            released.append(event)
            reach = max(reach, ts + self.max_future_secs)
        return released

    def stream_clock(self, stream: str) -> float:
        """The newest event time seen on ``stream`` (-inf before its first event)."""
        return self._stream_clock.get(stream, _NEVER)

    @property
    def watermark(self) -> float:
        if not self._stream_clock:
            return float("inf")
        return min(self._stream_clock.values()) - self.lateness_secs

    def release(self, watermark: float | None = None) -> Iterator[Event]:
        """Yield queued events with ``ts`` at or below the watermark, oldest first."""
        limit = self.watermark if watermark is None else watermark
        self._sort_arrivals()
        buffer = self._heap
        end = bisect.bisect_right(buffer, limit, key=_TS)
        released = 0
        try:
            for released, (ts, _, event) in enumerate(buffer[:end], 1):
                self.clock = ts
                yield event
        finally:  # also when the consumer stops early: what it was given leaves the buffer, nothing else
            del buffer[:released]
            self._sorted -= released

    def take(self, watermark: float | None = None) -> list[Event]:
        """:meth:`release` as one list: every queued event at or below the watermark, oldest first.

        For a consumer that handles the whole batch at once (the pipeline, a second of
        event time at a time); :attr:`clock` is then already the last one's time.
        """
        limit = self.watermark if watermark is None else watermark
        self._sort_arrivals()
        buffer = self._heap
        end = bisect.bisect_right(buffer, limit, key=_TS)
        if not end:
            return []
        self.clock = buffer[end - 1][0]
        released = list(map(_EVENT, buffer[:end]))
        del buffer[:end]
        self._sorted -= end
        return released

    def _sort_arrivals(self) -> None:
        buffer, sorted_end = self._heap, self._sorted
        if sorted_end == len(buffer):
            return
        arrivals = buffer[sorted_end:]
        del buffer[sorted_end:]
        _sort_entries(arrivals)
        # Most arrivals land among the newest entries. A few per release land far back (a slow request:
        # Envoy logs it when it ends, dated when it began); sorting everything after those again would cost
        # a comparison per buffered event, so they are inserted apart (_insert_far), and only the rest is
        # sorted in with the newest entries, a run of each that the sort finds and merges.
        near_from = len(buffer) - _NEWEST_ENTRIES
        far = bisect.bisect_left(arrivals, _TS_ID(buffer[near_from]), key=_TS_ID) if near_from > 0 else 0
        if far:
            _insert_far(buffer, arrivals[:far], near_from)
            near_from += far
        if far < len(arrivals):
            start = bisect.bisect_right(buffer, _TS_ID(arrivals[far]), max(near_from, 0), key=_TS_ID)
            tail = buffer[start:]
            tail += arrivals[far:]
            _sort_entries(tail)
            buffer[start:] = tail
        self._sorted = len(buffer)

    def __len__(self) -> int:
        return len(self._heap)

    class State(msgspec.Struct, array_like=True, gc=False):
        """The buffer for a checkpoint: its events in time order (sorted again when read back).

        ``events`` and ``held``: :func:`~ingest.codec.encode_event_state` (a state v1 held an EventTable).
        """

        clock: float
        late_events: int
        stream_clock: dict[str, float]
        events: msgspec.Raw
        horizon: float
        future_discarded: int
        held: msgspec.Raw

    def state(self) -> State:
        """This buffer, for a checkpoint."""
        self._sort_arrivals()
        return self.State(
            self.clock,
            self.late_events,
            self._stream_clock,
            encode_event_state(map(_EVENT, self._heap)),
            self.horizon,
            self.future_discarded,
            encode_event_state(map(_EVENT, self._held)),
        )

    def event_ids(self) -> set[str]:
        """The ids of every event it holds, buffered or held."""
        return {entry[1] for entries in (self._heap, self._held) for entry in entries}

    def restore_state(self, state: State, packed: bool = False) -> None:
        """Continue from a decoded :meth:`state`; ``lateness_secs`` stays this buffer's own (from the config).

        ``packed``: the state is a v1 one, its events in EventTables. Raises WireError if they do not decode.
        """
        self.clock = state.clock
        self.late_events = state.late_events
        self._stream_clock = dict(state.stream_clock)
        # Already sorted if this process wrote it (the sort then only checks), but never trusts the order.
        self._heap = [(event.ts, event.id, event) for event in decode_event_state(state.events, packed)]
        _sort_entries(self._heap)
        self._sorted = len(self._heap)
        self.horizon = state.horizon
        self.future_discarded = state.future_discarded
        self._held = [(event.ts, event.id, event) for event in decode_event_state(state.held, packed)]
        _sort_entries(self._held)  # held twice (a record delivered twice) must not fail on comparing the events


def _insert_far(buffer: list[tuple[float, str, Event]], far: list[tuple[float, str, Event]], end: int) -> None:
    """Insert ``far`` (sorted arrivals, each placed before ``buffer[end]``) where they belong in ``buffer``.

    Each is inserted after the entries of its time and id already there. When they land close
    together, as a lagging input's poll does (in a JOIN task of serve's, half the arrivals, most
    within a few buffered entries of one another), the stretch of the buffer between the first and
    the last is sorted with them at once, so the newer entries move once, not once an arrival; far
    apart (a few slow requests), they are inserted one by one.
    """
    first = bisect.bisect_right(buffer, _TS_ID(far[0]), 0, end, key=_TS_ID)
    last = bisect.bisect_right(buffer, _TS_ID(far[-1]), first, end, key=_TS_ID)
    if last - first <= _FAR_SPAN_AN_ARRIVAL * len(far):
        stretch = buffer[first:last]
        stretch += far
        _sort_entries(stretch)  # stable for equal (ts, id): the buffer's entries stay before the arrivals
        buffer[first:last] = stretch
        return
    at = first
    for entry in far:
        at = bisect.bisect_right(buffer, _TS_ID(entry), at, end, key=_TS_ID)
        buffer.insert(at, entry)
        at += 1
        end += 1


def _sort_entries(entries: list[tuple[float, str, Event]]) -> None:
    """Sort buffer entries by (ts, id), in place; two entries of one id and time keep their arrival order.

    The entries themselves are sorted, not a key of each: tuples compare in C, where a key
    function built a (ts, id) tuple per entry per sort and cost twice as much. Two entries
    of one id and time (a record delivered twice) would then compare their events, which
    have no order: that raises, always (a sort compares every pair that ends up side by
    side), and then the stable sort by key puts them back in arrival order.
    """
    arrived = entries[:]
    try:
        entries.sort()
    except TypeError:
        entries[:] = arrived
        entries.sort(key=_TS_ID)
