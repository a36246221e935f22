"""An in-memory driver for the partitioned tasks: Kafka's partitions as lists, a seeded scheduler.

Records per input stream are parsed as the ingest stage parses them
(:func:`~gatewatch.topology.parse_records`), routed to P requests partitions
(:mod:`gatewatch.tasks.route`) with a ``progress`` message after each poll,
and every task reads its partition's list in order. Which poll or task runs
next is a seeded random choice, so the messages of different partitions
interleave differently with each seed. ``restarts`` replaces a random task,
mid-stream, by one restored from its last snapshot (or a new one) that
re-reads from that snapshot's offset: the outputs it had produced since
stay in the lists, as they would in Kafka, and come again (same seqs), so
the run also checks that repeats are skipped. At the end every JOIN task is
finished as replay finishes, and the run drains.

:func:`reference` runs the single :class:`~gatewatch.topology.Pipeline` over
the same records as ``replay`` does, for comparison. Used by tests and bench.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import islice
from typing import TYPE_CHECKING, Any

from msgspec.structs import replace

from detectors.alerts import Alert
from detectors.lifecycle import AlertEvent
from gatewatch.tasks.base import Role, Task, TaskOutput, new_task, restore_task
from gatewatch.tasks.route import StreamClocks, progress_message, route_events
from gatewatch.topology import Pipeline, build_parsers, parse_records, read_position
from gatewatch.wire import encode_poll_events
from ingest.records import DeadLetter, Event, Origin, RawRecord, Transaction
from ingest.sinks.base import Batch

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig

WALL_START_SECS = 1_700_000_000.0


@dataclass(slots=True)
class RunResult:
    """What a run stored: the latest version of each alert, lifecycle events once each, transactions once each."""

    alerts: dict[str, Alert] = field(default_factory=dict)
    alert_events: list[AlertEvent] = field(default_factory=list)
    transactions: dict[str, Transaction] = field(default_factory=dict)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    late: int = 0
    redelivered: int = 0
    rejected: int = 0
    messages: dict[str, int] = field(default_factory=dict)  # role -> messages written to that topic
    restarts: int = 0  # tasks replaced mid-stream
    alert_events_before_finish: int = 0  # lifecycle events out before the inputs ended
    _event_ids: dict[str, AlertEvent] = field(default_factory=dict)

    def store(self, batch: Batch) -> None:
        """Upsert a batch as a store does: by id, the last version wins; a repeated lifecycle event must be equal."""
        self.alerts.update(batch.alerts)
        for txn in batch.transactions:
            self.transactions[txn.id] = txn
        self.dead_letters += batch.dead_letters
        for event in batch.alert_events:
            seen = self._event_ids.get(event.id)
            if seen is None:
                self._event_ids[event.id] = event
                self.alert_events.append(event)
            elif seen.to_document() != event.to_document():
                raise AssertionError(f"lifecycle event {event.id} re-sent with other contents")


class LocalRun:
    """P partitions of every internal topic, in memory; see the module docstring."""

    def __init__(self, config: GatewatchConfig, partitions: int, *, seed: int = 0, poll_records: int = 64,
                 wall_step_secs: float = 0.001, restarts: int = 0, batch_messages: int = 3,
                 checkpoint_chance: float = 0.1) -> None:  # fmt: skip
        self.config = config
        self.partitions = partitions
        self.rng = random.Random(seed)
        self.poll_records = poll_records
        self.wall_step_secs = wall_step_secs
        self.restarts = restarts
        self.batch_messages = batch_messages
        self.checkpoint_chance = checkpoint_chance  # after a step, how often the task is snapshotted
        self.logs: dict[tuple[Role, int], list[bytes]] = {}
        self.tasks: dict[tuple[Role, int], Task] = {}
        self.checkpoints: dict[tuple[Role, int], bytes] = {}
        self.result = RunResult()
        self._streams: list[str] = []

    def run_records(self, records: dict[str, Sequence[RawRecord]], poison: Sequence[tuple[Role, int, bytes]] = (),
                    finish: bool = True) -> RunResult:  # fmt: skip
        """Parse and run raw records per input stream (``"topic/partition"`` or a file name).

        ``poison``: messages to slip into internal topics at random points.
        ``finish=False`` stops once every message is read, before the end of
        input; :meth:`finish` then ends the run.
        """
        parsers = build_parsers(self.config)

        def parse(chunk: Sequence[RawRecord]) -> list[Event]:
            events, dead_letters = parse_records(parsers, chunk)
            self.result.dead_letters += dead_letters
            return events

        return self._run({s: list(r) for s, r in records.items()}, parse, poison, finish)

    def run_events(self, events: dict[str, Sequence[Event]], poison: Sequence[tuple[Role, int, bytes]] = (),
                   finish: bool = True) -> RunResult:  # fmt: skip
        """Run parsed events per input stream (each stream's in offset order); as :meth:`run_records`."""
        return self._run({s: list(e) for s, e in events.items()}, list, poison, finish)

    def finish(self) -> RunResult:
        """End of input: finish every JOIN task (in a random order) as replay ends, and drain."""
        self.result.alert_events_before_finish = len(self.result.alert_events)
        joins = [key for key in self.tasks if key[0] == "requests"]
        self.rng.shuffle(joins)
        for key in joins:
            self._drain()
            self.tasks[key].finish()
            self._route(self.tasks[key].take())
        self._drain()
        return self.result

    # -- internals -----------------------------------------------------------------------------

    def _run(self, inputs: dict[str, list[Any]], parse: Any, poison: Sequence[tuple[Role, int, bytes]],
             finish: bool) -> RunResult:  # fmt: skip
        rng, partitions = self.rng, self.partitions
        self._streams = list(inputs)
        for role in ("requests", "keyed", "findings"):
            for partition in range(1 if role == "findings" else partitions):
                self.logs[(role, partition)] = []
                self.tasks[(role, partition)] = new_task(self.config, role, partition, partitions, self._streams)
        clocks = StreamClocks(self.config.correlate.max_future_secs)
        read = dict.fromkeys(inputs, 0)
        wall = WALL_START_SECS
        pending_poison = list(poison)
        restarts = self.restarts
        while True:
            ready = [key for key, task in self.tasks.items() if task.next_offset < len(self.logs[key])]
            streams = [stream for stream, items in inputs.items() if read[stream] < len(items)]
            if not ready and not streams:
                break
            if pending_poison and rng.random() < 0.05:
                role, partition, value = pending_poison.pop(rng.randrange(len(pending_poison)))
                self.logs[(role, partition)].append(value)
                continue
            if restarts and ready and rng.random() < 0.05:
                restarts -= 1
                self._restart(rng.choice(ready))
                continue
            if streams and (not ready or rng.random() < 0.3):
                stream = rng.choice(streams)
                size = rng.randint(1, self.poll_records)
                chunk = inputs[stream][read[stream]:read[stream] + size]
                read[stream] += len(chunk)
                wall += self.wall_step_secs
                self._ingest(stream, parse(chunk), wall, clocks, read, inputs)
            else:
                self._step(rng.choice(ready))
        for role, partition, value in pending_poison:
            self.logs[(role, partition)].append(value)
        self._drain()
        return self.finish() if finish else self.result

    def _ingest(self, stream: str, events: list[Event], wall: float, clocks: StreamClocks, read: dict[str, int],
                inputs: dict[str, list[Any]]) -> None:  # fmt: skip
        # A poll_events message's events are read from its stream (the JOIN task checks their origins): an
        # input named apart from its records' origins (a file run as "gateway/0") lends them its name.
        events = [e if e.origin.stream == stream else replace(e, origin=Origin(e.dataset, stream, e.origin.offset))
                  for e in events]  # fmt: skip
        clocks.observe(stream, events, wall)
        for partition, rows in route_events(events, self.partitions):
            self.logs[("requests", partition)].append(encode_poll_events(wall, [(stream, rows)]))
        progress = progress_message(wall, clocks, {s: (read[s], len(inputs[s])) for s in inputs})
        for partition in range(self.partitions):
            self.logs[("requests", partition)].append(progress)

    def _step(self, key: tuple[Role, int]) -> None:
        task, log = self.tasks[key], self.logs[key]
        for _ in range(self.rng.randint(1, self.batch_messages)):
            offset = task.next_offset
            if offset >= len(log):
                break
            task.apply(offset, log[offset])
        self._route(task.take())
        if self.checkpoint_chance and self.rng.random() < self.checkpoint_chance:
            self.checkpoints[key] = task.snapshot()

    def _route(self, out: TaskOutput) -> None:
        result = self.result
        for role, partition, value in out.messages:
            self.logs[(role, partition)].append(value)
            result.messages[role] = result.messages.get(role, 0) + 1
        result.store(out.batch)
        result.late += out.late
        result.redelivered += out.redelivered
        result.rejected += out.rejected

    def _restart(self, key: tuple[Role, int]) -> None:
        role, partition = key
        self.result.restarts += 1
        saved = self.checkpoints.get(key)
        if saved is None:
            task = new_task(self.config, role, partition, self.partitions, self._streams)
        else:
            task = restore_task(self.config, role, partition, self.partitions, saved)
        self.tasks[key] = task

    def _drain(self) -> None:
        while True:
            ready = [key for key, task in self.tasks.items() if task.next_offset < len(self.logs[key])]
            if not ready:
                return
            self._step(self.rng.choice(ready))


def reference(config: GatewatchConfig, inputs: dict[str, Sequence[RawRecord]] | None = None,
              events: dict[str, Sequence[Event]] | None = None, chunk: int = 512) -> RunResult:  # fmt: skip
    """The single pipeline over the same inputs, read as ``gatewatch replay`` reads files."""
    pipeline = Pipeline(config)
    result = RunResult()
    readers: dict[str, Any] = {}
    for stream, items in (inputs or events or {}).items():
        readers[stream] = iter(items)
        pipeline.open_stream(stream)
    positions = dict.fromkeys(readers, -math.inf)
    while readers:
        stream = min(readers, key=positions.__getitem__)
        part = list(islice(readers[stream], chunk))
        if not part:
            del readers[stream]
            pipeline.close_stream(stream)
        if inputs is not None:
            positions[stream] = read_position(pipeline.feed(part), positions[stream])
        else:
            pipeline.order_events(part)
            positions[stream] = read_position(part, positions[stream])
        pipeline.process()
        result.store(pipeline.drain())
    pipeline.finish()
    result.store(pipeline.drain())
    result.late = pipeline.stats.late_events
    return result
