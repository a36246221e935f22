"""What the two stages of ``gatewatch serve`` share: logging, the store writer, delivery with back-pressure.

:class:`Shared` is built once by :class:`gatewatch.serve.Service` and handed
to both stages (:mod:`gatewatch.serve_ingest`, :mod:`gatewatch.serve_detect`),
each running in its own thread with its own Kafka clients. The store is the
one thing both write to, through one writer thread (:mod:`gatewatch.store_writer`)
that lets the ingest stage parse while the store indexes.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from kafka.errors import KafkaError

from gatewatch.errors import StoppedError, StoreUnavailableError
from gatewatch.metrics import ServeMetrics
from gatewatch.store_writer import PendingWrite, StoreWriter
from ingest.escape import quoted
from ingest.sinks.base import Batch

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig
    from gatewatch.unread import InputNote

__all__ = ["RETRY_MAX_SECS", "LateNotice", "Shared", "deliver", "kv", "log_input_notes"]

log = logging.getLogger("gatewatch.serve")

RETRY_MAX_SECS = 30.0
SHUTDOWN_DELIVERY_TIMEOUT_SECS = 60.0


def kv(event: str, **fields: Any) -> str:
    """A ``key=value`` log line; values with spaces, quotes or control characters are quoted and escaped."""
    parts = [f"event={event}"]
    for key, value in fields.items():
        if isinstance(value, float):
            text = f"{value:.3f}"
        elif isinstance(value, (set, frozenset, list, tuple)):
            text = ",".join(sorted(str(v) for v in value)) or "-"
        else:
            text = str(value)
        parts.append(f"{key}={quoted(text)}")
    return " ".join(parts)


def log_input_notes(notes: Iterable[InputNote]) -> None:
    """Say what :class:`~gatewatch.unread.InputWatch` found: an input not read at all, or a field no line had."""
    for note in notes:
        log.warning(kv("field_unread" if note.field else "input_unread", dataset=note.dataset,
                       field=note.field or "-", hint=note.message))  # fmt: skip


LATE_WARNING_SECS = 60.0


class LateNotice:
    """Says in the log, at most once a minute, that records arrived behind the watermark, and what to check.

    Only the metric told: a shipper of one side far behind the other (an HTTP backfill of the gateway's
    logs, then the app's) made tens of thousands of records late and a bypass alert per gateway pod, while
    serve's log said nothing.
    """

    def __init__(self) -> None:
        self._said_at = -math.inf
        self._unsaid = 0

    def add(self, late: int) -> None:
        self._unsaid += late
        now = time.monotonic()
        if self._unsaid and now - self._said_at >= LATE_WARNING_SECS:
            log.warning(kv("late_events", records=self._unsaid,
                           hint="records arrived after the watermark had passed them: processed at once, but a "
                                "request whose other side was judged without them may show as app_only or a "
                                "gateway_bypass; one input is more than correlate.allowed_lateness_secs behind "
                                "another (a shipper backlogged, or a backfill of one side first)"))  # fmt: skip
            self._said_at, self._unsaid = now, 0


class Shared:
    """Config, metrics, stop flags, the store and health timestamps, shared by both stages."""

    def __init__(self, config: GatewatchConfig, metrics: ServeMetrics, stop: threading.Event) -> None:
        self.config = config
        self.metrics = metrics
        self.stop = stop
        self.abort = threading.Event()
        self.writer: StoreWriter | None = None  # None: --store none
        self.store_ok = True
        self.kafka_ok_at: float | None = None

    def submit(self, batch: Batch) -> PendingWrite | None:
        """Hand ``batch`` to the store writer; None without a store."""
        return None if self.writer is None else self.writer.submit(batch)

    def write(self, batch: Batch) -> None:
        """Store ``batch`` and wait (no-op without a store); raises what the sink raises."""
        if self.writer is not None:
            self.writer.write(batch)


def deliver(
    shared: Shared,
    attempt_once: Callable[[], None],
    set_paused: Callable[[bool], None],
    idle_poll: Callable[[float], None],
    log: Any,
) -> None:
    """Run ``attempt_once`` until it succeeds, pausing the stage's input meanwhile.

    ``attempt_once`` must be safe to repeat (ids are deterministic). While the
    store is unavailable, ``idle_poll`` keeps the consumer's group membership
    alive without fetching. Raises :class:`StoppedError` on a second stop signal, or
    on the first once a delivery has been retried for SHUTDOWN_DELIVERY_TIMEOUT_SECS.
    """
    attempt = 0
    started = time.monotonic()
    paused = False
    while True:
        try:
            attempt_once()
            shared.store_ok = True
            break
        except StoreUnavailableError as error:
            delay = error.retry_after_secs
            shared.store_ok = False
            shared.metrics.record_error("store", "unavailable")
            reason = str(error)
        except KafkaError as error:
            delay = 1.0
            shared.metrics.record_error("alerts", type(error).__name__)
            reason = f"kafka: {error}"
        attempt += 1
        delay = min(max(delay, 0.1), RETRY_MAX_SECS)
        if not paused:
            paused = True
            set_paused(True)
        log.warning(kv("delivery_retry", attempt=attempt, retry_after_secs=delay, error=reason))
        if shared.abort.is_set() or (
            shared.stop.is_set() and time.monotonic() - started > SHUTDOWN_DELIVERY_TIMEOUT_SECS
        ):
            raise StoppedError("delivery abandoned")
        deadline = time.monotonic() + delay
        while (remaining := deadline - time.monotonic()) > 0 and not shared.abort.is_set():
            idle_poll(min(remaining, 0.5))
    if paused:
        set_paused(False)
