"""Idle inputs of the detect stage: when a caught-up, quiet partition stops holding the watermark.

The watermark is the slowest open input's event time minus
``correlate.allowed_lateness_secs`` (:mod:`ingest.order`). An input partition
that has been read to its end and says nothing holds it where its last record
was. Shippers partition unevenly (rsyslog ``omkafka`` unkeyed left one of four
partitions 9 minutes of event time short on a 45-minute backlog), so such a
partition would keep every window open for minutes after the backlog was read.

The rule follows Flink's source idleness (``WatermarksWithIdleness`` marks a
channel idle after a quiet spell; ``StatusWatermarkValve`` leaves idle channels
out of the minimum, and when every channel is idle emits the maximum over all
of them). Here an input is *idle* when the ingest stage's progress says it is
caught up (``position == end``) and its last events message is
``correlate.idle_timeout_secs`` of wall time older than the progress message.
An idle input is advanced to the *front*: the newest event time that inputs
have shown, where an idle input shows its last event time plus its quiet time
(so with every input idle, event time still moves at wall-clock speed and
windows close without new traffic). Unlike Flink's maximum, the front is the
newest time at least two inputs reached: one input with a clock hours ahead
(a wrong host clock inside ``correlate.max_future_secs``) must not carry the
others there, which would make every record after it late. Being at the
front, an idle input no longer bounds the minimum; the busy inputs alone set
the watermark. Its clock is never moved back: a record it delivers later is
ordered if the watermark has not passed it yet, else counted late and
processed at once, never dropped. Once it is quiet again it goes on from where
it was advanced to, not from its newest record's time: a backlog of old records
sent again to an input that had been idle for twelve minutes froze event time
for twelve minutes (every window, every alert's lifecycle with it).

An input that never delivered and has been caught up for the idle timeout (a
partition no key hashes to) is closed instead; it opens again if it delivers.
Not at once: at start-up every partition is caught up until its first records
arrive.

Every decision reads only the wall times the ingest stage wrote into the
messages and the event times of the records, never this process's clock, and
:class:`IdleInputs` is saved in each JOIN task's checkpoint: a re-read of its requests partition
after a failover takes the same decisions at the same offsets.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["IdleInputs", "IdleMove"]


@dataclass(frozen=True, slots=True)
class IdleMove:
    """One decision: advance ``stream``'s clock to ``ts``, or close it when ``ts`` is None."""

    stream: str
    ts: float | None


class IdleInputs:
    """Per input stream: the ingest wall time of its last events, its newest event time, when first caught up.

    Pure bookkeeping; the detect stage applies the :class:`IdleMove` values
    :meth:`on_progress` returns to its event order.
    """

    def __init__(
        self,
        idle_timeout_secs: float,
        last_wall: Mapping[str, float] | None = None,
        last_ts: Mapping[str, float] | None = None,
        caught_up_since: Mapping[str, float] | None = None,
        advanced: Mapping[str, tuple[float, float]] | None = None,
    ) -> None:
        self.idle_timeout_secs = idle_timeout_secs
        self.last_wall: dict[str, float] = dict(last_wall or {})  # stream -> wall time of its last events message
        self.last_ts: dict[str, float] = dict(last_ts or {})  # stream -> newest credible event time delivered
        self.caught_up_since: dict[str, float] = dict(caught_up_since or {})  # never-delivered stream -> wall
        # stream -> (event time, wall time) of the last move that advanced it
        self.advanced: dict[str, tuple[float, float]] = dict(advanced or {})

    def delivered(self, stream: str, wall_secs: float, newest_ts: float) -> None:
        """``stream`` delivered events, the newest credible one at ``newest_ts``, in a message of ``wall_secs``."""
        self.last_wall[stream] = wall_secs
        previous = self.last_ts.get(stream, newest_ts)
        self.last_ts[stream] = max(newest_ts, previous)

    def on_progress(self, wall_secs: float, progress: Mapping[str, tuple[int, int]]) -> list[IdleMove]:
        """The moves one progress message (``{stream: (position, end_offset)}``, written at ``wall_secs``) implies."""
        timeout = self.idle_timeout_secs
        reach = dict(self.last_ts)  # how far each input has shown event time to be
        idle: list[str] = []
        closed: list[IdleMove] = []
        for stream, (position, end) in progress.items():
            if position < end:
                self.caught_up_since.pop(stream, None)
                continue  # the owner is behind: this input may still deliver older records
            delivered_at = self.last_wall.get(stream)
            if delivered_at is None:
                since = self.caught_up_since.setdefault(stream, wall_secs)
                if wall_secs - since >= timeout:
                    closed.append(IdleMove(stream, None))
                continue
            quiet_secs = wall_secs - delivered_at
            if quiet_secs >= timeout:
                idle.append(stream)
                reach[stream] += quiet_secs
                moved = self.advanced.get(stream)
                if moved is not None:  # where it was advanced to, and on at wall speed since
                    reach[stream] = max(reach[stream], moved[0] + (wall_secs - moved[1]))
        front = _front(reach)
        moves = []
        for stream in idle:
            ts = max(front, reach[stream])
            self.advanced[stream] = (ts, wall_secs)
            moves.append(IdleMove(stream, ts))
        return closed + moves


def _front(reach: dict[str, float]) -> float:
    """The newest event time at least two inputs have reached (the only one's, with one input).

    One input whose clock runs hours ahead (a host with a wrong clock, still
    inside ``max_future_secs``) must not drag the idle ones there: every record
    after would be late. A request's records arrive on both topics, so real
    time is always shown by two inputs at least.
    """
    if len(reach) < 2:
        return max(reach.values(), default=float("-inf"))
    first = second = float("-inf")
    for value in reach.values():
        if value > first:
            first, second = value, first
        elif value > second:
            second = value
    return second
