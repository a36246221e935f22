"""Stage 2 of ``gatewatch serve``, "detect": the partitioned tasks, split over the processes by Kafka.

ONE consumer, in group ``<group_id>-detect``, subscribed to the three internal
topics (:mod:`gatewatch.serve_topics`). Every partition it is assigned is a
task (:mod:`gatewatch.tasks`): a JOIN task per ``<group_id>-requests``
partition, a KEYED task per ``<group_id>-keyed`` partition, the ALERT task on
``<group_id>-findings``. The tasks are pure (no Kafka, no clock); this stage
drives them. One step::

    poll -> each message to its partition's task (apply)
         -> per task take(): its messages to the keyed / findings partitions it names,
            its batch to the store (transactions, alerts, dead letters),
            its lifecycle events to kafka.topics.alerts and the forwarders
         -> (every kafka.checkpoint_interval_secs) per task snapshot -> checkpoint -> commit

Why this is exact: each task's outputs are a pure function of its input
messages in offset order, every output message carries the task's source name
and a sequence number, and a downstream task skips what it has already seen
from a source. A task's checkpoint (:class:`gatewatch.checkpoint.Checkpoint`,
keyed by its partition's stream ``<topic>/<partition>``) holds its state and
the offset it covers, and is saved only after everything the task output up to
there was acknowledged; then that offset is committed. So a task restored
anywhere re-reads from its offset, re-makes exactly the same messages with the
same sequence numbers (dropped downstream) and the same stored documents (the
same ids: idempotent upserts).

Rebalances (the sticky assignor: a joining member takes partitions from the
others, the rest stay): a revoked task is dropped (its last checkpoint
stands); one assigned back unchanged (nobody committed past it meanwhile)
keeps its state, the others restore their checkpoint (the latest whose state
decodes, else the one before) or start fresh from the committed offset (logged
``state_fresh``). Poison on an internal topic (a message that does not decode,
has an unknown version or kind, or names an unknown source or stream) is a
dead letter of its task with the topic, partition and offset and the reason,
counted and skipped: no task stops on it.

Back-pressure: while the store or Kafka refuses a delivery, every owned
partition is paused and the same outputs are retried. Stopping: once the
ingest stage has stopped, the stage reads its partitions to their end (at most
DRAIN_TIMEOUT_SECS), checkpoints every task and leaves.
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

from gatewatch.checkpoint import Checkpoint, CheckpointStore, checkpoint_interval_secs, ensure_topic
from gatewatch.errors import SourceError, StoppedError
from gatewatch.forward import ForwarderSet, build_forwarders
from gatewatch.serve_stage import LateNotice, Shared, deliver, kv
from gatewatch.serve_topics import (
    FINDINGS, INTERNAL_MAX_MESSAGE_BYTES, REQUESTS, InternalTopics, internal_producer,
)  # fmt: skip
from gatewatch.serve_resume import OwnedTask, Resumer
from gatewatch.tasks.base import TaskOutput
from gatewatch.topology import detector_configs
from ingest.records import Dataset
from ingest.sinks.base import Batch
from ingest.sources.kafka import commit_offsets, consumer_settings, static_membership, stream_name
from ingest.sources.kafka_client import TOPIC_STICKY_ASSIGNMENT, release_parked_fetches, subscribe
from ingest.sources.kafka_settings import client_settings
from ingest.sources.revocations import refresh_shared_revocations

log = logging.getLogger("gatewatch.serve")

# Messages per poll over all owned partitions, between these bounds: as many as carry about
# STEP_RECORDS records (events, keyed items, findings) at the last step's records per message.
# An events message holds up to 5,000 events, so a step of full messages stays near a second
# and the consumer takes part in a rebalance promptly; but most internal messages carry a few
# dozen records, and a step costs a poll and a flushed produce (a broker round trip) whatever
# it carries: at 8 messages a step those took ~2-3 us of CPU per record of the whole path
# (bench_serve.py). The estimate lags one step: the first step of full messages after an idle
# spell (progress messages only) may take DETECT_POLL_MESSAGES_MAX of them, ~8 s at worst.
DETECT_POLL_MESSAGES = 8
DETECT_POLL_MESSAGES_MAX = 64
STEP_RECORDS = 20_000
POLL_TIMEOUT_SECS = 0.2
LAG_INTERVAL_SECS = 5.0
# Bounds end_offsets (lag, the drain target): without it each try waits the whole request
# timeout (30 s) while the broker is away, and the stage neither polls nor checkpoints meanwhile.
END_OFFSET_TIMEOUT_SECS = 5.0
# On stop, read the owned partitions to their end for at most this long: well inside a
# 30 s termination grace period, with room for the final checkpoint.
DRAIN_TIMEOUT_SECS = 15.0


def poll_messages(applied: int, records: int) -> int:
    """The next poll's size in messages, after a step that applied ``applied`` messages carrying ``records``."""
    per_message = max(1, records // applied)
    return max(DETECT_POLL_MESSAGES, min(DETECT_POLL_MESSAGES_MAX, STEP_RECORDS // per_message))


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
    """The detect consumer, the tasks of the partitions it is assigned, their outputs and checkpoints."""

    def __init__(self, shared: Shared, digest: str) -> None:
        self.shared = shared
        self.config = shared.config
        self._digest = digest
        self.topics: InternalTopics | None = None
        self._consumer: KafkaConsumer | None = None
        self._producer: KafkaProducer | None = None
        self._checkpoints: CheckpointStore | None = None
        self._alerts: KafkaProducer | None = None
        self._forwarders: ForwarderSet | None = None
        self._lock = threading.Lock()
        self._revoked: set[TopicPartition] = set()
        self._assigned: set[TopicPartition] | None = None  # as the group last assigned; None: not (yet) known
        self._rebalanced = False
        self._tasks: dict[TopicPartition, OwnedTask] = {}
        self._parked: dict[TopicPartition, OwnedTask] = {}  # revoked; kept in case the group gives them back
        self._owned_before: set[TopicPartition] = set()  # owned when the rebalance being handled began
        self._last_checkpoint_at = time.monotonic()
        # The ALERT task's checkpoint taken while forwarders still held some of its events, saved once
        # they are all sent or dead-lettered: (checkpoint, its task, the forwarders' mark).
        self._held: tuple[Checkpoint, OwnedTask, tuple[int, ...]] | None = None
        self._checkpoint_interval_secs = self.config.kafka.checkpoint_interval_secs
        self._last_save_secs = 0.0  # how long the last checkpoint took (0: none yet)
        self._last_lag_at = 0.0
        self._late = LateNotice()
        self._poll_messages = DETECT_POLL_MESSAGES  # the next poll's size (see STEP_RECORDS)
        self.loop_at = time.monotonic()

    @property
    def owner(self) -> bool:
        """This process runs at least one task."""
        return bool(self._tasks)

    @property
    def tasks(self) -> list[str]:
        """The streams of the owned tasks (``<topic>/<partition>``), for /readyz."""
        return sorted(owned.stream for owned in self._tasks.values())

    def open(self, topics: InternalTopics) -> None:
        kafka = self.config.kafka
        self.topics = topics
        self._checkpoints = CheckpointStore(kafka)
        ensure_topic(kafka, kafka.topics.alerts)  # else the first alert's send logs an error while auto-creating
        self._alerts = KafkaProducer(
            client_id=f"gatewatch-{kafka.group_id}-alerts", acks="all", linger_ms=5, **client_settings(kafka)
        )
        self._producer = internal_producer(kafka, "detect")
        self._forwarders = build_forwarders(self.config, self._count_forwarded)
        self.shared.metrics.start_detection(detector_configs(self.config), (f.name for f in self.config.forward))
        group = f"{kafka.group_id}-detect"
        self._consumer = KafkaConsumer(
            group_id=group,
            client_id=f"gatewatch-{group}",
            **consumer_settings(
                kafka,
                max_poll_records=DETECT_POLL_MESSAGES,
                max_partition_fetch_bytes=INTERNAL_MAX_MESSAGE_BYTES,
                fetch_max_bytes=INTERNAL_MAX_MESSAGE_BYTES,
                # Sticky: a member joining the group takes partitions from the others and
                # leaves the rest with their owners, which keep their state.
                partition_assignment_strategy=TOPIC_STICKY_ASSIGNMENT,
                **static_membership(kafka, "detect"),
            ),
        )
        subscribe(self._consumer, self.topics.names, _Listener(self))

    def close(self) -> None:
        for name in ("_consumer", "_checkpoints", "_alerts", "_producer", "_forwarders"):
            resource, closed = getattr(self, name), None
            setattr(self, name, closed)
            if resource is None:
                continue
            try:
                if name == "_consumer":
                    resource.close(autocommit=False)
                elif name in ("_alerts", "_producer"):
                    resource.close(timeout=5)
                else:
                    resource.close()
            except KafkaError:
                pass

    # -- the loop ---------------------------------------------------------------

    def run(self, ingest_done: threading.Event) -> None:
        """Loop until the ingest stage has stopped, then read the owned partitions to their end and checkpoint."""
        deadline: float | None = None
        while not self.shared.abort.is_set():
            if ingest_done.is_set():
                if deadline is None:
                    deadline = time.monotonic() + DRAIN_TIMEOUT_SECS
                    log.info(kv("draining", stage="detect", tasks=len(self._tasks)))
                if not self._tasks or time.monotonic() > deadline or self._drained():
                    break
            self.step()
        self._shutdown()

    def step(self) -> None:
        assert self._consumer is not None
        self.loop_at = time.monotonic()
        polled = self._poll(POLL_TIMEOUT_SECS)
        if self._rebalanced:
            self._handle_rebalance()
            return  # anything fetched around the rebalance is read again after the seek
        if not self._tasks:
            return
        if polled:
            self._apply(polled)
        self._flush()
        if self._rebalanced:
            return  # seen during a delivery wait: the partitions may be someone else's already
        now = time.monotonic()
        refresh_shared_revocations(now)  # a token revoked now counts from now on
        if self._held is not None:
            self._save_held()
        if now - self._last_checkpoint_at >= self._checkpoint_interval_secs:
            self._checkpoint()
        if now - self._last_lag_at >= LAG_INTERVAL_SECS:
            self._update_lag()

    def _poll(self, timeout_secs: float) -> dict[TopicPartition, list[Any]]:
        consumer = self._consumer
        assert consumer is not None
        release_parked_fetches(consumer)  # partitions are paused on every rebalance and back-pressure
        try:
            polled = consumer.poll(timeout_ms=int(timeout_secs * 1000), max_records=self._poll_messages)
        except KafkaError as error:
            self.shared.metrics.record_error("kafka", "poll")
            log.warning(kv("poll_failed", stage="detect", error=str(error)))
            time.sleep(1.0)
            return {}
        self.shared.kafka_ok_at = time.monotonic()  # a detect-only standby polls nothing else
        return polled

    def _apply(self, polled: dict[TopicPartition, list[Any]]) -> None:
        for tp, messages in polled.items():
            owned = self._tasks.get(tp)
            if owned is None:
                continue
            task = owned.task
            for message in messages:
                if message.offset < owned.next_offset:
                    continue  # fetched before a seek back
                task.apply(message.offset, message.value or b"")
                owned.next_offset = message.offset + 1
                owned.applied = owned.dirty = True

    def _flush(self) -> None:
        """Take every task's outputs and deliver them: internal messages, then the store and the alerts topic."""
        topics = self.topics
        assert topics is not None
        metrics = self.shared.metrics
        messages: list[tuple[str, int, bytes]] = []
        batch = Batch()
        applied = records = 0
        for owned in self._tasks.values():
            if not owned.applied:
                continue
            owned.applied = False
            out = owned.task.take()
            messages += [(topics.topic(role), partition, value) for role, partition, value in out.messages]
            batch.add(out.batch)
            self._count(owned, out)
            applied += out.applied
            records += out.records
        if applied:
            self._poll_messages = poll_messages(applied, records)
        if messages:
            self._deliver(lambda: self._produce(messages))
        if batch.dead_letters:
            metrics.record_dead_letters(Counter(letter.reason for letter in batch.dead_letters))
            for letter in batch.dead_letters:
                if letter.origin.dataset is Dataset.INTERNAL:
                    metrics.record_error("detect", letter.reason)
                    origin = letter.origin
                    log.warning(kv("message_rejected", stage="detect", stream=origin.stream, offset=origin.offset,
                                   reason=letter.reason, bytes=len(letter.line)))  # fmt: skip
        if len(batch):
            self._deliver_batch(batch)

    def _count(self, owned: OwnedTask, out: TaskOutput) -> None:
        metrics = self.shared.metrics
        labels = {"role": owned.role, "partition": str(owned.tp.partition)}
        records = out.records
        if records:
            metrics.task_records.labels(**labels).inc(records)
            if owned.role == REQUESTS:
                metrics.detect_events.inc(records)
        if out.late and owned.role == REQUESTS:  # a KEYED task sees the same late events again
            metrics.late_events.inc(out.late)
            self._late.add(out.late)
        for rule_id, errors in out.detector_errors.items():
            if errors:
                metrics.record_error("detect", rule_id, errors)
        watermark = owned.task.watermark
        if watermark is not None and math.isfinite(watermark):
            metrics.task_watermark.labels(**labels).set(watermark)
            # The process-wide gauge: the slowest owned task's event time.
            times = [o.task.watermark for o in self._tasks.values()]
            finite = [t for t in times if t is not None and math.isfinite(t)]
            if finite:
                metrics.watermark.set(min(finite))

    def _produce(self, messages: list[tuple[str, int, bytes]]) -> None:
        """The tasks' messages to the partitions they name, flushed. Raises KafkaError (then retried whole)."""
        producer = self._producer
        assert producer is not None
        futures = [producer.send(topic, value=value, partition=partition) for topic, partition, value in messages]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=0)
        self.shared.kafka_ok_at = time.monotonic()

    def _deliver_batch(self, batch: Batch) -> None:
        done = {"stored": False, "forwarded": not batch.alert_events or self._alerts is None}

        def attempt() -> None:
            if not done["stored"]:
                self.shared.write(batch)
                done["stored"] = True
            if not done["forwarded"]:
                self._forward_alerts(batch)
                done["forwarded"] = True

        self._deliver(attempt)
        self.shared.metrics.record_stored(batch)
        if self._forwarders is not None:
            self._forwarders.submit(batch.alert_events)  # queued: delivered on the forwarders' own threads

    def _deliver(self, attempt: Any) -> None:
        deliver(self.shared, attempt, self._set_backpressure, self._idle_poll, log)

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
        owned = [tp for tp in self._tasks if tp in consumer.assignment()]
        if owned:
            (consumer.pause if paused else consumer.resume)(*owned)
        log.log(logging.WARNING if paused else logging.INFO,
                kv("backpressure_on" if paused else "backpressure_off", stage="detect"))  # fmt: skip
        self.shared.metrics.set_backpressure("detect", paused)

    def _idle_poll(self, timeout_secs: float) -> None:
        # Paused: nothing is fetched, the group sees a live member. A rebalance seen here
        # is handled by the next step (the outputs in hand are delivered first).
        self.loop_at = time.monotonic()
        polled = self._poll(timeout_secs)
        assert self._consumer is not None
        for tp in polled:
            owned = self._tasks.get(tp)
            if owned is not None and tp in self._consumer.assignment():
                self._consumer.seek(tp, owned.next_offset)  # not expected while paused; never skip any

    # -- checkpoints and rebalances ---------------------------------------------

    def _checkpoint(self, force: bool = False) -> None:
        """Save every changed task's state with the offset it covers, then commit those offsets.

        Called right after a delivered flush: everything the tasks output up to
        their offsets is acknowledged, so a restore from here loses nothing. The
        forwarders' queues are not acknowledged yet: the ALERT task's checkpoint
        is held until every lifecycle event queued by then is sent or dead-lettered
        (:meth:`_save_held`), so a crash re-sends them instead of losing them.
        """
        self._last_checkpoint_at = time.monotonic()
        changed = [owned for owned in self._tasks.values() if owned.dirty or force]
        held = None
        forwarders = self._forwarders
        if forwarders is not None and any(o.role == "findings" for o in changed):
            mark = forwarders.mark()
            if not forwarders.settled(mark):
                held = next(o for o in changed if o.role == "findings")
                changed.remove(held)
        now = time.time()
        try:
            if held is not None and self._held is None:  # else the one held first goes first
                self._held = (self._taken(held, now), held, mark)
                held.dirty = False  # changed again by what it applies next
            checkpoints = [self._taken(o, now) for o in changed]
        except (OverflowError, TypeError) as error:  # state past what MessagePack holds
            self.shared.metrics.record_error("checkpoint", "save")
            log.warning(kv("checkpoint_failed", error=str(error)))
            return
        if changed:
            self._save(list(zip(changed, checkpoints)), clean=True)

    def _taken(self, owned: OwnedTask, now: float) -> Checkpoint:
        return Checkpoint(assignment=(owned.stream,), offsets={owned.stream: owned.next_offset},
                          snapshot=owned.task.snapshot(), created_at=now, config_digest=self._digest)  # fmt: skip

    def _save_held(self) -> None:
        """Save the held ALERT task's checkpoint once the forwarders settled every event it covers."""
        assert self._held is not None
        checkpoint, owned, mark = self._held
        if self._forwarders is not None and not self._forwarders.settled(mark):
            return
        self._held = None
        if self._tasks.get(owned.tp) is owned:  # else moved away since: its next owner starts further back
            self._save([(owned, checkpoint)], clean=False)

    def _save(self, pairs: list[tuple[OwnedTask, Checkpoint]], clean: bool) -> None:
        """Save ``pairs``' checkpoints, then commit the offsets they cover; ``clean``: they hold the tasks' state
        as it is now (not a held one, taken before the task applied more)."""
        assert self._checkpoints is not None and self._consumer is not None
        metrics = self.shared.metrics
        started = time.monotonic()
        now = time.time()
        try:
            written = self._checkpoints.save_many([checkpoint for _, checkpoint in pairs])
        except SourceError as error:
            metrics.record_error("checkpoint", "save")
            log.warning(kv("checkpoint_failed", error=str(error)))
            for owned, _ in pairs:
                owned.dirty = True
            return
        elapsed = time.monotonic() - started
        self._checkpoint_interval_secs = checkpoint_interval_secs(
            self.config.kafka.checkpoint_interval_secs, self._last_save_secs, elapsed
        )
        self._last_save_secs = elapsed
        metrics.checkpoint_duration.observe(elapsed)
        metrics.checkpoint_bytes.set(written)
        self.shared.kafka_ok_at = time.monotonic()
        metrics.checkpoint_saved.set(now)
        for owned, _ in pairs:
            if clean:
                owned.dirty = False
            metrics.task_checkpoint_saved.labels(role=owned.role, partition=str(owned.tp.partition)).set(now)
        try:
            commit_offsets(self._consumer, {o.tp: checkpoint.offsets[o.stream] for o, checkpoint in pairs})
        except SourceError as error:
            metrics.record_error("kafka", "commit")
            log.warning(kv("commit_failed", stage="detect", error=str(error)))

    def _handle_rebalance(self) -> None:
        consumer = self._consumer
        assert consumer is not None
        with self._lock:
            revoked, self._revoked, self._rebalanced = self._revoked, set(), False
            assigned = self._assigned
        self._owned_before |= set(self._tasks)
        if assigned is not None:
            revoked |= set(self._tasks) - assigned  # eager rebalances revoke everything; never keep a stray one
        for tp in revoked:
            owned = self._tasks.pop(tp, None)
            if owned is not None:
                self._parked[tp] = owned
        if assigned is None:
            # Revoked, and the group has not synced yet: own nothing until the assignment
            # arrives (``consumer.assignment()`` may still name the old partitions meanwhile).
            self._publish_ownership()
            return
        self._parked = {tp: owned for tp, owned in self._parked.items() if tp in assigned}
        wanted = sorted(tp for tp in assigned if tp not in self._tasks)
        started = time.monotonic()
        try:
            resumed = self._resumer().resume(wanted, self._parked)
        except (SourceError, KafkaError) as error:
            # Cannot tell where to resume: stay paused and try again on the next rebalance check.
            self.shared.metrics.record_error("checkpoint", "load")
            log.error(kv("resume_failed", stage="detect", error=str(error), retry_in_secs=2.0))
            time.sleep(2.0)
            with self._lock:
                self._rebalanced = True
            return
        self._parked = {}
        for owned, how in resumed:
            self._tasks[owned.tp] = owned
            consumer.seek(owned.tp, owned.next_offset)
            log.info(kv("resumed", how=how, stage="detect", task=owned.role,
                        offset=f"{owned.stream}@{owned.next_offset}"))  # fmt: skip
        if self._tasks:
            consumer.resume(*self._tasks)
        self._publish_ownership()
        self._forget_metrics(self._owned_before - set(self._tasks))
        self._owned_before = set()
        self._last_checkpoint_at = time.monotonic()
        if wanted:
            log.info(kv("tasks_assigned", stage="detect", tasks=[stream_name(tp) for tp in self._tasks],
                        secs=time.monotonic() - started))  # fmt: skip
        elif not self._tasks:
            log.info(kv("standby", stage="detect"))

    def _forget_metrics(self, partitions: set[TopicPartition]) -> None:
        """Drop the per-task series of tasks this process no longer runs (their new owner reports them)."""
        topics = self.topics
        metrics = self.shared.metrics
        for tp in partitions:
            role = topics.role(tp.topic) if topics is not None else None
            for gauge, labels in ((metrics.consumer_lag, (tp.topic, str(tp.partition))),
                                  (metrics.task_watermark, (role, str(tp.partition))),
                                  (metrics.task_checkpoint_saved, (role, str(tp.partition)))):  # fmt: skip
                try:
                    gauge.remove(*labels)
                except KeyError:
                    pass

    def _resumer(self) -> Resumer:
        assert self._consumer is not None and self._checkpoints is not None and self.topics is not None
        return Resumer(self.config, self._digest, self.shared.metrics, self._consumer, self._checkpoints, self.topics)

    def _publish_ownership(self) -> None:
        metrics = self.shared.metrics
        metrics.detect_owner.set(1 if self._tasks else 0)
        roles = Counter(owned.role for owned in self._tasks.values())
        for role in (REQUESTS, "keyed", FINDINGS):
            metrics.detect_tasks.labels(role=role).set(roles.get(role, 0))

    def _end_offsets(self) -> dict[TopicPartition, int] | None:
        assert self._consumer is not None
        if not self._tasks:
            return {}
        try:
            ends = self._consumer.end_offsets(list(self._tasks), timeout_ms=int(END_OFFSET_TIMEOUT_SECS * 1000))
        except KafkaError as error:
            log.warning(kv("end_offset_failed", stage="detect", error=str(error)))
            return None
        return {tp: int(end) for tp, end in ends.items()}

    def _drained(self) -> bool:
        """Every owned partition read to its end (its own tasks' outputs included)."""
        ends = self._end_offsets()
        return ends is not None and all(self._tasks[tp].next_offset >= end for tp, end in ends.items()
                                        if tp in self._tasks)  # fmt: skip

    def _update_lag(self) -> None:
        self._last_lag_at = time.monotonic()
        ends = self._end_offsets()
        if not ends:
            return
        for tp, end in ends.items():
            owned = self._tasks.get(tp)
            if owned is not None:
                lag = self.shared.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition))
                lag.set(max(0, end - owned.next_offset))

    def _shutdown(self) -> None:
        log.info(kv("stopping", stage="detect", tasks=len(self._tasks)))
        if not self._tasks or self._rebalanced:
            return  # the partitions may be someone else's now; the last checkpoints stand
        try:
            self._flush()
        except StoppedError:
            return
        if self._forwarders is not None:  # their queues delivered or dead-lettered: the checkpoint covers all
            self._forwarders.close()
            self._forwarders = None
        self._held = None  # taken before what the forced checkpoint covers
        self._checkpoint(force=True)

