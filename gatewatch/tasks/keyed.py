"""The KEYED task (one per keyed partition): the rules keyed by an entity, in event-time order per key.

It receives, from every JOIN task, the events and closed transactions whose
entity hashes to its partition, each with the mask of the rules it is for,
and replays the single pipeline's phases on them up to its *frontier* F: the
minimum over every JOIN task of the latest tick it sent (an upstream never
heard from holds F). With its own tick t, while t < F:

1. the buffered events of second t (``floor(ts) == t``), in ``(ts, id)`` order;
2. t += 1;
3. the buffered transactions closing at tick t (deadline <= t), in
   ``(deadline, request_id)`` order;
4. ``advance(t)`` of its rules; gathering rules hand their closed windows'
   rows to the ALERT task instead of judging them.

That is the order in which :class:`~gatewatch.topology.Pipeline` calls the same
rules, so each key's rule state sees exactly the single pipeline's sequence.
An item older than what it already processed (a late record) is processed at
once, as the single pipeline does. Each finding carries the tick whose
lifecycle step first sees it there (:class:`~gatewatch.wire.FindingRow`).
"""

from __future__ import annotations

import bisect
import heapq
import math
from collections.abc import Callable
from operator import itemgetter
from typing import TYPE_CHECKING, Generic, TypeVar

import msgspec

from detectors.base import Finding
from detectors.runner import DetectorSet
from gatewatch.errors import WireError
from gatewatch.tasks.base import Role, TaskOutput, Upstreams, internal_topic, receive
from gatewatch.tasks.route import entity_partition
from gatewatch.topology import _MAX_TICKED_GAP_SECS, detector_configs, detector_context
from gatewatch.wire import (
    FindingRow, FindingsMessage, GatheredRows, KeyedMessage, KeyedRowsMessage, KeyedState, KeyedTxn,
    decode_keyed_message, decode_task_state, encode_findings, encode_task_state, finding_row, keyed_event,
)  # fmt: skip
from ingest.codec import decode_event_state, decode_state, encode_event_state, encode_state, unpack_events
from ingest.records import Event, Transaction

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig


def keyed_items(
    message: KeyedRowsMessage | KeyedMessage,
) -> tuple[list[tuple[Event, int]], list[tuple[Transaction, float, int]]]:
    """The events (with masks) and transactions (with deadlines and masks) of a keyed message.

    Raises WireError ``undecodable`` if the message is inconsistent.
    """
    if type(message) is KeyedRowsMessage:
        streams = message.streams
        try:
            events = [keyed_event(row, streams[row.stream]) for row in message.events]
            txn_events = [keyed_event(row, streams[row.stream]) for row in message.txn_events]
        except IndexError:
            raise WireError("undecodable", "keyed: stream index out of range") from None
    else:
        assert type(message) is KeyedMessage
        events = unpack_events(message.events)
        txn_events = unpack_events(message.txn_events)
    return _items(events, message.event_masks, message.transactions, txn_events)


def _items(
    events: list[Event], masks: list[int], transactions: list[KeyedTxn], txn_events: list[Event]
) -> tuple[list[tuple[Event, int]], list[tuple[Transaction, float, int]]]:
    """:func:`keyed_items` once the events are read. Raises WireError ``undecodable`` if they do not add up."""
    if len(masks) != len(events):
        raise WireError("undecodable", "keyed: one mask per event expected")
    if sum(t.gateway + t.app for t in transactions) != len(txn_events):
        raise WireError("undecodable", "keyed: transaction event counts do not match")
    txns: list[tuple[Transaction, float, int]] = []
    at = 0
    for txn in transactions:
        gateway = tuple(txn_events[at:at + txn.gateway])
        at += txn.gateway
        app = tuple(txn_events[at:at + txn.app])
        at += txn.app
        if not gateway and not app:
            raise WireError("undecodable", "keyed: a transaction without events")
        txns.append((Transaction(txn.request_id, gateway, app), txn.deadline, txn.mask))
    return list(zip(events, masks)), txns


