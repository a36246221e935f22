"""Prometheus metrics of ``gatewatch serve``, named in Vector's vocabulary, and its HTTP endpoint.

Every metric lives in its own :class:`~prometheus_client.CollectorRegistry`
(not the process-wide default), so a test can build several services in one
process. The two serve stages (threads) write, the HTTP thread only renders;
prometheus_client's metrics are thread-safe, and the alert de-duplication below
is touched by the detect stage only.

=========================================  ==========================================================
metric                                     meaning
=========================================  ==========================================================
component_received_events_total            records read {component, topic}: kafka (by topic), and
                                           http_server / file (by side) for what HTTP ingest and
                                           --follow produced to the input topics
component_received_bytes_total             their bytes {component, topic}
component_sent_events_total                outputs the store acknowledged {kind: events, transactions,
                                           alerts, dead_letters}; also lifecycle events sent to
                                           the alerts topic (kind=alerts, component=kafka_alerts)
                                           and delivered by each forwarder (kind=alert_events,
                                           component=forward_<name>)
component_errors_total                     failures {stage, error_type}: store, alerts, checkpoint,
                                           kafka, unwrap, detect (a rule's exception, by rule; a
                                           rejected internal-topic message, by reason);
                                           forward_<name> {retried, dead_letter_<reason>,
                                           dead_letter_failed: its file could not be written}; store
                                           errors start at 0 {error_type: unavailable, rejected,
                                           document_rejected}
component_discarded_events_total           records dropped {intentional}; stays 0 — bad records
                                           become dead letters, nothing is dropped
gatewatch_dead_letters_total               dead letters {reason}; ``store_rejected``: documents the
                                           store refused for their content (the parsers' reasons
                                           start at 0, as do the alerts and forwarders' series of
                                           a detecting process: increase() sees a first count)
gatewatch_late_events_total                events that arrived behind the watermark
gatewatch_alerts_total                     distinct alerts raised {rule}
kafka_consumer_lag                         messages behind the partition's end {topic, partition}
                                           (input partitions and the internal topics)
store_bulk_duration_seconds                one batch written to the store (histogram)
gatewatch_checkpoint_duration_seconds      one state checkpoint saved (histogram)
gatewatch_checkpoint_bytes                 size of the last checkpoint's state
gatewatch_checkpoint_timestamp_seconds     when the last checkpoint was saved, Unix seconds (0: none
                                           yet); its age is ``time() - ...`` in PromQL
gatewatch_watermark_seconds                event time of the slowest detect task this process owns, Unix seconds
gatewatch_backpressure                     1 while partitions are paused for a store that is down
gatewatch_detect_events_total              events read by this process's join tasks from <group_id>-requests
gatewatch_detect_owner                     1 while this process owns a detect task (0: standby)
gatewatch_detect_tasks                     detect tasks owned {role: requests, keyed, findings}
gatewatch_task_records_total               records a task applied {role, partition}: its share of detection
gatewatch_task_watermark_seconds           a task's event time {role, partition}
gatewatch_task_checkpoint_timestamp_seconds  a task's last checkpoint, Unix seconds {role, partition}
gatewatch_http_ingest_requests_total       HTTP ingest requests answered {source, code}; records they
                                           brought are component_received_events_total{component=http_server}
gatewatch_http_ingest_duration_seconds     one HTTP ingest request, until answered: for a 2xx, until
                                           Kafka acknowledged every record (histogram {source})
gatewatch_input_unkeyed_records_total      input records whose Kafka key is not their request id {topic}
=========================================  ==========================================================

:class:`HealthServer` serves them on ``--listen`` with ``/healthz`` and ``/readyz``, within the limits of
:mod:`gatewatch.http_limits` (a header deadline, a connection cap).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from gatewatch.errors import ConfigError
from ingest.sinks.base import Batch

if TYPE_CHECKING:
    from gatewatch.http_limits import HttpLimits
    from gatewatch.topology import RunStats

__all__ = ["CONTENT_TYPE_LATEST", "HealthServer", "ServeMetrics"]

_BULK_BUCKETS_SECS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
# Alert ids remembered to count each alert once however many versions it grows
# through; an alert older than this many newer ones would be counted again.
_SEEN_ALERT_IDS = 100_000
DEAD_LETTER_REASONS = ("invalid_utf8", "truncated", "oversized", "format_mismatch", "invalid_json", "invalid_value",
                       "not_an_object", "missing_timestamp", "out_of_range", "store_rejected")  # fmt: skip
"""The dead-letter reasons of the parsers and the store, their series present from the start."""
FORWARD_ERRORS = ("retried", "dead_letter_rejected", "dead_letter_retries_exhausted", "dead_letter_queue_full",
                  "dead_letter_shutdown", "dead_letter_failed")  # fmt: skip


class ServeMetrics:
    """The serve loop's counters and gauges, in one private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.received_events = Counter(
            "component_received_events_total", "Records read from the source.", ["component", "topic"], registry=r
        )
        self.received_bytes = Counter(
            "component_received_bytes_total", "Bytes of the records read.", ["component", "topic"], registry=r
        )
        self.sent_events = Counter(
            "component_sent_events_total",
            "Outputs delivered (acknowledged by the store or the alerts topic).",
            ["component", "kind"],
            registry=r,
        )
        self.errors = Counter(
            "component_errors_total", "Errors by pipeline stage and type.", ["stage", "error_type"], registry=r
        )
        self.discarded = Counter(
            "component_discarded_events_total", "Records dropped without output.", ["intentional"], registry=r
        )
        self.dead_letters = Counter(
            "gatewatch_dead_letters_total", "Records that could not be parsed.", ["reason"], registry=r
        )
        self.late_events = Counter(
            "gatewatch_late_events_total", "Events that arrived behind the watermark.", registry=r
        )
        self.alerts = Counter("gatewatch_alerts_total", "Distinct alerts raised.", ["rule"], registry=r)
        self.consumer_lag = Gauge(
            "kafka_consumer_lag", "Messages between the consumer's position and the end.", ["topic", "partition"],
            registry=r,
        )  # fmt: skip
        self.bulk_duration = Histogram(
            "store_bulk_duration_seconds", "Time to write one batch to the store.", buckets=_BULK_BUCKETS_SECS,
            registry=r,
        )  # fmt: skip
        self.checkpoint_duration = Histogram(
            "gatewatch_checkpoint_duration_seconds", "Time to save one state checkpoint.",
            buckets=_BULK_BUCKETS_SECS, registry=r,
        )  # fmt: skip
        self.checkpoint_bytes = Gauge("gatewatch_checkpoint_bytes", "Size of the last checkpoint.", registry=r)
        self.checkpoint_saved = Gauge(
            "gatewatch_checkpoint_timestamp_seconds", "When the last checkpoint was saved (Unix seconds).",
            registry=r,
        )
        self.watermark = Gauge("gatewatch_watermark_seconds", "Event-time watermark (Unix seconds).", registry=r)
        self.backpressure = Gauge(
            "gatewatch_backpressure", "1 while Kafka partitions are paused for the store.", registry=r
        )
        self._paused_stages: set[str] = set()
        self._paused_lock = threading.Lock()
        self.detect_events = Counter(
            "gatewatch_detect_events_total", "Events read by this process's join tasks (re-deliveries included).", registry=r
        )
        self.detect_owner = Gauge(
            "gatewatch_detect_owner", "1 while this process owns the detect stage, 0 on standby.", registry=r
        )
        self.task_records = Counter(
            "gatewatch_task_records_total", "Records a detect task applied (events for join tasks, items for keyed "
            "tasks, findings for the alert task).", ["role", "partition"], registry=r,
        )  # fmt: skip
        self.task_watermark = Gauge(
            "gatewatch_task_watermark_seconds", "A detect task's event time (Unix seconds).", ["role", "partition"],
            registry=r,
        )  # fmt: skip
        self.task_checkpoint_saved = Gauge(
            "gatewatch_task_checkpoint_timestamp_seconds", "When a detect task's last checkpoint was saved.",
            ["role", "partition"], registry=r,
        )  # fmt: skip
        self.detect_tasks = Gauge("gatewatch_detect_tasks", "Detect tasks this process owns.", ["role"], registry=r)
        self.http_requests = Counter(
            "gatewatch_http_ingest_requests_total", "HTTP ingest requests by answer.", ["source", "code"], registry=r
        )
        self.http_duration = Histogram(
            "gatewatch_http_ingest_duration_seconds", "Time to answer one HTTP ingest request.", ["source"],
            buckets=_BULK_BUCKETS_SECS, registry=r,
        )  # fmt: skip

        self.unkeyed_records = Counter(
            "gatewatch_input_unkeyed_records_total", "Input records whose Kafka message key is not their request id.",
            ["topic"], registry=r,
        )  # fmt: skip
        self._keying: dict[str, tuple[int, int]] = {}  # input topic -> (records, keyed by their request id)
        # Present from the start at 0, so a dashboard can alert on any increase.
        for intentional in ("true", "false"):
            self.discarded.labels(intentional=intentional)
        for kind in ("events", "transactions", "alerts", "dead_letters"):
            self.sent_events.labels(component="store", kind=kind)
        for error_type in ("unavailable", "rejected", "document_rejected"):
            self.errors.labels(stage="store", error_type=error_type)
        for reason in DEAD_LETTER_REASONS:
            self.dead_letters.labels(reason=reason)
        self._seen_alerts: OrderedDict[str, None] = OrderedDict()

    def start_detection(self, rules: Iterable[str], forwarders: Iterable[str]) -> None:
        """The series of a process that detects and forwards, at 0: ``increase()`` over a series that
        appears with its first count misses that count (a first alert, a first dead-lettered event)."""
        for rule in rules:
            self.alerts.labels(rule=rule)
        for name in forwarders:
            self.sent_events.labels(component=f"forward_{name}", kind="alert_events")
            for outcome in FORWARD_ERRORS:
                self.errors.labels(stage=f"forward_{name}", error_type=outcome)

    def record_received(self, topic: str, count: int, value_bytes: int) -> None:
        self.received_events.labels(component="kafka", topic=topic).inc(count)
        self.received_bytes.labels(component="kafka", topic=topic).inc(value_bytes)

    def record_http_received(self, source: str, count: int, body_bytes: int, invalid: int) -> None:
        """A batch Kafka acknowledged; ``invalid`` of its ``count`` records did not decode (dead letters later)."""
        self.received_events.labels(component="http_server", topic=source).inc(count)
        self.received_bytes.labels(component="http_server", topic=source).inc(body_bytes)
        if invalid:
            self.record_error("http_ingest", "invalid_record", invalid)

    def record_http_request(self, source: str, status: int, secs: float) -> None:
        self.http_requests.labels(source=source, code=str(status)).inc()
        self.http_duration.labels(source=source).observe(secs)

    def record_keying(self, topic: str, records: int, keyed: int) -> None:
        """Count ``records`` read from ``topic``, of which ``keyed`` had their request id as message key."""
        self.unkeyed_records.labels(topic=topic).inc(records - keyed)
        seen, matched = self._keying.get(topic, (0, 0))
        self._keying[topic] = (seen + records, matched + keyed)

    def input_keying(self) -> dict[str, str]:
        """Per input topic read so far: ``keyed_by_request_id``, ``not_keyed`` or ``mixed`` (for /readyz)."""
        cases = {}
        for topic, (records, keyed) in list(self._keying.items()):
            cases[topic] = "keyed_by_request_id" if keyed == records else "not_keyed" if keyed == 0 else "mixed"
        return cases

    def set_backpressure(self, stage: str, paused: bool) -> None:
        """``gatewatch_backpressure`` is 1 while any stage of this process is paused, not only the last to say."""
        with self._paused_lock:
            (self._paused_stages.add if paused else self._paused_stages.discard)(stage)
            self.backpressure.set(1 if self._paused_stages else 0)

    def record_stored(self, batch: Batch, component: str = "store") -> None:
        """Count a batch the store acknowledged, and the alerts it raised for the first time."""
        sent = self.sent_events
        for kind, count in (
            ("events", len(batch.events)),
            ("transactions", len(batch.transactions)),
            ("alerts", len(batch.alerts)),
            ("dead_letters", len(batch.dead_letters)),
        ):
            if count:
                sent.labels(component=component, kind=kind).inc(count)
        seen = self._seen_alerts
        for alert_id, alert in batch.alerts.items():
            if alert_id in seen:
                seen.move_to_end(alert_id)
                continue
            seen[alert_id] = None
            if len(seen) > _SEEN_ALERT_IDS:
                seen.popitem(last=False)
            self.alerts.labels(rule=alert.rule).inc()

    def record_alerts_forwarded(self, count: int) -> None:
        if count:
            self.sent_events.labels(component="kafka_alerts", kind="alerts").inc(count)

    def record_error(self, stage: str, error_type: str, count: int = 1) -> None:
        self.errors.labels(stage=stage, error_type=error_type).inc(count)

    def record_documents_rejected(self, count: int) -> None:
        """Documents the store refused for their content: each became a ``store_rejected`` dead letter."""
        if count > 0:
            self.errors.labels(stage="store", error_type="document_rejected").inc(count)
            self.dead_letters.labels(reason="store_rejected").inc(count)

    def record_dead_letters(self, reasons: dict[str, int]) -> None:
        """Count dead letters of one batch by reason (the ingest stage, which has no running totals)."""
        for reason, count in reasons.items():
            self.dead_letters.labels(reason=reason).inc(count)

    def record_pipeline_counts(self, counts: RunStats) -> None:
        """Add what a pipeline counted since its last report (``Pipeline.take_counts``): late events.

        Dead letters are counted from the batches themselves (:meth:`record_dead_letters`).
        """
        if counts.late_events > 0:
            self.late_events.inc(counts.late_events)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class HealthServer:
    """FastAPI on uvicorn in a daemon thread: /healthz, /readyz, /metrics."""

    def __init__(
        self,
        listen: str,
        metrics: ServeMetrics,
        health: Callable[[], tuple[bool, bool, dict[str, Any]]],
        start_timeout_secs: float = 10.0,
        routes: Callable[[Any], None] | None = None,
        limits: HttpLimits | None = None,
    ) -> None:
        """Serve on ``listen`` (HOST:PORT); ``health()`` -> (alive, ready, details) is called per request.

        ``routes(app)`` mounts more endpoints on the FastAPI app (HTTP ingest). ``limits``: the header
        deadline and connection cap of :mod:`gatewatch.http_limits` (default: for this process's open-file limit).
        """
        import uvicorn
        from fastapi import FastAPI
        from fastapi.responses import JSONResponse, Response

        from gatewatch.http_limits import ConnectionGuard, HttpLimits

        host, port = _parse_listen(listen)
        app = FastAPI(title="gatewatch serve", docs_url=None, redoc_url=None, openapi_url=None)

        @app.get("/healthz")
        def healthz() -> JSONResponse:
            alive, _, details = health()
            return JSONResponse({"status": "ok" if alive else "stalled", **details}, status_code=200 if alive else 503)

        @app.get("/readyz")
        def readyz() -> JSONResponse:
            _, ready, details = health()
            return JSONResponse({"status": "ready" if ready else "not_ready", **details},
                                status_code=200 if ready else 503)  # fmt: skip

        @app.get("/metrics")
        def prometheus() -> Response:
            return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

        if routes is not None:
            routes(app)

        self.guard = ConnectionGuard(limits or HttpLimits.for_this_process())
        self._server = uvicorn.Server(
            uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="off",
                           http=self.guard.protocol_class(), backlog=self.guard.limits.backlog)  # fmt: skip
        )
        self._thread = threading.Thread(target=self._run, name="gatewatch-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + start_timeout_secs
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(f"--listen {listen}: cannot serve HTTP there (address in use or not local?)")
            time.sleep(0.02)

    @property
    def port(self) -> int:
        """The port listened on (the one the OS chose for ``--listen HOST:0``)."""
        return int(self._server.servers[0].sockets[0].getsockname()[1])

    def _run(self) -> None:
        # Our own asyncio loop (not uvicorn's choice of one), so the guard sees its accept failures.
        async def serve() -> None:
            asyncio.get_running_loop().set_exception_handler(self.guard.loop_exception)
            await self._server.serve()

        asyncio.run(serve())

    def close(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=5)


def _parse_listen(listen: str) -> tuple[str, int]:
    host, _, port = listen.rpartition(":")
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not host or not 0 <= number <= 65535:
        raise ConfigError(f"--listen {listen!r} is not HOST:PORT (e.g. 127.0.0.1:8080 or [::]:8080)")
    return host.strip("[]"), number
