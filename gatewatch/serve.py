"""``gatewatch serve``: consume Kafka, store and detect until stopped.

One loop, one thread::

    poll -> Pipeline.feed -> process -> advance idle partitions -> drain
         -> store.write -> alerts topic -> (every CHECKPOINT_INTERVAL_SECS) checkpoint -> commit

Delivery is at-least-once with idempotent outputs: offsets are committed only
after the store acknowledged every output they led to *and* a checkpoint of
the event-time state (reorder buffer, open requests, detector windows, alert
book) was saved with them. A restart with the same assignment restores that
state and re-reads only what came after it; records re-read after a crash are
stored again under the same ids and re-detected into the same alert ids.

Checkpoints cost about 50 ms per MB of state (mostly pickling the reorder
buffer, ~``allowed_lateness_secs`` of traffic), so the interval stretches to
keep them under CHECKPOINT_MAX_TIME_SHARE of the loop. Catching up a backlog,
partitions are read abreast in event time (those ALIGN_AHEAD_SECS ahead of the
slowest are paused), which keeps that buffer small. A caught-up partition that
stays quiet for ``correlate.idle_timeout_secs`` has its clock moved on by the
wall time it has been quiet, so it does not hold the watermark back.

Back-pressure: when the store raises ``StoreUnavailableError`` every partition
is paused, ``poll`` keeps the group membership alive without fetching, and the
same batch is retried after ``retry_after_secs`` until it is accepted.

Stopping (SIGTERM/SIGINT): finish the batch in hand, checkpoint, commit, leave
the group. ``Pipeline.finish`` is *not* called: the next process continues the
open windows. A second signal abandons a delivery that is still retrying (the
records are re-read on restart).

HTTP (``--listen``): ``/healthz`` (the loop is alive), ``/readyz`` (Kafka and the
store answered recently), ``/metrics`` (Prometheus, see :mod:`gatewatch.metrics`).
"""

from __future__ import annotations

import logging
import math
import signal
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from kafka import KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from gatewatch.checkpoint import Checkpoint, CheckpointStore, config_digest, ensure_topic
from gatewatch.errors import GatewatchError, SourceError, StoreError, StoreUnavailableError
from gatewatch.metrics import HealthServer, ServeMetrics
from gatewatch.stores import open_store
from gatewatch.topology import Pipeline
from ingest.sinks.base import Batch, Sink
from ingest.sources.kafka import KafkaSource, PartitionPoll, Rebalance, stream_name

log = logging.getLogger(__name__)

CHECKPOINT_INTERVAL_SECS = 5.0  # to become config key kafka.checkpoint_interval_secs
# A checkpoint may take at most this share of the loop's time: with a big state
# (a long allowed lateness at a high rate) the interval stretches to match.
CHECKPOINT_MAX_TIME_SHARE = 0.1
ALIGN_AHEAD_SECS = 30.0
ALIGNED_POLL_RECORDS = 2_000  # per poll while partitions are behind (costs ~5% of bare consumer speed)
POLL_TIMEOUT_SECS = 0.2
LAG_INTERVAL_SECS = 5.0
RETRY_MAX_SECS = 30.0
SHUTDOWN_DELIVERY_TIMEOUT_SECS = 60.0


def kv(event: str, **fields: Any) -> str:
    """A ``key=value`` log line; values with spaces or quotes are JSON-quoted."""
    parts = [f"event={event}"]
    for key, value in fields.items():
        if isinstance(value, float):
            text = f"{value:.3f}"
        elif isinstance(value, (set, frozenset, list, tuple)):
            text = ",".join(sorted(str(v) for v in value)) or "-"
        else:
            text = str(value)
        if not text or any(c in text for c in ' "='):
            text = orjson.dumps(text).decode()
        parts.append(f"{key}={text}")
    return " ".join(parts)


