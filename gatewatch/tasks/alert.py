"""The ALERT task (one): alert book, lifecycle, and the model half of gathering rules.

It reads the findings topic, written by every JOIN and KEYED task. A finding
goes into the alert book on arrival (the alert is upserted to the store at
once); its lifecycle step waits for the tick the single pipeline would have
seen it at (each finding carries it). The task's frontier F is the minimum
over every upstream task (P JOIN + P KEYED) of the latest tick it sent; for
each tick T up to F, as :class:`~gatewatch.topology.Pipeline` does at T:

1. the findings whose lifecycle tick is <= T enter the lifecycle;
2. gathering rules judge the rows gathered for T from every keyed partition
   (``behaviour_outlier``'s model over all clients of the windows ending by T:
   the same seed, sorted rows and explanations as in one process);
3. ``alert_book.expire(T)``, ``lifecycle.advance(T)`` -> lifecycle events.
"""

from __future__ import annotations

import heapq
import math
from typing import TYPE_CHECKING, Any

import msgspec

from detectors.alerts import AlertBook
from detectors.base import Finding
from detectors.lifecycle import AlertLifecycle
from detectors.runner import DetectorSet
from gatewatch.errors import WireError
from gatewatch.tasks.base import Role, TaskOutput, Upstreams, internal_topic, receive
from gatewatch.topology import _MAX_TICKED_GAP_SECS, detector_configs, detector_context, lifecycle_settings
from gatewatch.wire import (
    AlertTaskState, FindingRow, FindingsMessage, GatheredRows, decode_findings_message, decode_task_state, finding_row,
    encode_task_state,
)  # fmt: skip
from ingest.codec import decode_state, encode_state

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig


def _finding(row: FindingRow) -> Finding:
    return Finding(row.rule, row.severity, row.entity_type, row.entity_value, row.ts, row.summary,
                   tuple(row.request_ids), row.reason, row.details, row.key, row.window_ts)  # fmt: skip


