"""``gatewatch serve`` without Kafka: HTTP ingest and ``--follow`` feed the local pipeline, as ``replay`` does.

Chosen when the config has no ``kafka`` section (or ``kafka.bootstrap_servers: []``)::

    POST /v1/ingest/{side} --decode (HTTP threads)--> queue --+
    --follow files ----------------------------- poll --------+--> pipeline thread:
        feed -> process -> drain -> store + forwarders -> checkpoint file -> acknowledge

One thread owns the :class:`~gatewatch.topology.Pipeline` and the store: it
takes every queued batch at once, so under load a cycle carries many batches
and one store write and one checkpoint serve them all (group commit).

What is durable, and when (:mod:`gatewatch.local_checkpoint`): the store holds
the records (events, dead letters, transactions, alerts); the checkpoint file
holds the detection state with the follow positions and the batch ids it
covers, saved every few seconds (so that saving takes at most
:data:`CHECKPOINT_SHARE` of the time); the batch log beside it holds every HTTP
batch acknowledged since. An HTTP batch is answered 2xx once its records are
stored and it is in the batch log (fsynced); a file's read position is saved
with a checkpoint. After a crash (even ``kill -9``) a restart restores the
checkpoint and feeds the logged batches again, so the state has seen exactly
the acknowledged batches and the lines up to the saved positions: files are
re-read from there; a batch the shipper was not answered is posted again and
counted once (the restored state never saw it; in the store it overwrites
itself by id); a batch it was answered is answered 200 ``duplicate`` again
(the last :data:`~gatewatch.local_checkpoint.REMEMBERED_BATCHES` ids are kept).

Ordering: every HTTP side and every followed side is one input stream
(``http:gateway``, ``follow:app``, ...) numbered by this process, its records
keeping their ids from where they entered (``http:<source>:<batch id>:<n>``,
``file:<fingerprint>`` and byte offset), as with Kafka. A stream that goes quiet
stops holding the watermark after ``correlate.idle_timeout_secs`` (the rule of
:mod:`gatewatch.serve_idle`, with every local input always caught up).

Back-pressure: bodies in flight are bounded by ``http_ingest.max_in_flight_bytes``
(beyond: 429); while the store is down the batch in hand is retried with
backoff, new batches are answered 503 with ``Retry-After`` and files are not
read, so memory stays bounded; a batch waiting longer than
``http_ingest.produce_timeout_secs`` to become durable is answered 503 (its
retry waits for the same batch, never feeds it again).
"""

from __future__ import annotations

import concurrent.futures
import logging
import math
import signal
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gatewatch import installed_version
from gatewatch.config import kafka_configured
from gatewatch.errors import ConfigError, StoreError, StoreUnavailableError
from gatewatch.forward import ForwarderSet, build_forwarders
from gatewatch.http_ingest import IngestAnswer, LocalHttpIngest, UnpackedBatch, add_ingest_off_route, add_routes
from gatewatch.local_checkpoint import (
    REMEMBERED_BATCHES, BatchLog, LocalState, LoggedBatch, check_writable, load_local_state, save_local_state,
)  # fmt: skip
from gatewatch.metrics import HealthServer, ServeMetrics
from gatewatch.serve_idle import IdleInputs
from gatewatch.serve_stage import RETRY_MAX_SECS, LateNotice, kv, log_input_notes
from gatewatch.stop_signals import stop_on_signals
from gatewatch.stores import open_store
from gatewatch.topology import Pipeline, detector_configs
from gatewatch.unread import InputWatch
from ingest.records import Dataset, Origin, RawRecord
from ingest.sinks.base import Batch, Sink
from ingest.sources.revocations import refresh_shared_revocations
from ingest.sources.tail import Follower, check_positions_path

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig

__all__ = ["LocalPipeline", "LocalService", "kafka_configured", "serve_local"]

log = logging.getLogger(__name__)

CHECKPOINT_SHARE = 0.2  # at most this share of the pipeline thread's time goes to saving
MIN_CHECKPOINT_INTERVAL_SECS = 1.0  # the batch log grows by what arrives in between
MAX_QUEUED_RECORDS = 200_000  # records waiting for the pipeline thread; beyond: 429
FOLLOW_POLL_SECS = 0.25
SHUTDOWN_DELIVERY_TIMEOUT_SECS = 60.0
_DATASETS = {"gateway": Dataset.GATEWAY, "app": Dataset.APP}
_SIDES = {dataset: side for side, dataset in _DATASETS.items()}


