"""The ingest side of partitioned detection: which requests partition an event goes to, and progress.

Every event goes to partition ``crc32(request_id) % P`` of ``<group_id>-requests``
(no request id: ``crc32(input stream) % P``), so both sides of a request meet
in one JOIN task whatever partition or topic they were read from: correctness
never depends on how the shippers keyed. After each poll (and every second
when idle) an ingest stage sends every requests partition the same
``progress`` v2 message: per input stream it reads, the position and end
offset, the newest *credible* event time it has read and the wall time of the
stream's last poll with events. Events of a stream are produced before the
progress that covers them (one producer, one request in flight), so a JOIN
task's view of every stream's clock is the single pipeline's.

Credible, as :mod:`ingest.order` judges it, over this process's streams: an
event time is credible if it is at most ``max_future_secs`` past the newest
credible one, or if another event lies within ``max_future_secs`` of it, of the
same poll or a lone one read before (before any time is credible, that is the
only way; after, it lets logs that really jumped ahead, which corroborate
themselves, move the clock, as the order lets them). One record dated 9999
therefore never moves a stream's clock, and so no partition's watermark; two
lone records of a quiet new deployment, polls apart, start it.
"""

from __future__ import annotations

import bisect
import zlib
from collections.abc import Sequence

import msgspec

from gatewatch.wire import encode_ingest_progress
from ingest.codec import encode_event_list
from ingest.records import Event

__all__ = ["StreamClocks", "entity_partition", "progress_message", "requests_partition", "route_events"]


def entity_partition(key: str, partitions: int) -> int:
    """The partition of an entity key (a request id, a client, a route): ``crc32(UTF-8) % partitions``."""
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def requests_partition(event: Event, partitions: int) -> int:
    """The requests partition of ``event``: by request id, else by its input stream."""
    key = event.request_id if event.request_id is not None else event.origin.stream
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % partitions


def route_events(events: Sequence[Event], partitions: int) -> list[tuple[int, msgspec.Raw]]:
    """One input stream's events (offset order) split by requests partition, each part's rows encoded once.

    Returns ``(partition, rows)`` for every partition with events, in partition
    order; wrap them with :func:`gatewatch.wire.encode_poll_events` at send time.
    Raises WireError ``invalid_value`` as :func:`~ingest.codec.encode_event_list`
    does (sort those out first with :func:`~ingest.codec.split_unencodable`).
    """
    parts: dict[int, list[Event]] = {}
    for event in events:
        parts.setdefault(requests_partition(event, partitions), []).append(event)
    return [(partition, encode_event_list(parts[partition])) for partition in sorted(parts)]


class StreamClocks:
    """Per input stream: the newest credible event time read, and the wall time of its last poll with events."""

    def __init__(self, max_future_secs: float) -> None:
        self.max_future_secs = max_future_secs
        self.newest: float | None = None  # newest credible event time over every stream of this process
        self.clocks: dict[str, float] = {}
        self.last_wall: dict[str, float] = {}
        self._lone: list[tuple[float, str]] = []  # (time, stream) of events no other vouched for yet, sorted

    def observe(self, stream: str, events: Sequence[Event], wall_secs: float) -> None:
        """One poll's events of ``stream``, in offset order, read at ``wall_secs``."""
        if not events:
            return
        self.last_wall[stream] = wall_secs
        reach = self.max_future_secs
        times: list[float] | None = None
        clock = self.clocks.get(stream)
        for event in events:  # the common event, credible, costs two comparisons (no call)
            ts = event.ts
            newest = self.newest
            if newest is None or ts > newest + reach:
                if times is None:
                    times = sorted(event.ts for event in events)
                if not (_vouched(times, ts, reach) or self._vouched_by_a_lone_one(ts)):
                    if len(self._lone) < MAX_LONE_EVENTS:
                        bisect.insort(self._lone, (ts, stream))
                    continue
            if newest is None or ts > newest:
                self.newest = ts
            if clock is None or ts > clock:
                clock = ts
        if clock is not None:
            self.clocks[stream] = clock
        if self._lone:
            self._credit_lone_ones_within_reach()

    def _vouched_by_a_lone_one(self, ts: float) -> bool:
        # A lone event of an earlier poll (any stream) within reach: the two vouch for each other.
        lone, reach = self._lone, self.max_future_secs
        at = bisect.bisect_left(lone, (ts, ""))
        return (at > 0 and ts - lone[at - 1][0] <= reach) or (at < len(lone) and lone[at][0] - ts <= reach)

    def _credit_lone_ones_within_reach(self) -> None:
        # Lone events the newest credible time has come within reach of are credible now, as the order releases them.
        lone = self._lone
        while lone and self.newest is not None and lone[0][0] <= self.newest + self.max_future_secs:
            ts, stream = lone.pop(0)
            self._credit(stream, ts)

    def _credit(self, stream: str, ts: float) -> None:
        if self.newest is None or ts > self.newest:
            self.newest = ts
        clock = self.clocks.get(stream)
        if clock is None or ts > clock:
            self.clocks[stream] = ts

    def progress(self, positions: dict[str, tuple[int, int]]) -> dict[str, tuple[int, int, float | None, float | None]]:
        """``{stream: (position, end_offset)}`` with each stream's clock and last wall time added."""
        return {stream: (position, end, self.clocks.get(stream), self.last_wall.get(stream))
                for stream, (position, end) in positions.items()}  # fmt: skip


MAX_LONE_EVENTS = 10_000
"""Lone event times :class:`StreamClocks` remembers for a later event to vouch for (as ``ingest.order`` holds)."""


def _vouched(times: list[float], ts: float, reach: float) -> bool:
    # Another event of the poll within reach: sorted times, so a neighbour is enough.
    at = bisect.bisect_left(times, ts)
    before = times[at - 1] if at > 0 else None
    after = times[at + 1] if at + 1 < len(times) else None
    return (before is not None and ts - before <= reach) or (after is not None and after - ts <= reach)


def progress_message(wall_secs: float, clocks: StreamClocks, positions: dict[str, tuple[int, int]]) -> bytes:
    """The ``progress`` v2 message an ingest stage sends to every requests partition (the same bytes to each)."""
    return encode_ingest_progress(wall_secs, clocks.progress(positions))