Item = TypeVar("Item", Event, Transaction)
Entry = tuple[float, str, int, Item, int]
"""A buffered item: its time (an event's ts, a transaction's deadline), its id, its arrival number, itself, its mask."""


class _TickBuckets(Generic[Item]):
    """Buffered items by the tick that takes them (``tick_of`` their time), each tick's taken sorted.

    A heap took each item in time order at a push and a pop of O(log n) tuple comparisons each;
    the items of a tick only ever leave together, so they are appended to their tick's list and
    sorted once when it is taken, in the heap's order: (time, id, arrival).
    """

    def __init__(self, tick_of: Callable[[float], int]) -> None:
        self._tick_of = tick_of
        self._buckets: dict[int, list[Entry[Item]]] = {}
        self._ticks: list[int] = []  # a heap of the buckets' ticks

    def add(self, entry: Entry[Item]) -> None:
        tick = self._tick_of(entry[0])
        bucket = self._buckets.get(tick)
        if bucket is None:
            self._buckets[tick] = [entry]
            heapq.heappush(self._ticks, tick)
        else:
            bucket.append(entry)

    def first_tick(self) -> int:
        """The earliest tick holding an item."""
        return self._ticks[0]

    def take_below(self, limit: float) -> list[Entry[Item]]:
        """Every item whose time is < ``limit``, in order."""
        return self._take(math.ceil(limit) - 1, limit, strict=True)

    def take_through(self, limit: float) -> list[Entry[Item]]:
        """Every item whose time is <= ``limit``, in order."""
        return self._take(limit if math.isinf(limit) else math.ceil(limit), limit, strict=False)

    def _take(self, last: float, limit: float, *, strict: bool) -> list[Entry[Item]]:
        ticks, buckets = self._ticks, self._buckets
        due: list[Entry[Item]] = []
        while ticks and ticks[0] <= last:
            due += buckets.pop(heapq.heappop(ticks))
        due.sort()
        if due and (due[-1][0] >= limit if strict else due[-1][0] > limit):
            # Only for a limit that is not a whole tick (an upstream's tick, read from the wire): the
            # last bucket taken holds items past it, which go back.
            at = (bisect.bisect_left if strict else bisect.bisect_right)(due, limit, key=_TIME)
            for entry in due[at:]:
                self.add(entry)
            del due[at:]
        return due

    def entries(self) -> list[Entry[Item]]:
        """Every buffered item, in no particular order."""
        return [entry for bucket in self._buckets.values() for entry in bucket]

    def __bool__(self) -> bool:
        return bool(self._ticks)


_TIME = itemgetter(0)


def _split(entries: list[Entry[Item]]) -> tuple[list[Item], list[int]]:
    """Buffered entries' items, and their masks, in the entries' order."""
    return [entry[3] for entry in entries], [entry[4] for entry in entries]


