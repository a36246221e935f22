"""Stage 2 of ``gatewatch serve``, "detect": one total order, one owner, checkpointed.

A second consumer, in group ``<group_id>-detect``, reads the internal topic
``<group_id>-detect`` that every ingest stage writes (see
:mod:`gatewatch.serve_ingest`). The topic has one partition, so exactly one
serve process runs detection at a time; the others stand by in the group and
take over on a rebalance (leave, crash, session timeout). One step::

    poll -> events: Pipeline.order_events / progress: advance quiet inputs
         -> process -> drain -> store transactions + alerts; lifecycle events to the alerts topic
         -> (every kafka.checkpoint_interval_secs) checkpoint -> commit

Why this is exact: the pipeline's output depends only on each input's records
in offset order (chunking, interleaving of inputs, re-delivery and
snapshot/restore do not change it), and the detect topic keeps every input in
offset order. Records re-produced after an ingest crash are at or below the
highest offset seen on their input and are skipped. So one process or
several, with or without failovers, raise the same alerts as ``gatewatch
replay`` over the same records.

Messages and checkpoints are typed MessagePack (:mod:`gatewatch.wire`), never
pickle. A message that does not decode (``undecodable``), has an unknown
version or kind, or names a stream that is no input partition
(``unknown_stream``) is poison: it becomes a dead letter whose origin is the
detect topic's partition and offset, is counted and logged, and is skipped;
its offset is passed like any other's, so the stage (and a standby taking
over) never stops on it.

Checkpoints: the state (``Pipeline.snapshot()`` plus the per-input wall and
event times below, :class:`gatewatch.wire.DetectState`) is saved with the
detect-topic offset it covers, keyed by the detect partition (so a rebalance
never orphans it), then that offset is committed. The new owner restores the
latest checkpoint whose state decodes (else the one before it) and seeks to
its offset; without a usable one (none yet, config changed, state that does
not decode, the retired pickle format) it starts from the committed offset
with empty state and logs ``state_fresh``. Outputs re-made after a failover
have the same ids, so storing them again is harmless.

Inputs and the watermark: with fresh state every input partition (from the
topics' metadata) is opened, so none that still has a backlog to deliver lets
the watermark run ahead of it. Progress messages then say which inputs are
caught up (``position == end``), and :mod:`gatewatch.serve_idle` decides, the
way Flink's source idleness does, when a caught-up, quiet input stops holding
the watermark: it is advanced to the newest event time two inputs reached
(with every input quiet, that front moves on at wall-clock speed); one that
never delivered is closed. Records it delivers later are ordered if the
watermark has not passed them, else counted late, never dropped. Measured on a
backlog where one of four partitions ends 9 minutes of event time before the
others, the watermark reached the newest event time minus the lateness 2.2 s
after the backlog was read with ``idle_timeout_secs`` 2 and 11 s with the
default 10, where it used to take those 9 minutes at wall-clock speed
(tests/integration/test_serve_idle_kafka.py).

The rules use the wall times written by the ingest stage into the messages,
not this process's clock, and their state is checkpointed, so re-reading the
topic after a failover takes the same decisions at the same points.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import Counter
from collections.abc import Iterable
from typing import Any

import orjson
from kafka import ConsumerRebalanceListener, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from gatewatch.checkpoint import Checkpoint, CheckpointStore, ensure_topic
from gatewatch.errors import SourceError, WireError
from gatewatch.forward import ForwarderSet, build_forwarders
from gatewatch.serve_ingest import DETECT_MAX_MESSAGE_BYTES, detect_topic, ensure_detect_topic
from gatewatch.serve_idle import IdleInputs
from gatewatch.serve_stage import Shared, Stopped, deliver, kv
from gatewatch.topology import Pipeline
from gatewatch.wire import (
    EventsMessage, PartitionProgress, decode_detect_message, decode_detect_state, encode_detect_state,
)  # fmt: skip
from ingest.codec import events_from_rows
from ingest.records import Dataset, DeadLetter, Origin
from ingest.sinks.base import Batch
from ingest.sources.kafka import commit_offsets, consumer_settings, static_membership, stream_name
from ingest.sources.kafka_client import STICKY_ASSIGNMENT, release_parked_fetches, subscribe
from ingest.sources.kafka_settings import client_settings

log = logging.getLogger("gatewatch.serve")

# A checkpoint may take at most this share of the loop's time: with a big state
# (a long allowed lateness at a high rate) the interval stretches to match.
CHECKPOINT_MAX_TIME_SHARE = 0.05
# Up to 5 x DETECT_EVENTS_PER_MESSAGE events per step: a step of ~1 s at most, so the
# consumer polls often enough to take part in a rebalance promptly.
DETECT_POLL_MESSAGES = 5
POLL_TIMEOUT_SECS = 0.2
LAG_INTERVAL_SECS = 5.0
# Bounds end_offsets (lag, the drain target): without it each try waits the whole request
# timeout (30 s) while the broker is away, and the stage neither polls nor checkpoints meanwhile.
END_OFFSET_TIMEOUT_SECS = 5.0
# On stop, read the detect topic to its end for at most this long: well inside a
# 30 s termination grace period, with room for the final checkpoint. Whatever is
# left is read by the next owner from the checkpoint.
DRAIN_TIMEOUT_SECS = 15.0
# A detect message that does not decode is kept as a dead letter, its first bytes only
# (a message may hold 64 MiB; what it is can be told from far less).
POISON_KEPT_BYTES = 64 * 1024


def checkpoint_interval_secs(configured_secs: float, previous_save_secs: float, last_save_secs: float) -> float:
    """The interval until the next checkpoint: stretched so saving takes at most CHECKPOINT_MAX_TIME_SHARE.

    Stretched on the cheaper of the last two saves: a big state makes every save
    slow, while one slow save alone is a wait (the broker away, a load spike), not
    the state's cost. Stretching on such a wait stopped the checkpoints, and with
    them the detect group's commits, for minutes: a save that waited 24 s through
    a broker restart set the next one 8 minutes later.
    """
    return max(configured_secs, min(previous_save_secs, last_save_secs) / CHECKPOINT_MAX_TIME_SHARE)


class _Listener(ConsumerRebalanceListener):
    """Runs on kafka-python's event loop: only pauses and records; the stage acts after ``poll``."""

    def __init__(self, stage: DetectStage) -> None:
        self._stage = stage

    def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        with self._stage._lock:
            self._stage._revoked |= set(revoked)
            self._stage._assigned = None  # unknown until the group has synced
            self._stage._rebalanced = True

    def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        assigned = set(assigned)
        if assigned:
            self._stage._consumer.pause(*assigned)  # type: ignore[union-attr]
        with self._stage._lock:
            self._stage._assigned = assigned
            self._stage._rebalanced = True