@dataclass(slots=True)
class _Submission:
    """An HTTP batch queued for (or fed to) the pipeline; ``future`` becomes True once durable, False if dropped."""

    key: str  # <source>:<batch id>
    unpacked: UnpackedBatch
    future: concurrent.futures.Future[bool]


class LocalPipeline:
    """The pipeline thread (see the module docstring): :meth:`offer` from any thread, :meth:`run` on its own."""

    def __init__(
        self,
        config: GatewatchConfig,
        sink: Sink | None,
        forwarders: ForwarderSet | None,
        metrics: ServeMetrics,
        checkpoint_path: Path,
        follow: tuple[dict[Dataset, list[str]], Path] | None,
        stop: threading.Event,
    ) -> None:
        self.config = config
        self.metrics = metrics
        self.checkpoint_path = checkpoint_path
        self._sink = sink
        self._forwarders = forwarders
        self._stop = stop
        self.abort = threading.Event()  # a second stop signal: give up a delivery still retrying
        self.pipeline = Pipeline(config)
        state = load_local_state(checkpoint_path)
        self._acknowledged: OrderedDict[str, None] = OrderedDict()
        self._batch_log = BatchLog(checkpoint_path.with_name(checkpoint_path.name + ".batches"))
        self._logged_seq = state.logged_seq if state is not None else 0
        self._to_replay = self._batch_log.read(self._logged_seq)
        positions = None
        if state is not None:
            self.pipeline.restore(state.snapshot)
            positions = state.positions
            self._acknowledged.update((key, None) for key in state.batches[-REMEMBERED_BATCHES:])
            log.info(kv("checkpoint_restored", path=checkpoint_path, bytes=len(state.snapshot),
                        files=len(positions), batches=len(self._acknowledged)))  # fmt: skip
        self._follower: Follower | None = None
        if follow is not None:
            patterns, positions_path = follow
            max_line = max(config.gateway.max_line_bytes, config.app.max_line_bytes)
            unwraps = {Dataset.GATEWAY: config.gateway.unwrap, Dataset.APP: config.app.unwrap}
            self._follower = Follower(patterns, positions_path, max_line, positions=positions, unwraps=unwraps)
        self._idle = IdleInputs(config.correlate.idle_timeout_secs)
        # The restored inputs count as delivered now: once quiet they are advanced with the wall clock, as
        # in the Kafka stage. Closed as never delivering, they left nothing to move event time after a
        # restart without new traffic, and open windows waited for the next record.
        restarted = time.time()
        for stream in self.pipeline.stream_offsets:
            if math.isfinite(clock := self.pipeline.stream_clock(stream)):
                self._idle.delivered(stream, restarted, clock)
        self._inputs = InputWatch(config, early=True)
        self._late = LateNotice()
        # Inputs are numbered past what the (restored) state has seen: a record is never taken for a re-delivery.
        self._next_offset = {stream: offset + 1 for stream, offset in self.pipeline.stream_offsets.items()}
        self._rejected_seen = 0
        self._lock = threading.Condition()
        self._queue: deque[_Submission] = deque()
        self._queued_records = 0
        self._pending: dict[str, _Submission] = {}  # queued or fed, not yet durable
        self._dirty = False  # state changed since the last checkpoint
        self._last_save_at = time.monotonic()
        self._held: tuple[LocalState, tuple[int, ...]] | None = None  # see _checkpoint
        self._last_save_secs = 0.0
        self.store_ok = True
        self.retry_after_secs = 1.0
        self.stopping = False
        self.loop_at = time.monotonic()
        self.code = 0

    # -- any thread ---------------------------------------------------------------

    def offer(self, unpacked: UnpackedBatch) -> tuple[concurrent.futures.Future[bool], bool] | IngestAnswer:
        """Queue a decoded batch: (its future, whether it was acknowledged before), or the answer to give now."""
        key = f"{unpacked.source}:{unpacked.batch_id}"
        with self._lock:
            if key in self._acknowledged:
                done: concurrent.futures.Future[bool] = concurrent.futures.Future()
                done.set_result(True)
                return done, True
            pending = self._pending.get(key)
            if pending is not None:
                return pending.future, False  # a retry of a batch in hand: wait for it, never feed it twice
            if self.stopping:
                return IngestAnswer(503, {"error": "stopping: retry"}, {"Retry-After": "5"})
            if not self.store_ok:
                return IngestAnswer(503, {"error": "the store is unavailable: retry"}, self.retry_after())
            if self._queued_records > MAX_QUEUED_RECORDS:
                return IngestAnswer(429, {"error": "too many records queued"}, {"Retry-After": "1"})
            submission = _Submission(key, unpacked, concurrent.futures.Future())
            self._queue.append(submission)
            self._queued_records += len(unpacked.batch.values)
            self._pending[key] = submission
            self._lock.notify()
            return submission.future, False

    def retry_after(self) -> dict[str, str]:
        """The ``Retry-After`` header of a 503: the store's own retry delay, in whole seconds."""
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_secs)))}

    def queued_records(self) -> int:
        return self._queued_records

    # -- the pipeline thread --------------------------------------------------------

    def run(self) -> None:
        """Cycle until stopped, then finish what was taken in, checkpoint and return (exit code in ``code``)."""
        try:
            self._recover()
            while not self._stop.is_set():
                self.loop_at = time.monotonic()
                refresh_shared_revocations(self.loop_at)  # a token revoked now counts from now on
                self._cycle(self._take(wait_secs=self._wait_secs()))
            with self._lock:
                self.stopping = True
            self._cycle(self._take(wait_secs=0.0))
            if self._forwarders is not None:  # queues delivered or dead-lettered: the checkpoint covers all
                self._forwarders.close()
            self._held, self._dirty = None, True
            self._checkpoint()
        except _Abandoned:
            self.code = 1
            log.warning(kv("stopped_without_checkpoint", reason="store_unavailable"))
        except StoreError as error:  # not retryable: the store refused the batch; nothing after it is acknowledged
            self.code = 1
            self.metrics.record_error("store", "rejected")
            log.error(kv("store_failed", stage="local", error=str(error)))
        except BaseException:  # noqa: BLE001 (a dead pipeline thread must stop the process, not hide)
            self.code = 1
            log.exception(kv("pipeline_failed"))
        finally:
            with self._lock:
                self.stopping = True
                dropped = list(self._queue) + list(self._pending.values())
                self._queue.clear()
                self._pending.clear()
            for submission in dropped:
                if not submission.future.done():
                    submission.future.set_result(False)
            if self.code:
                self._stop.set()

    def close(self) -> None:
        if self._follower is not None:
            self._follower.close()

    def _recover(self) -> None:
        """Feed the batches logged after the checkpoint again, store their outputs, checkpoint."""
        replay, self._to_replay = self._to_replay, []
        if not replay:
            self._batch_log.reset()  # drops a last entry a crash cut short
            return
        records: list[RawRecord] = []
        for logged in replay:
            records += self._http_records(logged.source, logged.batch_id, logged.values)
            self._acknowledged[f"{logged.source}:{logged.batch_id}"] = None
            self._logged_seq = logged.seq
        self.pipeline.feed(records)
        self.pipeline.process()
        batch = self.pipeline.drain()
        if len(batch):
            self._deliver(batch)
        self._dirty = True
        self._checkpoint()
        log.info(kv("batch_log_replayed", batches=len(replay), records=len(records)))

    def _wait_secs(self) -> float:
        if self._held is not None:
            return FOLLOW_POLL_SECS  # soon again: it is saved once the forwarders settled its events
        if self._dirty:
            return max(0.0, self._checkpoint_interval() - (time.monotonic() - self._last_save_at))
        return FOLLOW_POLL_SECS

    def _take(self, wait_secs: float) -> list[_Submission]:
        with self._lock:
            if not self._queue and wait_secs > 0 and not self._stop.is_set():
                self._lock.wait(wait_secs)
            taken = list(self._queue)
            self._queue.clear()
            self._queued_records = 0
            return taken

    def _cycle(self, submissions: list[_Submission]) -> None:
        records = self._records(submissions)
        followed = self._follower.poll() if self._follower is not None else []
        records += self._follow_records(followed)
        pipeline = self.pipeline
        wall = time.time()
        if records:
            pipeline.feed(records)
            for stream in {record.origin.stream for record in records}:
                self._idle.delivered(stream, wall, pipeline.stream_clock(stream))
        with self._lock:
            caught_up = not self._queue
        if caught_up:
            # Local inputs are always caught up: a quiet one is advanced with the wall clock (see __init__).
            streams = set(self._idle.last_wall) | set(pipeline.stream_offsets)
            for move in self._idle.on_progress(wall, dict.fromkeys(streams, (0, 0))):
                if move.ts is None:
                    pipeline.close_stream(move.stream)
                else:
                    pipeline.advance_stream(move.stream, move.ts)
        pipeline.process()
        batch = pipeline.drain()
        self._count(submissions, followed, batch)
        if len(batch):
            self._deliver(batch)
        if submissions:
            self._acknowledge(submissions)
        self._dirty = self._dirty or bool(records) or len(batch) > 0
        if self._dirty and time.monotonic() - self._last_save_at >= self._checkpoint_interval():
            self._checkpoint()
        elif self._held is not None:
            self._save_held()

    def _records(self, submissions: list[_Submission]) -> list[RawRecord]:
        records: list[RawRecord] = []
        for submission in submissions:
            unpacked = submission.unpacked
            records += self._http_records(unpacked.source, unpacked.batch_id, unpacked.batch.values)
        return records

    def _http_records(self, source: str, batch_id: str, values: list[bytes]) -> list[RawRecord]:
        dataset = _DATASETS[source]
        stream, entered = f"http:{source}", f"http:{source}:{batch_id}"
        start = self._next_offset.get(stream, 0)
        self._next_offset[stream] = start + len(values)
        return [
            RawRecord(Origin(dataset, stream, start + i), value, id_origin=Origin(dataset, entered, i + 1))
            for i, value in enumerate(values)
        ]

    def _acknowledge(self, submissions: list[_Submission]) -> None:
        """Log the stored batches (fsync), then answer them 2xx."""
        logged = []
        for submission in submissions:
            self._logged_seq += 1
            unpacked = submission.unpacked
            logged.append(LoggedBatch(self._logged_seq, unpacked.source, unpacked.batch_id, unpacked.batch.values))
        self._batch_log.append(logged)
        with self._lock:
            for submission in submissions:
                self._acknowledged[submission.key] = None
                self._pending.pop(submission.key, None)
            while len(self._acknowledged) > REMEMBERED_BATCHES:
                self._acknowledged.popitem(last=False)
        for submission in submissions:
            submission.future.set_result(True)

    def _follow_records(self, followed: list[RawRecord]) -> list[RawRecord]:
        records: list[RawRecord] = []
        offsets = self._next_offset
        for record in followed:
            stream = f"follow:{_SIDES[record.origin.dataset]}"
            offset = offsets.get(stream, 0)
            offsets[stream] = offset + 1
            records.append(RawRecord(Origin(record.origin.dataset, stream, offset), record.line, record.created,
                                     id_origin=record.origin))  # fmt: skip
        return records

    def _deliver(self, batch: Batch) -> None:
        """Write ``batch`` to the store until it is stored; raises _Abandoned when giving up (a second signal)."""
        started = time.monotonic()
        while True:
            try:
                if self._sink is not None:
                    with self.metrics.bulk_duration.time():
                        self._sink.write(batch)
                break
            except StoreUnavailableError as error:
                self.metrics.record_error("store", "unavailable")
                delay = min(max(error.retry_after_secs, 0.5), RETRY_MAX_SECS)
                with self._lock:
                    if self.store_ok:
                        self.metrics.set_backpressure("local", True)
                        log.warning(kv("backpressure_on", stage="local", error=str(error)))
                    self.store_ok, self.retry_after_secs = False, delay
                log.warning(kv("delivery_retry", retry_after_secs=delay, error=str(error)))
                deadline = time.monotonic() + delay
                while (remaining := deadline - time.monotonic()) > 0:
                    self.loop_at = time.monotonic()
                    if self.abort.is_set() or (
                        self._stop.is_set() and time.monotonic() - started > SHUTDOWN_DELIVERY_TIMEOUT_SECS
                    ):
                        raise _Abandoned from None
                    self.abort.wait(min(remaining, 0.5))
        if not self.store_ok:
            with self._lock:
                self.store_ok = True
            self.metrics.set_backpressure("local", False)
            log.info(kv("backpressure_off", stage="local"))
        self._count_rejected()
        self.metrics.record_stored(batch)
        if self._forwarders is not None:
            self._forwarders.submit(batch.alert_events)  # queued: delivered on the forwarders' own threads

    def _count_rejected(self) -> None:
        # Search sinks turn refused documents into dead letters and only count them; the metrics see them here.
        rejected = int(getattr(self._sink, "docs_rejected", 0))
        self.metrics.record_documents_rejected(rejected - self._rejected_seen)
        self._rejected_seen = rejected

    def _checkpoint_interval(self) -> float:
        return max(MIN_CHECKPOINT_INTERVAL_SECS, self._last_save_secs / CHECKPOINT_SHARE)

    def _checkpoint(self) -> None:
        """Save state, positions and batch ids; then empty the batch log and save the follow positions file.

        The forwarders' queues are in memory only: while they hold lifecycle events, the state is
        taken now and saved once every one of those is sent or dead-lettered (:meth:`_save_held`),
        so a crash before then re-sends them instead of losing them.
        """
        if self._held is not None:
            self._save_held()
        if not self._dirty:
            return
        started = time.monotonic()
        follower = self._follower
        with self._lock:
            batches = list(self._acknowledged)
        state = LocalState(self.pipeline.snapshot(), follower.positions() if follower else {}, batches, time.time(),
                           self._logged_seq)  # fmt: skip
        forwarders = self._forwarders
        if forwarders is not None and not forwarders.settled(mark := forwarders.mark()):
            if self._held is None:  # else the one held first goes first
                self._held, self._dirty = (state, mark), False
            return
        self._save(state, started, held=False)

    def _save_held(self) -> None:
        assert self._held is not None
        state, mark = self._held
        if self._forwarders is None or self._forwarders.settled(mark):
            self._held = None
            self._save(state, time.monotonic(), held=True)

    def _save(self, state: LocalState, started: float, held: bool) -> None:
        size = save_local_state(self.checkpoint_path, state)
        # A crash before this: the restart skips what the checkpoint covers, by seq.
        if held:
            self._batch_log.keep_after(state.logged_seq)  # batches logged since it was taken stay
        else:
            self._batch_log.reset()
            if self._follower is not None:  # the positions file too, for whoever reads it (a restart takes the
                self._follower.commit()  # checkpoint's)
        elapsed = time.monotonic() - started
        self._last_save_at, self._last_save_secs = time.monotonic(), elapsed
        if not held:
            self._dirty = False
        metrics = self.metrics
        metrics.checkpoint_duration.observe(elapsed)
        metrics.checkpoint_bytes.set(size)
        metrics.checkpoint_saved.set_to_current_time()

    def _count(self, submissions: list[_Submission], followed: list[RawRecord], batch: Batch) -> None:
        metrics = self.metrics
        for submission in submissions:
            unpacked = submission.unpacked
            metrics.record_http_received(unpacked.source, len(unpacked.batch.values), unpacked.body_bytes,
                                         len(unpacked.batch.invalid_lines))  # fmt: skip
        for dataset, count in Counter(record.origin.dataset for record in followed).items():
            side = _SIDES[dataset]
            metrics.received_events.labels(component="file", topic=side).inc(count)
            metrics.received_bytes.labels(component="file", topic=side).inc(
                sum(len(r.line) for r in followed if r.origin.dataset is dataset)
            )
        if batch.dead_letters:
            metrics.record_dead_letters(Counter(letter.reason for letter in batch.dead_letters))
        log_input_notes(self._inputs.observe(batch.events, batch.dead_letters))
        counts = self.pipeline.take_counts()
        metrics.record_pipeline_counts(counts)
        self._late.add(counts.late_events)
        watermark = self.pipeline.watermark
        if math.isfinite(watermark):
            metrics.watermark.set(watermark)