class KeyedTask:
    """Reads ``<group_id>-keyed/<partition>``; writes findings and gathered rows."""

    role: Role = "keyed"

    def __init__(self, config: GatewatchConfig, partition: int, partitions: int) -> None:
        self.config = config
        self.partition = partition
        self.partitions = partitions
        self._stream = f"{internal_topic(config.kafka, 'keyed')}/{partition}"
        requests = internal_topic(config.kafka, "requests")
        self._sources = [f"{requests}/{p}" for p in range(partitions)]
        self._detectors = DetectorSet(detector_configs(config), detector_context(config), None,
                                      select=lambda cls: cls.keyed_by is not None, sink=self._on_finding,
                                      gathering=True)  # fmt: skip
        for detector in self._detectors.detectors:
            # A transaction holding several entities comes to each one's partition: judge only this one's.
            detector.owns = self._owns  # type: ignore[method-assign]
        # Events by their second, transactions by the tick their deadline falls in; each taken in (ts, id)
        # and (deadline, request_id) order, then arrival: two equal keys (a record sent twice, long after
        # its request closed) must never fall through to comparing the records.
        self._events: _TickBuckets[Event] = _TickBuckets(math.floor)
        self._txns: _TickBuckets[Transaction] = _TickBuckets(math.ceil)
        self._pushed = 0
        self._tick: float | None = None
        self._at_tick: float | None = None  # the lifecycle tick of findings raised now
        self._upstreams = Upstreams(self._sources)
        self._seq = 0
        self._sent_tick: float | None = None
        self._final = False
        self._next_offset = 0
        self._findings: list[FindingRow] = []
        self._gathered: list[GatheredRows] = []
        self._out = TaskOutput()
        self._final_sent = False

    # -- the contract (gatewatch.tasks.base) --------------------------------------------------

    @property
    def next_offset(self) -> int:
        return self._next_offset

    @property
    def watermark(self) -> float:
        return float("-inf") if self._tick is None else self._tick

    @property
    def tick(self) -> float | None:
        return self._tick

    def apply(self, offset: int, value: bytes) -> None:
        """One keyed message from a JOIN task: buffer its items, then process up to the frontier."""
        out = self._out
        if offset < self._next_offset:
            out.redelivered += 1
            return
        self._next_offset = offset + 1
        out.applied += 1
        received = receive(out, self._stream, self._upstreams, offset, value, decode_keyed_message, keyed_items,
                           "JOIN task")  # fmt: skip
        if received is None:
            return
        _, (events, txns) = received
        out.records += len(events) + len(txns)
        tick = self._tick
        for event, mask in events:
            if tick is not None and math.floor(event.ts) < tick:
                self._late_event(event, mask)
            else:
                self._pushed += 1
                self._events.add((event.ts, event.id, self._pushed, event, mask))
        for txn, deadline, mask in txns:
            if tick is not None and deadline <= tick:
                self._late_transaction(txn, mask)
            else:
                self._pushed += 1
                self._txns.add((deadline, txn.request_id, self._pushed, txn, mask))
        self._run()
        self._send()

    def take(self) -> TaskOutput:
        out, self._out = self._out, TaskOutput()
        out.detector_errors.update(self._detectors.errors)
        self._detectors.errors.clear()
        return out

    def snapshot(self) -> bytes:
        detectors = {d.rule_id: msgspec.Raw(encode_state(d.state())) for d in self._detectors.detectors}
        buffered, buffered_txns = self._events.entries(), self._txns.entries()
        events, masks = _split(buffered)
        txns = [KeyedTxn(txn.request_id, deadline, mask, len(txn.gateway), len(txn.app))
                for deadline, _, _, txn, mask in buffered_txns]  # fmt: skip
        txn_events = [event for _, _, _, txn, _ in buffered_txns for event in txn.gateway + txn.app]
        state = KeyedState(self._next_offset, detectors, self._tick, encode_event_state(events), masks, txns,
                           encode_event_state(txn_events), self._upstreams.seqs, self._upstreams.ticks,
                           sorted(self._upstreams.final), self._seq, self._sent_tick, self._final)  # fmt: skip
        return encode_task_state(state)

    @classmethod
    def restore(cls, config: GatewatchConfig, partition: int, partitions: int, snapshot: bytes) -> KeyedTask:
        version, state = decode_task_state(snapshot)
        if type(state) is not KeyedState:
            raise WireError("unknown_kind", f"a {type(state).__name__} is no KEYED task's checkpoint")
        task = cls(config, partition, partitions)
        detectors = task._detectors.detectors
        for detector in detectors:
            saved = state.detectors.get(detector.rule_id)
            if saved is not None and detector.State is not None:
                detector.restore_state(decode_state(saved, detector.State))
        packed = version == 1  # its events in EventTables
        events, txns = _items(decode_event_state(state.events, packed), state.event_masks, state.transactions,
                              decode_event_state(state.txn_events, packed))  # fmt: skip
        for n, (event, mask) in enumerate(events):
            task._events.add((event.ts, event.id, n, event, mask))
        for n, (txn, deadline, mask) in enumerate(txns, len(events)):
            task._txns.add((deadline, txn.request_id, n, txn, mask))
        task._pushed = len(events) + len(txns)
        task._tick, task._next_offset = state.tick, state.next_offset
        task._upstreams = Upstreams(task._sources, state.upstream_seqs, state.upstream_ticks, state.upstream_final)
        task._seq, task._sent_tick, task._final = state.seq, state.sent_tick, state.final
        task._final_sent = state.final
        return task

    def finish(self) -> None:
        """Nothing of its own: a KEYED task ends when every JOIN task's final message is in."""

    # -- internals -----------------------------------------------------------------------------

    def _owns(self, key: str) -> bool:
        return entity_partition(key, self.partitions) == self.partition

    def _on_finding(self, finding: Finding) -> None:
        self._findings.append(finding_row(self._at_tick, finding))

    def _run(self) -> None:
        final = self._upstreams.all_final and not self._final
        frontier = self._upstreams.newest() if final else self._upstreams.frontier()
        if frontier is not None:
            self._advance(frontier)
        if final:
            self._finish()

    def _advance(self, frontier: float) -> None:
        events, txns, detectors = self._events, self._txns, self._detectors
        if self._tick is None:
            start = frontier
            if events:
                start = min(start, events.first_tick())  # the oldest event's second
            if txns:
                start = min(start, txns.first_tick() - 1)  # the tick before the earliest deadline's
            self._tick = start
        tick = self._tick
        while tick < frontier:
            self._at_tick = tick + 1
            second = events.take_below(tick + 1)
            if second:
                detectors.observe_events_masked(*_split(second))
            target = min(frontier, events.first_tick()) if events else frontier
            if target - tick > _MAX_TICKED_GAP_SECS:
                tick = target - 1
            tick += 1
            self._tick = self._at_tick = tick
            closing = txns.take_through(tick)
            if closing:
                detectors.observe_transactions_masked(*_split(closing))
            detectors.advance(tick)
            self._gather(tick, tick)

    def _finish(self) -> None:
        # replay's Pipeline.finish: close every open request, then let every window end
        detectors = self._detectors
        end = self._tick
        self._at_tick = end
        detectors.observe_events_masked(*_split(self._events.take_through(math.inf)))
        detectors.observe_transactions_masked(*_split(self._txns.take_through(math.inf)))
        detectors.advance(float("inf"))
        self._gather(float("inf"), end if end is not None else 0.0)
        self._final = True

    def _gather(self, watermark: float, at_tick: float) -> None:
        for rule_id, rows in self._detectors.gather(watermark).items():
            self._gathered.append(GatheredRows(rule_id, float(at_tick), msgspec.Raw(encode_state(rows))))

    def _late_event(self, event: Event, mask: int) -> None:
        self._out.late += 1
        assert self._tick is not None
        self._at_tick = self._tick + 1
        self._detectors.observe_event_masked(event, mask)

    def _late_transaction(self, txn: Transaction, mask: int) -> None:
        self._out.late += 1
        assert self._tick is not None
        self._at_tick = self._tick + 1
        self._detectors.observe_transaction_masked(txn, mask)

    def _send(self) -> None:
        tick = None if self._tick is None else float(self._tick)  # floats on the wire: the same bytes after a restore
        closing = self._final and not self._final_sent
        if not (self._findings or self._gathered or closing or (tick is not None and tick != self._sent_tick)):
            return
        self._final_sent = self._final
        self._seq += 1
        self._sent_tick = tick
        message = FindingsMessage(self._stream, self._seq, tick, self._findings, self._gathered, self._final)
        self._out.messages.append(("findings", 0, encode_findings(message)))
        self._findings, self._gathered = [], []