class DetectStage:
    """The detect consumer, the pipeline it owns while it holds the detect partition, and its checkpoints."""

    def __init__(self, shared: Shared, digest: str) -> None:
        self.shared = shared
        self.config = shared.config
        self._digest = digest
        kafka = self.config.kafka
        self.topic = detect_topic(kafka)
        self._tp = TopicPartition(self.topic, 0)
        self._stream = stream_name(self._tp)
        self._consumer: KafkaConsumer | None = None
        self._checkpoints: CheckpointStore | None = None
        self._alerts: KafkaProducer | None = None
        self._forwarders: ForwarderSet | None = None
        self._lock = threading.Lock()
        self._revoked: set[TopicPartition] = set()
        self._assigned: set[TopicPartition] | None = None  # as the group last assigned; None: not (yet) known
        self._rebalanced = False
        self.owner = False
        self._state_valid = False  # the pipeline matches _next_offset (kept across a revoke + same re-assign)
        self._pipeline = Pipeline(self.config)
        self._idle = IdleInputs(self.config.correlate.idle_timeout_secs)
        self._next_offset = 0
        self._dirty = False
        self._delivering = False
        self._detector_errors: dict[str, int] = {}
        self._poison: list[DeadLetter] = []  # rejected messages, stored with the next delivery
        self._input_topics = {kafka.topics.gateway, kafka.topics.app}
        self._last_checkpoint_at = time.monotonic()
        self._checkpoint_interval_secs = self.config.kafka.checkpoint_interval_secs
        self._last_save_secs = 0.0  # how long the last checkpoint took (0: none yet)
        self._last_lag_at = 0.0
        self.loop_at = time.monotonic()

    def open(self) -> None:
        kafka = self.config.kafka
        ensure_detect_topic(kafka)
        self._checkpoints = CheckpointStore(kafka)
        ensure_topic(kafka, kafka.topics.alerts)  # else the first alert's send logs an error while auto-creating
        self._alerts = KafkaProducer(
            client_id=f"gatewatch-{kafka.group_id}-alerts",
            acks="all",
            linger_ms=5,
            **client_settings(kafka),
        )
        self._forwarders = build_forwarders(self.config, self._count_forwarded)
        group = f"{kafka.group_id}-detect"
        self._consumer = KafkaConsumer(
            group_id=group,
            client_id=f"gatewatch-{group}",
            **consumer_settings(
                kafka,
                max_poll_records=DETECT_POLL_MESSAGES,
                max_partition_fetch_bytes=DETECT_MAX_MESSAGE_BYTES,
                fetch_max_bytes=DETECT_MAX_MESSAGE_BYTES,
                # Sticky: a member joining the group leaves the detect partition with its owner,
                # which keeps its state, instead of handing it over to restore from the checkpoint.
                partition_assignment_strategy=STICKY_ASSIGNMENT,
                **static_membership(kafka, "detect"),
            ),
        )
        partitions = self._consumer.partitions_for_topic(self.topic)
        if partitions is not None and len(partitions) != 1:
            raise SourceError(f"{self.topic} has {len(partitions)} partitions: the detect topic must have exactly one")
        subscribe(self._consumer, [self.topic], _Listener(self))

    def close(self) -> None:
        if self._consumer is not None:
            try:
                self._consumer.close(autocommit=False)
            except KafkaError:
                pass
            self._consumer = None
        if self._checkpoints is not None:
            self._checkpoints.close()
            self._checkpoints = None
        if self._alerts is not None:
            try:
                self._alerts.close(timeout=5)
            except KafkaError:
                pass
            self._alerts = None
        if self._forwarders is not None:
            self._forwarders.close()
            self._forwarders = None

    # -- the loop ---------------------------------------------------------------

    def run(self, ingest_done: threading.Event) -> None:
        """Loop until the ingest stage has stopped, then read to the topic's end (if owner) and checkpoint."""
        target: int | None = None
        deadline = 0.0
        while not self.shared.abort.is_set():
            if ingest_done.is_set():
                if target is None:
                    target = self._end_offset() if self.owner else -1
                    deadline = time.monotonic() + DRAIN_TIMEOUT_SECS
                    log.info(kv("draining", stage="detect", owner=self.owner, to_offset=target))
                if not self.owner or self._next_offset >= target or time.monotonic() > deadline:
                    break
            self.step()
        self._shutdown()

    def step(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        self.loop_at = time.monotonic()
        messages = self._poll(POLL_TIMEOUT_SECS)
        if self._rebalanced:
            self._handle_rebalance()
            return  # anything fetched around the rebalance is read again after the seek
        if self.owner:
            if messages:
                self._apply(messages)
            self._flush()
            now = time.monotonic()
            if self._rebalanced:
                return  # seen during a delivery wait: the partition may be someone else's already
            if now - self._last_checkpoint_at >= self._checkpoint_interval_secs:
                self._checkpoint()
            if now - self._last_lag_at >= LAG_INTERVAL_SECS:
                self._update_lag()

    def _poll(self, timeout_secs: float) -> list[Any]:
        consumer = self._consumer
        assert consumer is not None
        release_parked_fetches(consumer)  # the partition is paused on every rebalance and back-pressure
        try:
            polled = consumer.poll(timeout_ms=int(timeout_secs * 1000))
        except KafkaError as error:
            self.shared.metrics.record_error("kafka", "poll")
            log.warning(kv("poll_failed", stage="detect", error=str(error)))
            time.sleep(1.0)
            return []
        self.shared.kafka_ok_at = time.monotonic()  # a detect-only standby polls nothing else
        return polled.get(self._tp, [])

    def _apply(self, messages: list[Any]) -> None:
        pipeline = self._pipeline
        for message in messages:
            if message.offset < self._next_offset:
                continue  # fetched before a seek back
            try:
                value = decode_detect_message(message.value or b"")
                streams = [value.stream] if type(value) is EventsMessage else list(value.partitions)
                unknown = [stream for stream in streams if stream.rpartition("/")[0] not in self._input_topics]
                if unknown:
                    raise WireError("unknown_stream", f"not an input partition: {unknown[0][:200]!r}")
            except WireError as error:
                self._reject(message, error)
            else:
                if type(value) is EventsMessage:
                    if value.events:
                        stream = value.stream
                        events = events_from_rows(stream, value.events)
                        pipeline.order_events(events)
                        self.shared.metrics.detect_events.inc(len(events))
                        # Credible time only: a far-future record held by the order must not be idled forward from.
                        horizon = pipeline.order.horizon
                        newest = max((event.ts for event in events if event.ts <= horizon), default=None)
                        if newest is not None:
                            self._idle.delivered(stream, value.wall_secs, newest)
                else:
                    self._on_progress(value.wall_secs, value.partitions)
            self._next_offset = message.offset + 1
        self._dirty = True

    def _reject(self, message: Any, error: WireError) -> None:
        """A message that does not decode: a dead letter with its origin, counted, logged; the stage goes on.

        Its id derives from the detect topic's name and the offset, so a
        re-read after a failover writes the same dead letter again.
        """
        value = message.value or b""
        detail = error.detail
        if len(value) > POISON_KEPT_BYTES:
            detail += f" (first {POISON_KEPT_BYTES} of {len(value)} bytes kept)"
        self._poison.append(DeadLetter(Origin(Dataset.INTERNAL, self._stream, message.offset), error.reason, detail,
                                       bytes(value[:POISON_KEPT_BYTES])))  # fmt: skip
        self.shared.metrics.record_error("detect", error.reason)
        log.warning(kv("message_rejected", stage="detect", topic=self.topic, partition=self._tp.partition,
                       offset=message.offset, reason=error.reason, bytes=len(value)))  # fmt: skip

    def _on_progress(self, wall: float, progress: dict[str, PartitionProgress]) -> None:
        order = self._pipeline.order
        moves = self._idle.on_progress(wall, {stream: (p.position, p.end_offset) for stream, p in progress.items()})
        for move in moves:
            if move.ts is not None:
                order.advance_stream(move.stream, move.ts)
            elif math.isinf(order.stream_clock(move.stream)):
                order.close_stream(move.stream)

    def _flush(self) -> None:
        """Release what the watermark allows and deliver it."""
        pipeline = self._pipeline
        pipeline.process()
        batch = pipeline.drain()
        if self._poison:
            batch.dead_letters.extend(self._poison)
            self.shared.metrics.record_dead_letters(Counter(letter.reason for letter in self._poison))
            self._poison = []
        stats = pipeline.stats
        metrics = self.shared.metrics
        metrics.sync_pipeline_stats({}, stats.late_events)
        for rule_id, errors in stats.detector_errors.items():
            total = self._detector_errors.get(rule_id, 0)
            if errors > total:
                metrics.record_error("detect", rule_id, errors - total)
                self._detector_errors[rule_id] = errors
        watermark = pipeline.order.watermark
        if math.isfinite(watermark):
            metrics.watermark.set(watermark)
        if len(batch):
            self._deliver(batch)
            self._dirty = True

    def _deliver(self, batch: Batch) -> None:
        done = {"stored": False, "forwarded": not batch.alert_events or self._alerts is None}

        def attempt() -> None:
            if not done["stored"]:
                self.shared.write(batch)
                done["stored"] = True
            if not done["forwarded"]:
                self._forward_alerts(batch)
                done["forwarded"] = True

        self._delivering = True
        try:
            deliver(self.shared, attempt, self._set_backpressure, self._idle_poll, log)
        finally:
            self._delivering = False
        self.shared.metrics.record_stored(batch)
        if self._forwarders is not None:
            self._forwarders.submit(batch.alert_events)  # queued: delivered on the forwarders' own threads

    def _forward_alerts(self, batch: Batch) -> None:
        producer = self._alerts
        assert producer is not None
        topic = self.config.kafka.topics.alerts
        futures = [
            producer.send(topic, key=event.alert.id.encode(), value=orjson.dumps(event.to_document()))
            for event in batch.alert_events
        ]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=0)
        self.shared.metrics.record_alerts_forwarded(len(futures))

    def _count_forwarded(self, forwarder: str, outcome: str, count: int) -> None:
        metrics = self.shared.metrics
        if outcome == "sent":
            metrics.sent_events.labels(component=f"forward_{forwarder}", kind="alert_events").inc(count)
        elif outcome != "filtered":
            metrics.record_error(f"forward_{forwarder}", outcome, count)

    def _set_backpressure(self, paused: bool) -> None:
        consumer = self._consumer
        assert consumer is not None
        if self.owner:
            (consumer.pause if paused else consumer.resume)(self._tp)
        log.log(logging.WARNING if paused else logging.INFO,
                kv("backpressure_on" if paused else "backpressure_off", stage="detect"))  # fmt: skip
        self.shared.metrics.backpressure.set(1 if paused else 0)

    def _idle_poll(self, timeout_secs: float) -> None:
        # Paused: nothing is fetched, the group sees a live member. A rebalance seen here
        # is handled by the next step (the batch in hand is delivered first).
        self.loop_at = time.monotonic()
        if self._poll(timeout_secs) and self.owner:
            assert self._consumer is not None
            self._consumer.seek(self._tp, self._next_offset)  # not expected while paused; never skip any

    # -- checkpoints and rebalances ---------------------------------------------

    def _checkpoint(self, force: bool = False) -> None:
        """Save the state with the detect offset it covers, then commit it. Call right after a delivered drain."""
        self._last_checkpoint_at = time.monotonic()
        if not self.owner or not (self._dirty or force):
            return
        assert self._checkpoints is not None and self._consumer is not None
        metrics = self.shared.metrics
        started = time.monotonic()
        try:
            idle = self._idle
            snapshot = encode_detect_state(self._pipeline.snapshot(), idle.last_wall, idle.last_ts,
                                           idle.caught_up_since)  # fmt: skip
            self._checkpoints.save(
                Checkpoint(
                    assignment=(self._stream,),
                    offsets={self._stream: self._next_offset},
                    snapshot=snapshot,
                    created_at=time.time(),
                    config_digest=self._digest,
                )
            )
        except (SourceError, OverflowError, TypeError) as error:  # Overflow/Type: state past what MessagePack holds
            metrics.record_error("checkpoint", "save")
            log.warning(kv("checkpoint_failed", error=str(error)))
            return
        elapsed = time.monotonic() - started
        self._checkpoint_interval_secs = checkpoint_interval_secs(
            self.config.kafka.checkpoint_interval_secs, self._last_save_secs, elapsed
        )
        self._last_save_secs = elapsed
        metrics.checkpoint_duration.observe(elapsed)
        metrics.checkpoint_bytes.set(len(snapshot))
        self.shared.kafka_ok_at = time.monotonic()
        metrics.checkpoint_saved.set_to_current_time()
        self._dirty = False
        try:
            commit_offsets(self._consumer, {self._tp: self._next_offset})
        except SourceError as error:
            metrics.record_error("kafka", "commit")
            log.warning(kv("commit_failed", stage="detect", error=str(error)))

    def _handle_rebalance(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        with self._lock:
            revoked, self._revoked, self._rebalanced = self._revoked, set(), False
            assigned = self._assigned
        if self._tp in revoked and self.owner:
            self.owner = False
            self.shared.metrics.detect_owner.set(0)
        if assigned is None:
            # Revoked, and the group has not synced yet: own nothing until the assignment
            # arrives (``consumer.assignment()`` may still name the old partitions meanwhile).
            return
        if self._tp not in assigned:
            if revoked:
                log.info(kv("standby", stage="detect", topic=self.topic))
            self._state_valid = False
            return
        started = time.monotonic()
        try:
            how = self._resume()
        except (SourceError, KafkaError) as error:
            # Cannot tell where to resume: stay paused and try again on the next rebalance check.
            self.shared.metrics.record_error("checkpoint", "load")
            log.error(kv("resume_failed", stage="detect", error=str(error), retry_in_secs=2.0))
            time.sleep(2.0)
            with self._lock:
                self._rebalanced = True
            return
        consumer.seek(self._tp, self._next_offset)
        consumer.resume(self._tp)
        self.owner = True
        self._state_valid = True
        self.shared.metrics.detect_owner.set(1)
        self.shared.metrics.reset_pipeline_baseline(self._pipeline.order.late_events)
        self._last_checkpoint_at = time.monotonic()
        log.info(kv("resumed", how=how, stage="detect", offset=f"{self._stream}@{self._next_offset}",
                    secs=time.monotonic() - started))  # fmt: skip

    def _resume(self) -> str:
        """Set the pipeline and the offset to continue from.

        Returns how: kept_state, checkpoint, previous_checkpoint (the latest did
        not decode), committed_offsets (no usable checkpoint: fresh state).
        """
        consumer, checkpoints = self._consumer, self._checkpoints
        assert consumer is not None and checkpoints is not None
        committed = consumer.committed(self._tp)
        if self._state_valid and (committed is None or committed <= self._next_offset):
            return "kept_state"  # the same partition back after an eager rebalance, nobody moved on
        reason = "no_checkpoint"
        for age, checkpoint in enumerate(checkpoints.load((self._stream,))):
            if checkpoint.config_digest != self._digest:
                reason = "config_changed"
                continue
            offset = checkpoint.offsets.get(self._stream)
            if offset is None or offset < 0:
                reason = "malformed"
                log.warning(kv("checkpoint_unusable", reason=reason, error="no offset for the detect partition"))
                continue
            pipeline = Pipeline(self.config)
            try:
                state = decode_detect_state(checkpoint.snapshot)
                pipeline.restore(state.pipeline)
            except Exception as error:  # noqa: BLE001 (typed but inconsistent state: whatever restore_state raises)
                # Never half-applied: the pipeline is replaced only once everything decoded.
                reason = "state_undecodable"
                self.shared.metrics.record_error("checkpoint", "undecodable")
                log.warning(kv("checkpoint_unusable", reason=reason, error=str(error)[:300],
                               which="latest" if age == 0 else "previous"))  # fmt: skip
                continue
            self._pipeline = pipeline
            self._idle = IdleInputs(self.config.correlate.idle_timeout_secs, state.last_wall, state.last_ts,
                                    state.caught_up_since)  # fmt: skip
            self._next_offset = offset
            self._dirty = False
            if age:
                checkpoints.resumed_from(checkpoint)
                log.warning(kv("checkpoint_fallback", stage="detect", note="restored the previous checkpoint",
                               offset=self._next_offset))  # fmt: skip
            return "checkpoint" if age == 0 else "previous_checkpoint"
        log.warning(
            kv("state_fresh", stage="detect", reason=reason,
               note="event-time state starts empty: windows and open requests before the committed offset are lost")
        )  # fmt: skip
        self._pipeline = Pipeline(self.config)
        self._idle = IdleInputs(self.config.correlate.idle_timeout_secs)
        for stream in self._input_streams():
            self._pipeline.open_stream(stream)  # each holds the watermark until it delivers or is caught up
        if committed is None:
            committed = consumer.beginning_offsets([self._tp])[self._tp]
        self._next_offset = committed
        self._dirty = True
        return "committed_offsets"

    def _input_streams(self) -> list[str]:
        consumer = self._consumer
        assert consumer is not None
        topics = self.config.kafka.topics
        streams = []
        for topic in (topics.gateway, topics.app):
            for partition in sorted(consumer.partitions_for_topic(topic) or ()):
                streams.append(stream_name(TopicPartition(topic, partition)))
        return streams

    def _end_offset(self) -> int:
        assert self._consumer is not None
        try:
            timeout_ms = int(END_OFFSET_TIMEOUT_SECS * 1000)
            return int(self._consumer.end_offsets([self._tp], timeout_ms=timeout_ms)[self._tp])
        except KafkaError as error:
            log.warning(kv("end_offset_failed", stage="detect", error=str(error)))
            return self._next_offset

    def _update_lag(self) -> None:
        self._last_lag_at = time.monotonic()
        end = self._end_offset()
        self.shared.metrics.consumer_lag.labels(topic=self.topic, partition="0").set(max(0, end - self._next_offset))

    def _shutdown(self) -> None:
        log.info(kv("stopping", stage="detect", owner=self.owner))
        if not self.owner or self._rebalanced:
            return  # the partition may be someone else's now; the last checkpoint stands
        try:
            self._flush()
        except Stopped:
            return
        self._checkpoint(force=True)