class _Abandoned(Exception):
    pass


class LocalService:
    """HTTP ingest, ``--follow`` and the pipeline thread of a serve without Kafka; :meth:`run` until stopped."""

    def __init__(
        self,
        config: GatewatchConfig,
        store_url: str,
        listen: str,
        checkpoint_path: Path,
        follow: tuple[dict[Dataset, list[str]], Path] | None = None,
        stop: threading.Event | None = None,
    ) -> None:
        tokens = config.http_ingest.tokens
        if follow is None and not (tokens.gateway or tokens.app):
            raise ConfigError(
                "serve without Kafka needs an input: --follow SIDE=GLOB, or http_ingest.tokens "
                "(or a kafka section naming the brokers)"
            )
        # Before the store opens: a file that cannot be written fails the start with one line, not a thread later.
        check_writable(checkpoint_path)
        if follow is not None:
            check_positions_path(follow[1])
        self.config = config
        self.store_url = store_url
        self.listen = listen
        self.checkpoint_path = checkpoint_path
        self.follow = follow
        self.metrics = ServeMetrics()
        self._stop = stop or threading.Event()

    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        """First call: finish the batches taken in, checkpoint, stop. Second: give up a store still down."""
        pipeline = getattr(self, "_pipeline", None)
        if self._stop.is_set() and pipeline is not None:
            pipeline.abort.set()
        self._stop.set()
        log.info(kv("stop_requested", signal=signal.Signals(signum).name if signum else "-"))

    def run(self) -> int:
        sink = self._open_store()
        if sink is None and self._stop.is_set():
            return 1
        forwarders = None
        http: HealthServer | None = None
        pipeline: LocalPipeline | None = None
        try:
            forwarders = build_forwarders(self.config, self._count_forwarded)
            self.metrics.start_detection(detector_configs(self.config), (f.name for f in self.config.forward))
            pipeline = self._pipeline = LocalPipeline(
                self.config, sink, forwarders, self.metrics, self.checkpoint_path, self.follow, self._stop
            )
            tokens = self.config.http_ingest.tokens
            routes: Callable[[Any], None] = add_ingest_off_route
            if tokens.gateway or tokens.app:
                routes = partial(add_routes, ingest=LocalHttpIngest(self.config, self.metrics, pipeline))
            http = HealthServer(self.listen, self.metrics, partial(self.health, pipeline), routes=routes)
            log.info(kv("started", version=installed_version(), mode="local", store=self.store_url.split(":")[0],
                        listen=self.listen, checkpoint=self.checkpoint_path, follow=self.follow is not None))  # fmt: skip
            thread = threading.Thread(target=pipeline.run, name="gatewatch-local", daemon=True)
            thread.start()
            while thread.is_alive():
                thread.join(timeout=0.5)
            code = pipeline.code
        finally:
            if http is not None:
                http.close()
            if pipeline is not None:
                pipeline.close()
            if forwarders is not None:
                forwarders.close()
            if sink is not None:
                sink.close()
        log.info(kv("stopped", exit_code=code))
        return code

    def _open_store(self) -> Sink | None:
        while True:
            try:
                return open_store(self.store_url, self.config)
            except StoreUnavailableError as error:
                self.metrics.record_error("store", "unavailable")
                delay = min(max(error.retry_after_secs, 0.5), RETRY_MAX_SECS)
                log.warning(kv("store_unreachable", error=str(error), retry_after_secs=delay))
                if self._stop.wait(delay):
                    return None

    def _count_forwarded(self, forwarder: str, outcome: str, count: int) -> None:
        if outcome == "sent":
            self.metrics.sent_events.labels(component=f"forward_{forwarder}", kind="alert_events").inc(count)
        elif outcome != "filtered":
            self.metrics.record_error(f"forward_{forwarder}", outcome, count)

    def health(self, pipeline: LocalPipeline) -> tuple[bool, bool, dict[str, Any]]:
        """(alive, ready, details) for /healthz and /readyz."""
        loop_age = time.monotonic() - pipeline.loop_at
        alive = loop_age < max(60.0, 3 * RETRY_MAX_SECS)
        ready = alive and pipeline.store_ok and not self._stop.is_set()
        details = {"mode": "local", "loop_age_secs": round(loop_age, 3), "store_ok": pipeline.store_ok,
                   "queued_records": pipeline.queued_records()}  # fmt: skip
        return alive, ready, details


def serve_local(
    config: GatewatchConfig,
    store_url: str,
    listen: str,
    checkpoint_path: Path,
    follow: tuple[dict[Dataset, list[str]], Path] | None = None,
    stop: threading.Event | None = None,
) -> int:
    """Run a serve without Kafka until SIGTERM/SIGINT (or ``stop`` is set); return the exit code."""
    service = LocalService(config, store_url, listen, checkpoint_path, follow, stop)
    with stop_on_signals(service.request_stop):
        return service.run()
