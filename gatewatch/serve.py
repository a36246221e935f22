"""``gatewatch serve``: consume Kafka, store and detect until stopped.

Two stages, each with its own consumer group and thread; detection is split
by key over every process of the group (issue 14), so any number of serve
processes store the same data and raise the same alerts as one::

    gateway, app topics (any keying, any partition counts)
       |  ingest (group <group_id>): parse -> store events + dead letters
       v
    <group_id>-requests   P partitions, by crc32(request id) % P; progress to all
       |  JOIN task per partition: order, correlate, one-request rules; stores transactions
       v                                               (their findings -> findings)
    <group_id>-keyed      P partitions, by the rule's entity
       |  KEYED task per partition: bursts, token replay, behaviour_outlier's per-client features
       v
    <group_id>-findings   1 partition: findings of the join and keyed tasks, feature rows
          ALERT task: alert book, lifecycle, behaviour_outlier's model;
          stores alerts, lifecycle events -> kafka.topics.alerts + forwarders

Ingest (:mod:`gatewatch.serve_ingest`) is stateless and idempotent: a
rebalance or a crash only makes the next owner re-read from the committed
offsets. Detect (:mod:`gatewatch.serve_detect`) runs one task per internal
partition it is assigned (group ``<group_id>-detect``), each checkpointed with
the offset it covers, so a rebalance moves partitions, not the whole detector.
P and the topics: :mod:`gatewatch.serve_topics`.

Delivery is at-least-once with idempotent outputs: ingest commits input
offsets only after the store acknowledged the events and dead letters *and*
the requests topic has the events; a task's offset is committed only after
its messages, stored documents and alert events were acknowledged and a
checkpoint covers them; repeated messages are dropped downstream by sequence.

Stopping (SIGTERM/SIGINT): ingest finishes the batch in hand, commits and
leaves its group; then detect reads its partitions to their end (at most
DRAIN_TIMEOUT_SECS), stores, checkpoints, commits and leaves. A second signal
abandons a delivery that is still retrying (the records are re-read on
restart) and skips the drain.

``--stages ingest`` or ``--stages detect`` runs one stage only; the default runs both.

HTTP (``--listen``): ``/healthz`` (the stages' loops alive), ``/readyz`` (Kafka and
the store answered recently), ``/metrics`` (Prometheus, see :mod:`gatewatch.metrics`),
and with ``http_ingest.tokens`` set, ``POST /v1/ingest/{gateway|app}``
(:mod:`gatewatch.http_ingest`: batches produced to the input topics).
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafka.errors import KafkaError

from gatewatch import installed_version
from gatewatch.checkpoint import config_digest
from gatewatch.errors import FencedError, StoppedError, StoreError, StoreUnavailableError
from gatewatch.follow import FollowStage
from gatewatch.http_ingest import HttpIngest, add_ingest_off_route, add_routes
from gatewatch.metrics import HealthServer, ServeMetrics
from gatewatch.serve_detect import DetectStage
from gatewatch.serve_ingest import IngestStage
from gatewatch.serve_stage import RETRY_MAX_SECS, Shared, kv
from gatewatch.serve_topics import ensure_internal_topics
from gatewatch.stop_signals import stop_on_signals
from gatewatch.store_writer import StoreWriter
from gatewatch.stores import open_store
from ingest.records import Dataset
from ingest.sinks.base import Sink
from ingest.sources.kafka_settings import check_login, unreachable

if TYPE_CHECKING:
    from collections.abc import Callable

    from gatewatch.config import GatewatchConfig

log = logging.getLogger(__name__)


STAGES = ("all", "ingest", "detect")
# The interpreter lock's switch interval while both stages run in this process (Python's default:
# 5 ms). The ingest and detect threads both compute and take the lock from each other every
# interval, each time on cold caches; at 50 ms bench_serve.py measured 35.0-39.8 us of CPU a record
# against 37.3-44.1 (six runs each, alternating), both threads cheaper. With one stage a process
# (--stages) it measured no change, so those keep the default. The cost: a Kafka IO thread waits up
# to this long for the lock while both compute (never while serve idles: no alert waits for it then).
SWITCH_INTERVAL_SECS = 0.05


def serve(
    config: GatewatchConfig,
    store_url: str,
    listen: str,
    *,
    stages: str = "all",
    stop: threading.Event | None = None,
    follow: tuple[dict[Dataset, list[str]], Path] | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or ``stop`` is set); return the process exit code.

    ``follow``: (globs per dataset, positions file) of ``--follow``, tailed into the input topics.
    """
    _default_log_level()
    service = Service(config, store_url, listen, stages=stages, stop=stop, follow=follow)
    switch_interval = sys.getswitchinterval()
    if stages == "all":
        sys.setswitchinterval(SWITCH_INTERVAL_SECS)
    try:
        with stop_on_signals(service.request_stop):
            return service.run()
    finally:
        sys.setswitchinterval(switch_interval)


