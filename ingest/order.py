"""Put events from several inputs into one event-time order, behind a watermark.

Each input (a file, a Kafka partition) is roughly in time order but may run
late: a log shipper can deliver one side a minute behind the other. Events
wait in a heap until the watermark — the slowest open input's newest
timestamp, minus ``lateness_secs`` — has passed them, then leave in
``(ts, id)`` order. Because ids are deterministic and the order is total, every
stage downstream sees the same sequence however the inputs were read or
batched: that is what makes a replay and a live run raise the same alerts.

Taking the minimum over inputs matters when catching up a backlog: a fast input
cannot push the watermark past events a slower input has yet to deliver.
An event that arrives when the order has already moved past its time is
"late"; it is handed back at once rather than reordered, and counted.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator

import msgspec

from ingest.codec import EventTable, pack_events, unpack_events
from ingest.records import Event


class EventOrder:
    """The reorder buffer. Memory is bounded by ``lateness_secs`` of traffic."""

    def __init__(self, lateness_secs: float) -> None:
        self.lateness_secs = lateness_secs
        self.clock = float("-inf")  # ts of the last event released
        self.late_events = 0
        self._heap: list[tuple[float, str, Event]] = []
        self._stream_clock: dict[str, float] = {}

    def open_stream(self, stream: str) -> None:
        """Register an input; until it delivers, it holds the watermark back."""
        self._stream_clock.setdefault(stream, float("-inf"))

    def close_stream(self, stream: str) -> None:
        """The input has ended (end of file, partition revoked): stop waiting for it."""
        self._stream_clock.pop(stream, None)

    def advance_stream(self, stream: str, ts: float) -> None:
        """Move an input's clock to ``ts`` without an event: an idle partition on a live stream."""
        if ts > self._stream_clock.get(stream, float("-inf")):
            self._stream_clock[stream] = ts

    def add(self, stream: str, event: Event) -> bool:
        """Queue ``event``; return False if it is late and must be handled now, out of order."""
        if event.ts > self._stream_clock.get(stream, float("-inf")):
            self._stream_clock[stream] = event.ts
        if event.ts < self.clock:
            self.late_events += 1
            return False
        heapq.heappush(self._heap, (event.ts, event.id, event))
        return True

    def stream_clock(self, stream: str) -> float:
        """The newest event time seen on ``stream`` (-inf before its first event)."""
        return self._stream_clock.get(stream, float("-inf"))

    @property
    def watermark(self) -> float:
        if not self._stream_clock:
            return float("inf")
        return min(self._stream_clock.values()) - self.lateness_secs

    def release(self, watermark: float | None = None) -> Iterator[Event]:
        """Yield queued events with ``ts`` at or below the watermark, oldest first."""
        limit = self.watermark if watermark is None else watermark
        heap = self._heap
        while heap and heap[0][0] <= limit:
            ts, _, event = heapq.heappop(heap)
            self.clock = ts
            yield event

    def __len__(self) -> int:
        return len(self._heap)

    class State(msgspec.Struct, array_like=True, gc=False):
        """The buffer for a checkpoint: its events in heap order (still a heap when read back)."""

        clock: float
        late_events: int
        stream_clock: dict[str, float]
        events: EventTable

    def state(self) -> State:
        """This buffer, for a checkpoint."""
        return self.State(self.clock, self.late_events, self._stream_clock, pack_events(e[2] for e in self._heap))

    def restore_state(self, state: State) -> None:
        """Continue from a decoded :meth:`state`; ``lateness_secs`` stays this buffer's own (from the config)."""
        self.clock = state.clock
        self.late_events = state.late_events
        self._stream_clock = dict(state.stream_clock)
        self._heap = [(event.ts, event.id, event) for event in unpack_events(state.events)]
        heapq.heapify(self._heap)  # already a heap if this process wrote it: linear, and never trusts the order