class AlertTask:
    """Reads ``<group_id>-findings/0``; writes alert upserts and lifecycle events to the store batch."""

    role: Role = "findings"
    partition = 0

    def __init__(self, config: GatewatchConfig, partitions: int) -> None:
        self.config = config
        self.partitions = partitions
        kafka = config.kafka
        self._stream = f"{internal_topic(kafka, 'findings')}/0"
        self._sources = [f"{internal_topic(kafka, role)}/{p}"
                         for role in ("requests", "keyed") for p in range(partitions)]  # fmt: skip
        self._book = AlertBook(config.alerts.suppression_window_secs, config.alerts.max_request_ids)
        self._settings = lifecycle_settings(config, self._book)
        self._lifecycle = AlertLifecycle(**self._settings)
        self._judges = DetectorSet(detector_configs(config), detector_context(config), None,
                                   select=lambda cls: cls.Row is not None, sink=self._on_judged)  # fmt: skip
        self._row_types = {d.rule_id: list[d.Row] for d in self._judges.detectors}  # type: ignore[name-defined]
        self._pending: list[tuple[float, int, Finding, str]] = []  # heap by lifecycle tick
        self._pending_n = 0
        self._gathered: list[tuple[float, int, str, list[Any]]] = []  # heap by tick: (tick, n, rule, rows)
        self._gathered_n = 0
        self._tick: float | None = None
        self._upstreams = Upstreams(self._sources)
        self._final = False
        self._next_offset = 0
        self._fresh = True  # built empty, not restored: see apply()
        self.sent_before = False  # the alerts topic already holds events (an upgrade): see apply()
        self._out = TaskOutput()

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
        """One findings message from a JOIN or KEYED task."""
        out = self._out
        if offset < self._next_offset:
            out.redelivered += 1
            return
        self._next_offset = offset + 1
        out.applied += 1
        if self._fresh:
            self._fresh = False
            if offset > 0 or self.sent_before:
                # Empty state part way through the topic (state_fresh), or at its start with events sent
                # before it existed (an upgrade from the single detect topic): the alerts sent before may
                # go on, counted from 1 again, so their events take ids of their own.
                self._lifecycle.epoch = str(offset)
        received = receive(out, self._stream, self._upstreams, offset, value, decode_findings_message,
                           self._gathered_rows, "task")  # fmt: skip
        if received is None:
            return
        message, gathered = received
        out.records += len(message.findings) + len(gathered)
        for row in message.findings:
            finding = _finding(row)
            at_tick = float("-inf") if row.at_tick is None else row.at_tick
            alert = self._book.add(finding)
            out.batch.alerts[alert.id] = alert
            if self._tick is not None and at_tick <= self._tick:
                self._lifecycle.add(finding, alert.id)  # its tick has passed here: a late finding
            else:
                self._pending_n += 1
                heapq.heappush(self._pending, (at_tick, self._pending_n, finding, alert.id))
        for at_tick, rule, rows in gathered:
            self._gathered_n += 1
            heapq.heappush(self._gathered, (at_tick, self._gathered_n, rule, rows))
        self._run()

    def take(self) -> TaskOutput:
        out, self._out = self._out, TaskOutput()
        out.detector_errors.update(self._judges.errors)
        self._judges.errors.clear()
        return out

    def snapshot(self) -> bytes:
        pending = [(finding_row(at_tick if math.isfinite(at_tick) else None, finding), alert_id)
                   for at_tick, _, finding, alert_id in sorted(self._pending, key=lambda p: p[:2])]  # fmt: skip
        gathered = [GatheredRows(rule, at_tick, msgspec.Raw(encode_state(rows)))
                    for at_tick, _, rule, rows in sorted(self._gathered, key=lambda g: g[:2])]  # fmt: skip
        state = AlertTaskState(self._next_offset, msgspec.Raw(encode_state(self._book.state())),
                               self._lifecycle.to_state(), self._tick, pending, gathered, self._upstreams.seqs,
                               self._upstreams.ticks, sorted(self._upstreams.final), self._final)  # fmt: skip
        return encode_task_state(state)

    @classmethod
    def restore(cls, config: GatewatchConfig, partitions: int, snapshot: bytes) -> AlertTask:
        _, state = decode_task_state(snapshot)
        if type(state) is not AlertTaskState:
            raise WireError("unknown_kind", f"a {type(state).__name__} is no ALERT task's checkpoint")
        task = cls(config, partitions)
        task._fresh = False
        task._book.restore_state(decode_state(state.alert_book, AlertBook.State))
        if not isinstance(state.lifecycle, dict):
            raise WireError("undecodable", "alert_state: the lifecycle is not a map")
        try:
            task._lifecycle = AlertLifecycle.from_state(state.lifecycle, **task._settings)
        except (KeyError, TypeError, AttributeError) as error:
            raise ValueError(f"alert_state: lifecycle: {error}") from None
        for row, alert_id in state.pending:
            task._pending_n += 1
            at_tick = float("-inf") if row.at_tick is None else row.at_tick
            task._pending.append((at_tick, task._pending_n, _finding(row), alert_id))
        for gathered in state.gathered:
            task._gathered_n += 1
            task._gathered.append((gathered.at_tick, task._gathered_n, gathered.rule, task._rows(gathered)))
        task._tick, task._next_offset = state.tick, state.next_offset
        task._upstreams = Upstreams(task._sources, state.upstream_seqs, state.upstream_ticks, state.upstream_final)
        task._final = state.final
        return task

    def finish(self) -> None:
        """Nothing of its own: the ALERT task ends when every upstream task's final message is in."""

    # -- internals -----------------------------------------------------------------------------

    def _gathered_rows(self, message: FindingsMessage) -> list[tuple[float, str, list[Any]]]:
        return [(gathered.at_tick, gathered.rule, self._rows(gathered)) for gathered in message.gathered]

    def _rows(self, gathered: GatheredRows) -> list[Any]:
        row_type = self._row_types.get(gathered.rule)
        if row_type is None:
            raise WireError("undecodable", f"rows of {gathered.rule[:64]!r}, which gathers nothing here")
        return decode_state(gathered.rows, row_type)

    def _on_judged(self, finding: Finding) -> None:
        alert = self._book.add(finding)
        self._out.batch.alerts[alert.id] = alert
        self._lifecycle.add(finding, alert.id)

    def _run(self) -> None:
        final = self._upstreams.all_final and not self._final
        frontier = self._upstreams.newest() if final else self._upstreams.frontier()
        if frontier is not None:
            self._advance(frontier)
        if final:
            self._finish()

    def _advance(self, frontier: float) -> None:
        pending, gathered = self._pending, self._gathered
        if self._tick is None:
            # the single pipeline's lifecycle folds a finding at the first tick past it: start no later
            firsts = [frontier] + [math.floor(f.ts) for _, _, f, _ in pending]
            firsts += [t for t, _, _, _ in pending if math.isfinite(t)] + [g[0] for g in gathered]
            self._tick = min(firsts) - 1
        tick = self._tick
        book, lifecycle, events = self._book, self._lifecycle, self._out.batch.alert_events
        while tick < frontier:
            target = frontier
            if pending and math.isfinite(pending[0][0]):
                target = min(target, pending[0][0])
            if target - tick > _MAX_TICKED_GAP_SECS:
                tick = target - 1
            tick += 1
            self._tick = tick
            while pending and pending[0][0] <= tick:
                _, _, finding, alert_id = heapq.heappop(pending)
                lifecycle.add(finding, alert_id)
            self._judge(tick)
            book.expire(tick)
            events.extend(lifecycle.advance(tick))

    def _judge(self, tick: float) -> None:
        gathered = self._gathered
        rows: dict[str, list[Any]] = {}
        while gathered and gathered[0][0] <= tick:
            _, _, rule, part = heapq.heappop(gathered)
            rows.setdefault(rule, []).extend(part)
        if rows:
            self._judges.judge(tick, rows)

    def _finish(self) -> None:
        # replay's Pipeline.finish: the last findings, every window judged, then the lifecycle runs out
        while self._pending:
            _, _, finding, alert_id = heapq.heappop(self._pending)
            self._lifecycle.add(finding, alert_id)
        self._judge(float("inf"))
        if self._tick is not None:
            self._out.batch.alert_events.extend(self._lifecycle.finish(self._tick))
        self._final = True