def serve(config: Any, store_url: str, listen: str, *, stop: threading.Event | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``stop`` is set); return the process exit code."""
    _default_log_level()
    service = Service(config, store_url, listen, stop=stop)
    restore: list[tuple[int, Any]] = []
    if threading.current_thread() is threading.main_thread():
        for signum in (signal.SIGTERM, signal.SIGINT):
            restore.append((signum, signal.signal(signum, service.request_stop)))
    try:
        return service.run()
    finally:
        for signum, handler in restore:
            signal.signal(signum, handler)


def _default_log_level() -> None:
    # A service logs its lifecycle at INFO even when the CLI runs at WARNING.
    for name in (__name__, "gatewatch.checkpoint", "ingest.sources.kafka"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)


@dataclass(slots=True)
class _Partition:
    stream: str
    last_record_at: float  # monotonic time of the last record received (or of the assignment)
    last_event_ts: float | None  # the stream's event-time clock just after that record
    next_offset: int  # last fed offset + 1


class _Stopped(GatewatchError):
    """A second stop signal abandoned a delivery that was still retrying."""


class Service:
    """The serve loop and everything it owns; :meth:`run` opens, loops and closes."""

    def __init__(
        self,
        config: Any,
        store_url: str,
        listen: str,
        stop: threading.Event | None = None,
        sink: Sink | None = None,
    ) -> None:
        """``sink``, if given, is used instead of opening ``store_url`` (tests pass a double)."""
        self.config = config
        self.store_url = store_url
        self.listen = listen
        self.metrics = ServeMetrics()
        self._stop = stop or threading.Event()
        self._abort = threading.Event()
        self._idle_timeout_secs: float = config.correlate.idle_timeout_secs
        self._digest = config_digest(config)
        self._pipeline = Pipeline(config)
        self._parts: dict[TopicPartition, _Partition] = {}
        self._detector_errors: dict[str, int] = {}
        self._sink: Sink | None = sink
        self._source: KafkaSource | None = None
        self._checkpoints: CheckpointStore | None = None
        self._alerts: KafkaProducer | None = None
        self._http: HealthServer | None = None
        self._paused = False  # back-pressure: every partition paused
        self._ahead: set[TopicPartition] = set()  # paused for event-time alignment
        self._poll_records: int | None = None  # None: the consumer's max_poll_records
        self._assigned_at = time.monotonic()
        self._paused_now: set[TopicPartition] = set()  # what the consumer was told
        self._pending_rebalance: Rebalance | None = None
        self._resume_retry_at = 0.0
        self._streams: tuple[str, ...] = ()  # for the HTTP thread
        self._dirty = False  # state changed since the last checkpoint
        self._last_checkpoint_at = time.monotonic()
        self._checkpoint_interval_secs = CHECKPOINT_INTERVAL_SECS
        self._last_lag_at = 0.0
        # health, read by the HTTP thread
        self.loop_at = time.monotonic()
        self.kafka_ok_at: float | None = None
        self.store_ok = True

    # -- lifecycle --------------------------------------------------------------

    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        """First call: stop after the batch in hand. Second: abandon a delivery that keeps failing."""
        if self._stop.is_set():
            self._abort.set()
        self._stop.set()
        log.info(kv("stop_requested", signal=signal.Signals(signum).name if signum else "-"))

    def run(self) -> int:
        kafka = self.config.kafka
        try:
            self._http = HealthServer(self.listen, self.metrics, self.health)
            if self._sink is None:
                self._sink = self._open_store()
            self._source = KafkaSource(kafka)
            self._checkpoints = CheckpointStore(kafka)
            ensure_topic(kafka, kafka.topics.alerts)  # else the first alert's send logs an error while auto-creating
            self._alerts = KafkaProducer(
                bootstrap_servers=list(kafka.bootstrap_servers),
                client_id=f"gatewatch-{kafka.group_id}-alerts",
                acks="all",
                linger_ms=5,
                **dict(kafka.security),
            )
        except KafkaError as error:
            self._close()
            raise SourceError(f"cannot connect to Kafka at {','.join(kafka.bootstrap_servers)}: {error}") from None
        except _Stopped:
            self._close()
            log.warning(kv("stopped", reason="store_never_answered", exit_code=1))
            return 1
        except BaseException:
            self._close()
            raise
        log.info(
            kv("started", bootstrap=kafka.bootstrap_servers, group=kafka.group_id, store=self.store_url.split(":")[0],
               topics=[kafka.topics.gateway, kafka.topics.app], alerts_topic=kafka.topics.alerts, listen=self.listen)
        )  # fmt: skip
        code = 0
        try:
            while not self._stop.is_set():
                self._step()
            self._shutdown()
        except _Stopped:
            log.warning(kv("stopped_without_commit", reason="store_unavailable"))
            code = 1
        except StoreError as error:
            # Not retryable (the store refused the batch): stop without committing, so nothing is lost.
            self.metrics.record_error("store", "rejected")
            log.error(kv("store_failed", error=str(error)))
            code = 1
        finally:
            self._close()
        log.info(kv("stopped", exit_code=code))
        return code

    def _open_store(self) -> Sink | None:
        """Open the store, waiting while it is unreachable (/healthz answers, /readyz says 503)."""
        while True:
            self.loop_at = time.monotonic()
            try:
                sink = open_store(self.store_url, self.config)
                self.store_ok = True
                return sink
            except StoreUnavailableError as error:
                self.store_ok = False
                self.metrics.record_error("store", "unavailable")
                delay = min(max(error.retry_after_secs, 0.5), RETRY_MAX_SECS)
                log.warning(kv("store_unreachable", error=str(error), retry_after_secs=delay))
                if self._stop.wait(delay):
                    raise _Stopped("stopped before the store answered") from None

    def _close(self) -> None:
        for name in ("_source", "_checkpoints", "_sink", "_http"):
            resource = getattr(self, name)
            if resource is not None:
                try:
                    resource.close()
                except Exception:  # noqa: BLE001 (closing must not hide the real error)
                    log.exception(kv("close_failed", resource=name.strip("_")))
                setattr(self, name, None)
        if self._alerts is not None:
            try:
                self._alerts.close(timeout=5)
            except KafkaError:
                pass
            self._alerts = None

    # -- the loop ---------------------------------------------------------------

    def _step(self) -> None:
        source = self._source
        assert source is not None
        rebalance = source.take_rebalance()
        if rebalance is not None:
            pending = self._pending_rebalance
            if pending is not None:
                rebalance = Rebalance(pending.revoked | rebalance.revoked, rebalance.assigned)
            self._pending_rebalance = rebalance
        if self._pending_rebalance is not None and time.monotonic() >= self._resume_retry_at:
            try:
                self._on_rebalance(self._pending_rebalance)
                self._pending_rebalance = None
            except SourceError as error:
                # Cannot tell where to resume: keep the partitions paused, stay in the group, retry.
                self._resume_retry_at = time.monotonic() + 2.0
                self.metrics.record_error("checkpoint", "load")
                log.error(kv("resume_failed", error=str(error), retry_in_secs=2.0))
        self._poll_and_feed(POLL_TIMEOUT_SECS)
        if source.rebalance_pending:
            return  # handled at the top of the next step
        self._align()
        self._advance_idle()
        self._flush()
        if source.rebalance_pending:
            return  # during a back-pressure wait; the old assignment is checkpointed next step
        now = time.monotonic()
        if now - self._last_checkpoint_at >= self._checkpoint_interval_secs:
            self._checkpoint(commit=True)
        if now - self._last_lag_at >= LAG_INTERVAL_SECS:
            self._update_lag()

    def _poll_and_feed(self, timeout_secs: float) -> None:
        source = self._source
        assert source is not None
        self.loop_at = time.monotonic()
        try:
            records = source.poll(timeout_secs, self._poll_records)
        except SourceError as error:
            self.metrics.record_error("kafka", "poll")
            log.warning(kv("poll_failed", error=str(error)))
            time.sleep(1.0)
            return
        if source.rebalance_pending:
            return  # positions are reset on the rebalance: these records are read again
        if not records:
            return
        now = time.monotonic()
        self.kafka_ok_at = now
        # The source returns only partitions that were sought, i.e. those in self._parts.
        self._pipeline.feed(records)
        self._dirty = True
        clock = self._pipeline.order.stream_clock
        polled: dict[TopicPartition, PartitionPoll] = source.last_poll
        for tp, info in polled.items():
            part = self._parts[tp]
            part.next_offset = info.next_offset
            part.last_record_at = now
            ts = clock(part.stream)
            part.last_event_ts = ts if math.isfinite(ts) else part.last_event_ts
            self.metrics.record_received(tp.topic, info.count, info.value_bytes)
        if source.unwrap_misses:
            self.metrics.record_error("unwrap", "not_a_wrapped_record", source.unwrap_misses)
            source.unwrap_misses = 0

    def _advance_idle(self) -> None:
        """Move the clock of a quiet, caught-up partition by the wall time it has been quiet.

        Without this, one partition without traffic holds the watermark back
        forever. A partition with unread data is never advanced: its next
        records would arrive behind the watermark.
        """
        source = self._source
        assert source is not None
        pipeline = self._pipeline
        now = time.monotonic()
        newest: float | None = None
        for tp, part in self._parts.items():
            quiet_secs = now - part.last_record_at
            if quiet_secs < self._idle_timeout_secs:
                continue
            end = source.highwater(tp)
            if end is None or part.next_offset < end:
                continue
            base = part.last_event_ts
            if base is None:
                # Never delivered: follow the newest input instead of holding everyone back.
                if newest is None:
                    clocks = [pipeline.order.stream_clock(p.stream) for p in self._parts.values()]
                    newest = max((c for c in clocks if math.isfinite(c)), default=-math.inf)
                if not math.isfinite(newest):
                    continue
                base = newest
            pipeline.advance_stream(part.stream, base + quiet_secs)

    def _flush(self) -> None:
        """Release what the watermark allows and deliver it."""
        pipeline = self._pipeline
        pipeline.process()
        batch = pipeline.drain()
        stats = pipeline.stats
        self.metrics.sync_pipeline_stats(stats.dead_letter_reasons, stats.late_events)
        for rule_id, errors in stats.detector_errors.items():
            total = self._detector_errors.get(rule_id, 0)
            if errors > total:
                self.metrics.record_error("detect", rule_id, errors - total)
                self._detector_errors[rule_id] = errors
        watermark = pipeline.order.watermark
        if math.isfinite(watermark):
            self.metrics.watermark.set(watermark)
        if len(batch):
            self._deliver(batch)
            self._dirty = True

    # -- delivery and back-pressure ---------------------------------------------

    def _deliver(self, batch: Batch) -> None:
        """Store ``batch`` and forward its alerts, retrying the same batch while the store is down."""
        stored = self._sink is None
        forwarded = not batch.alerts or self._alerts is None
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                if not stored:
                    assert self._sink is not None
                    with self.metrics.bulk_duration.time():
                        self._sink.write(batch)
                    stored = True
                    self.store_ok = True
                if not forwarded:
                    self._forward_alerts(batch)
                    forwarded = True
                break
            except StoreUnavailableError as error:
                delay = error.retry_after_secs
                self.store_ok = False
                self.metrics.record_error("store", "unavailable")
                reason = str(error)
            except KafkaError as error:
                delay = 1.0
                self.metrics.record_error("alerts", type(error).__name__)
                reason = f"alerts topic: {error}"
            attempt += 1
            delay = min(max(delay, 0.1), RETRY_MAX_SECS)
            if not self._paused:
                self._set_paused(True)
            log.warning(kv("delivery_retry", attempt=attempt, retry_after_secs=delay, error=reason))
            if self._abort.is_set() or (
                self._stop.is_set() and time.monotonic() - started > SHUTDOWN_DELIVERY_TIMEOUT_SECS
            ):
                raise _Stopped("delivery abandoned")
            deadline = time.monotonic() + delay
            while (remaining := deadline - time.monotonic()) > 0 and not self._abort.is_set():
                # Paused: no new records, but the group sees a live member.
                self._poll_and_feed(min(remaining, 0.5))
        self.metrics.record_stored(batch)
        if self._paused:
            self._set_paused(False)

    def _forward_alerts(self, batch: Batch) -> None:
        producer = self._alerts
        assert producer is not None
        topic = self.config.kafka.topics.alerts
        futures = [
            producer.send(topic, key=alert_id.encode(), value=orjson.dumps(alert.to_document()))
            for alert_id, alert in batch.alerts.items()
        ]
        producer.flush(timeout=30)
        for future in futures:
            future.get(timeout=0)
        self.metrics.record_alerts_forwarded(len(futures))

    def _set_paused(self, paused: bool) -> None:
        self._paused = paused
        self._apply_pauses()
        if paused:
            log.warning(kv("backpressure_on", partitions=len(self._parts)))
        else:
            log.info(kv("backpressure_off", partitions=len(self._parts)))
        self.metrics.backpressure.set(1 if paused else 0)

    def _apply_pauses(self) -> None:
        source = self._source
        assert source is not None
        want = set(self._parts) if self._paused else self._ahead & set(self._parts)
        if want - self._paused_now:
            source.pause(want - self._paused_now)
        if self._paused_now - want:
            source.resume(self._paused_now - want)
        self._paused_now = want

    def _align(self) -> None:
        """Pause partitions more than ALIGN_AHEAD_SECS of event time ahead of the slowest one with unread data.

        Catching up a backlog, one partition's fetch can bring minutes of event
        time while another has not delivered yet; everything read in between
        waits in the reorder buffer (and in every checkpoint). Reading the
        partitions abreast, as replay reads files, keeps that buffer near
        ``allowed_lateness_secs`` of traffic.
        """
        source = self._source
        assert source is not None
        clock = self._pipeline.order.stream_clock
        # Until its first fetch answers, a new partition's end is unknown: assume it has data.
        fresh = time.monotonic() - self._assigned_at < self._idle_timeout_secs
        behind = []
        for tp, part in self._parts.items():
            end = source.highwater(tp)
            if (end is None and fresh) or (end is not None and part.next_offset < end):
                behind.append(clock(part.stream))
        ahead: set[TopicPartition] = set()
        if behind and len(self._parts) > 1:
            limit = min(behind) + ALIGN_AHEAD_SECS
            ahead = {tp for tp, part in self._parts.items() if clock(part.stream) > limit}
        # One poll hands out up to max_poll_records of *one* partition: minutes of its event
        # time at once. Smaller polls while catching up let the pauses act in time.
        self._poll_records = ALIGNED_POLL_RECORDS if ahead or behind else None
        if ahead != self._ahead:
            self._ahead = ahead
            self._apply_pauses()

    # -- checkpoints and rebalances ---------------------------------------------

    def _checkpoint(self, commit: bool, force: bool = False) -> None:
        """Save the state with the offsets it covers, then commit them. Call right after a delivered drain."""
        self._last_checkpoint_at = time.monotonic()
        if not self._parts or not (self._dirty or force):
            return
        assert self._checkpoints is not None and self._source is not None
        offsets = {tp: part.next_offset for tp, part in self._parts.items()}
        started = time.monotonic()
        try:
            snapshot = self._pipeline.snapshot()
            snapshot_secs = time.monotonic() - started
            size = self._checkpoints.save(
                Checkpoint(
                    assignment=tuple(sorted(p.stream for p in self._parts.values())),
                    offsets={self._parts[tp].stream: offset for tp, offset in offsets.items()},
                    snapshot=snapshot,
                    created_at=time.time(),
                    config_digest=self._digest,
                )
            )
        except SourceError as error:
            self.metrics.record_error("checkpoint", "save")
            log.warning(kv("checkpoint_failed", error=str(error)))
            return
        elapsed = time.monotonic() - started
        self._checkpoint_interval_secs = max(CHECKPOINT_INTERVAL_SECS, elapsed / CHECKPOINT_MAX_TIME_SHARE)
        self.metrics.checkpoint_duration.observe(elapsed)
        self.metrics.checkpoint_bytes.set(len(snapshot))
        self.kafka_ok_at = time.monotonic()
        self._dirty = False
        log.debug(kv("checkpoint_saved", state_bytes=len(snapshot), stored_bytes=size, secs=elapsed,
                     snapshot_secs=snapshot_secs, next_in_secs=self._checkpoint_interval_secs))  # fmt: skip
        if commit:
            try:
                self._source.commit(offsets)
            except SourceError as error:
                self.metrics.record_error("kafka", "commit")
                log.warning(kv("commit_failed", error=str(error)))

    def _on_rebalance(self, rebalance: Rebalance) -> None:
        """Resume the new assignment: from its checkpoint if there is a usable one, else from committed offsets.

        Raises SourceError when Kafka cannot say where to resume (the caller retries).
        """
        source, checkpoints = self._source, self._checkpoints
        assert source is not None and checkpoints is not None
        assigned = sorted(rebalance.assigned)
        if self._parts:
            log.info(kv("partitions_changed", revoked=[stream_name(tp) for tp in rebalance.revoked],
                        assigned=[stream_name(tp) for tp in assigned]))  # fmt: skip
            if set(assigned) == set(self._parts) and self._nobody_moved_on(assigned):
                # Same partitions back (an eager rebalance revokes everything): keep the state as it is.
                source.seek({tp: part.next_offset for tp, part in self._parts.items()})
                self._paused_now = set(assigned)  # the listener paused them
                self._ahead = set()
                self._apply_pauses()
                log.info(kv("resumed", how="kept_state", partitions=len(assigned)))
                return
            # Save the old assignment's state (not committed: the partitions are gone) so that
            # getting the same partitions back later continues it.
            self._flush()
            self._checkpoint(commit=False)
            self._pipeline = Pipeline(self.config)
            self._parts = {}
            self._paused_now = set()
            self._ahead = set()
            self._streams = ()
            self._detector_errors = {}
            self.metrics.reset_pipeline_baseline()
        else:
            log.info(kv("partitions_assigned", assigned=[stream_name(tp) for tp in assigned]))
        if not assigned:
            return
        streams = tuple(stream_name(tp) for tp in assigned)
        started = time.monotonic()
        committed = source.committed(assigned)
        checkpoint = checkpoints.load(streams)
        self._pipeline = Pipeline(self.config)
        offsets, how = self._resume_point(assigned, streams, committed, checkpoint)
        missing = [tp for tp in assigned if offsets.get(tp) is None]
        if missing:
            offsets.update(source.beginning_offsets(missing))
        now = time.monotonic()
        parts: dict[TopicPartition, _Partition] = {}
        for tp in assigned:
            stream = stream_name(tp)
            self._pipeline.open_stream(stream)
            clock = self._pipeline.order.stream_clock(stream)
            parts[tp] = _Partition(stream, now, clock if math.isfinite(clock) else None, offsets[tp])  # type: ignore[arg-type]
        self._parts = parts
        self._streams = streams
        self._assigned_at = now
        self._poll_records = ALIGNED_POLL_RECORDS  # until _align knows better
        self.metrics.reset_pipeline_baseline(self._pipeline.order.late_events)
        source.seek({tp: part.next_offset for tp, part in parts.items()})
        self._paused_now = set(assigned)  # the listener paused them
        self._ahead = set()
        self._apply_pauses()
        self._last_checkpoint_at = time.monotonic()
        self._dirty = how != "checkpoint"
        log.info(kv("resumed", how=how, partitions=len(assigned), secs=time.monotonic() - started,
                    offsets=[f"{stream_name(tp)}@{part.next_offset}" for tp, part in parts.items()]))  # fmt: skip

    def _nobody_moved_on(self, assigned: list[TopicPartition]) -> bool:
        assert self._source is not None
        committed = self._source.committed(assigned)
        return all(committed[tp] is None or committed[tp] <= self._parts[tp].next_offset for tp in assigned)  # type: ignore[operator]

    def _resume_point(
        self,
        assigned: list[TopicPartition],
        streams: tuple[str, ...],
        committed: dict[TopicPartition, int | None],
        checkpoint: Checkpoint | None,
    ) -> tuple[dict[TopicPartition, int | None], str]:
        reason = "no_checkpoint"
        if checkpoint is not None:
            stale = [
                tp for tp in assigned
                if committed[tp] is not None and checkpoint.offsets.get(stream_name(tp), -1) < committed[tp]  # type: ignore[operator]
            ]  # fmt: skip
            if checkpoint.config_digest != self._digest:
                reason = "config_changed"
            elif tuple(sorted(checkpoint.assignment)) != tuple(sorted(streams)):
                reason = "other_assignment"
            elif stale:
                # Another member moved these partitions on since: its state is newer than ours.
                reason = "stale_checkpoint"
            else:
                try:
                    self._pipeline.restore(checkpoint.snapshot)
                except Exception as error:  # noqa: BLE001 (a snapshot from another code version)
                    self._pipeline = Pipeline(self.config)
                    reason = "restore_failed"
                    log.warning(kv("checkpoint_unusable", error=repr(error)))
                else:
                    return {tp: checkpoint.offsets[stream_name(tp)] for tp in assigned}, "checkpoint"
        log.warning(
            kv("state_fresh", reason=reason,
               note="event-time state starts empty: windows and open requests before the committed offsets are lost")
        )  # fmt: skip
        return dict(committed), "committed_offsets"

    # -- observability ----------------------------------------------------------

    def _update_lag(self) -> None:
        source = self._source
        assert source is not None
        self._last_lag_at = time.monotonic()
        probe = list(self._parts) or [TopicPartition(self.config.kafka.topics.gateway, 0)]
        try:
            ends = source.end_offsets(probe)
        except SourceError as error:
            self.metrics.record_error("kafka", "end_offsets")
            log.warning(kv("kafka_unreachable", error=str(error)))
            return
        self.kafka_ok_at = time.monotonic()
        for tp, part in self._parts.items():
            end = ends.get(tp)
            if end is not None:
                self.metrics.consumer_lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, end - part.next_offset)
                )

    def _shutdown(self) -> None:
        log.info(kv("stopping", partitions=len(self._parts)))
        if self._pending_rebalance is not None or (self._source is not None and self._source.rebalance_pending):
            return  # the state belongs to partitions we may no longer own; the last checkpoint stands
        self._flush()
        self._checkpoint(commit=True, force=True)

    def health(self) -> tuple[bool, bool, dict[str, Any]]:
        """(alive, ready, details) for /healthz and /readyz; called from the HTTP thread."""
        now = time.monotonic()
        loop_age = now - self.loop_at
        kafka_age = None if self.kafka_ok_at is None else now - self.kafka_ok_at
        alive = loop_age < max(60.0, 3 * RETRY_MAX_SECS)
        kafka_ok = kafka_age is not None and kafka_age < 30.0
        ready = alive and kafka_ok and self.store_ok and not self._stop.is_set()
        details = {
            "loop_age_secs": round(loop_age, 3),
            "kafka_age_secs": None if kafka_age is None else round(kafka_age, 3),
            "store_ok": self.store_ok,
            "backpressure": self._paused,
            "paused_ahead": len(self._ahead),
            "partitions": list(self._streams),
        }
        return alive, ready, details


__all__ = ["CHECKPOINT_INTERVAL_SECS", "Service", "kv", "serve"]