def _default_log_level() -> None:
    # A service logs its lifecycle at INFO even when the CLI runs at WARNING.
    for name in (__name__, "gatewatch.checkpoint", "ingest.sources.kafka"):
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)


class Service:
    """The stages (both by default), their store and the HTTP endpoint; :meth:`run` opens, loops and closes."""

    def __init__(
        self,
        config: GatewatchConfig,
        store_url: str,
        listen: str,
        stages: str = "all",
        stop: threading.Event | None = None,
        follow: tuple[dict[Dataset, list[str]], Path] | None = None,
    ) -> None:
        if stages not in STAGES:
            raise ValueError(f"stages must be one of {', '.join(STAGES)}, not {stages!r}")
        self.config = config
        self.store_url = store_url
        self.listen = listen
        self.metrics = ServeMetrics()
        self._stop = stop or threading.Event()
        self._shared = Shared(config, self.metrics, self._stop)
        self._ingest = IngestStage(self._shared)
        self._detect = DetectStage(self._shared, config_digest(config))
        self._running = [stage for name, stage in (("ingest", self._ingest), ("detect", self._detect))
                         if stages in ("all", name)]  # fmt: skip
        self._http: HealthServer | None = None
        self._http_ingest: HttpIngest | None = None
        self._follow_spec = follow
        self._follow: FollowStage | None = None
        self._ingest_done = threading.Event()
        self._detect_code = 0

    # -- lifecycle --------------------------------------------------------------

    def request_stop(self, signum: int | None = None, frame: Any = None) -> None:
        """First call: stop after the batch in hand. Second: abandon a delivery that keeps failing."""
        if self._stop.is_set():
            self._shared.abort.set()
        self._stop.set()
        log.info(kv("stop_requested", signal=signal.Signals(signum).name if signum else "-"))

    def run(self) -> int:
        kafka = self.config.kafka
        check_login(kafka)  # a refused login stops here with one line, not in every client's retry loop
        try:
            # Before the store: a misspelt topic or a P that cannot be stops here, not after templates are installed.
            topics = ensure_internal_topics(kafka)
            tokens = self.config.http_ingest.tokens
            routes: Callable[[Any], None] = add_ingest_off_route
            if tokens.gateway or tokens.app:
                self._http_ingest = HttpIngest(self.config, self.metrics)
                routes = partial(add_routes, ingest=self._http_ingest)
            self._http = HealthServer(self.listen, self.metrics, self.health, routes=routes)
            if self._follow_spec is not None:
                self._follow = FollowStage(self.config, self.metrics, *self._follow_spec)
            sink = self._open_store()
            if sink is not None:
                # Two bulks in flight keep a search node busy; a sink not made for that gets one thread.
                threads = 2 if getattr(sink, "thread_safe", False) else 1
                self._shared.writer = StoreWriter(sink, self.config.store.bulk_max_docs, self.metrics, threads)
            for stage in self._running:
                stage.open(topics)
        except KafkaError as error:
            self._close()
            raise unreachable(kafka, error) from None
        except StoppedError:
            self._close()
            log.warning(kv("stopped", reason="store_never_answered", exit_code=1))
            return 1
        except BaseException:
            self._close()
            raise
        log.info(
            kv("started", version=installed_version(), bootstrap=kafka.bootstrap_servers, group=kafka.group_id,
               store=self.store_url.split(":")[0],
               topics=[kafka.topics.gateway, kafka.topics.app], detect_partitions=self._partitions(),
               alerts_topic=kafka.topics.alerts, listen=self.listen)
        )  # fmt: skip
        if self._follow is not None:
            self._follow.start()
        detect = threading.Thread(target=self._run_detect, name="gatewatch-detect", daemon=True)
        if self._detect in self._running:
            detect.start()
        ingests = self._ingest in self._running
        code = 0
        try:
            while not self._stop.is_set():
                if ingests:
                    self._ingest.step()
                else:
                    self._stop.wait(1.0)
            if ingests:
                self._ingest.shutdown()
        except StoppedError:
            log.warning(kv("stopped_without_commit", stage="ingest", reason="store_unavailable"))
            code = 1
        except FencedError as error:
            log.error(kv("fenced", stage="ingest", error=str(error)))
            code = 1
        except StoreError as error:
            # Not retryable (the store refused the batch): stop without committing, so nothing is lost.
            self.metrics.record_error("store", "rejected")
            log.error(kv("store_failed", stage="ingest", error=str(error)))
            code = 1
        finally:
            if code:
                self._shared.abort.set()  # the detect stage must not drain what may not be stored
            self._stop.set()
            self._ingest.close()  # leave the group: another member takes the partitions now
            self._ingest_done.set()
            if detect.is_alive():
                detect.join()
            self._close()
        code = code or self._detect_code
        log.info(kv("stopped", exit_code=code))
        return code

    def _run_detect(self) -> None:
        try:
            self._detect.run(self._ingest_done)
        except StoppedError:
            log.warning(kv("stopped_without_commit", stage="detect", reason="store_unavailable"))
            self._detect_code = 1
        except FencedError as error:
            log.error(kv("fenced", stage="detect", error=str(error)))
            self._detect_code = 1
        except StoreError as error:
            self.metrics.record_error("store", "rejected")
            log.error(kv("store_failed", stage="detect", error=str(error)))
            self._detect_code = 1
        except BaseException:  # noqa: BLE001 (a dead detect thread must stop the process, not hide)
            log.exception(kv("detect_failed"))
            self._detect_code = 1
        if self._detect_code:
            self._stop.set()

    def _partitions(self) -> int | None:
        topics = self._detect.topics or self._ingest.topics
        return None if topics is None else topics.partitions

    def _open_store(self) -> Sink | None:
        """Open the store, waiting while it is unreachable (/healthz answers, /readyz says 503)."""
        while True:
            self._ingest.loop_at = self._detect.loop_at = time.monotonic()
            try:
                sink = open_store(self.store_url, self.config)
                self._shared.store_ok = True
                return sink
            except StoreUnavailableError as error:
                self._shared.store_ok = False
                self.metrics.record_error("store", "unavailable")
                delay = min(max(error.retry_after_secs, 0.5), RETRY_MAX_SECS)
                log.warning(kv("store_unreachable", error=str(error), retry_after_secs=delay))
                if self._stop.wait(delay):
                    raise StoppedError("stopped before the store answered") from None

    def _close(self) -> None:
        follow, self._follow = self._follow, None
        if follow is not None:
            follow.close()
        for stage in (self._ingest, self._detect):
            try:
                stage.close()
            except Exception:  # noqa: BLE001 (closing must not hide the real error)
                log.exception(kv("close_failed", resource=type(stage).__name__))
        writer, self._shared.writer = self._shared.writer, None
        if writer is not None:
            # After an abandoned delivery, do not wait for queued batches: they are re-read on restart.
            writer.close(drain=not self._shared.abort.is_set())
        resources = [("sink", writer and writer.sink), ("http", self._http), ("http_ingest", self._http_ingest)]
        for name, resource in resources:
            if resource is not None:
                try:
                    resource.close()
                except Exception:  # noqa: BLE001
                    log.exception(kv("close_failed", resource=name))
        self._http = self._http_ingest = None

    def health(self) -> tuple[bool, bool, dict[str, Any]]:
        """(alive, ready, details) for /healthz and /readyz; called from the HTTP thread."""
        now = time.monotonic()
        shared = self._shared
        loop_age = now - min(stage.loop_at for stage in self._running)
        kafka_age = None if shared.kafka_ok_at is None else now - shared.kafka_ok_at
        alive = loop_age < max(60.0, 3 * RETRY_MAX_SECS)
        kafka_ok = kafka_age is not None and kafka_age < 30.0
        ready = alive and kafka_ok and shared.store_ok and not self._stop.is_set()
        details = {
            "loop_age_secs": round(loop_age, 3),
            "kafka_age_secs": None if kafka_age is None else round(kafka_age, 3),
            "store_ok": shared.store_ok,
            "partitions": self._ingest.streams,
            "detect_owner": self._detect.owner,
            "detect_tasks": self._detect.tasks,
            "input_keying": shared.metrics.input_keying(),
        }
        return alive, ready, details


__all__ = ["Service", "kv", "serve"]
