"""The forwarder seam and the machinery every forwarder shares.

A :class:`Forwarder` knows one protocol and delivers one event at a time.
Everything else is here, the same for all: :class:`ForwarderRunner` filters
events (rule, severity, state), queues them (bounded), delivers them from its
own thread with bounded retries and exponential backoff, and writes what it
could not deliver to its dead-letter file with the reason. Detection only
ever calls :meth:`ForwarderSet.submit`, which never blocks and never raises:
a full queue turns the event into a dead letter (``queue_full``) at once.
Every outcome is counted (``counts``) and reported to ``on_outcome``, which
``serve`` turns into Prometheus counters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import IO, Protocol

import orjson

from detectors.base import Severity
from gatewatch.errors import DeliveryError
from gatewatch.forward.config import ForwarderSettings
from ingest.alerts import AlertEvent
from ingest.ecs import iso
from ingest.sinks.base import Batch

log = logging.getLogger(__name__)

_SEVERITY_RANK: dict[str, int] = {severity: rank for rank, severity in enumerate(Severity)}
# The event in flight when the drain time runs out is retried no more; this caps its wait.
_ABORT_POLL_SECS = 0.05
UNSETTLED = "unsettled"
""":meth:`ForwarderRunner._deliver`'s outcome for an event neither sent nor written to the dead-letter file
(aborted while the file could not be written): it stays queued."""

OutcomeHook = Callable[[str, str, int], None]  # (forwarder name, outcome, count)


class Forwarder(Protocol):
    """One receiver, one protocol. Called from its runner's thread only."""

    def send(self, event: AlertEvent) -> None:
        """Deliver ``event``; return once the receiver has it (as far as the protocol can tell).

        Raise :class:`~gatewatch.errors.DeliveryError` on failure: ``retryable``
        (a network error, a 5xx/429) makes the runner try again after a backoff
        (at least ``retry_after_secs``); otherwise the event goes straight to the
        dead-letter file. Any other exception counts as a retryable failure.
        """

    def close(self) -> None:
        """Release connections; called once, after the last ``send``."""


class ForwarderRunner:
    """A forwarder with its filter, bounded queue, retry loop, dead-letter file and counters."""

    def __init__(
        self,
        config: ForwarderSettings,
        forwarder: Forwarder,
        on_outcome: OutcomeHook | None = None,
        threaded: bool = True,
    ) -> None:
        """``threaded=False``: no delivery thread; the caller delivers with :meth:`deliver` (``gatewatch resend``)."""
        self.config = config
        self.name: str = config.name
        self.forwarder = forwarder
        self.counts: Counter[str] = Counter()
        self._counts_lock = threading.Lock()  # the delivery thread and submit() both count
        self._on_outcome = on_outcome
        self._rules = frozenset(config.rules)
        self._min_rank = _SEVERITY_RANK[config.min_severity]
        self._states = frozenset(config.states)
        self.dead_letter_path: Path = config.dead_letter_path()
        self._dead_letter_lock = threading.Lock()
        self._dead_letter_handle: IO[bytes] | None = None
        self._queue: deque[AlertEvent] = deque()
        # Events that entered the queue, and those of them settled (sent or dead-lettered), so far:
        # the queue is FIFO, so every event queued by a mark is settled once settled >= mark.
        self.queued_total = 0
        self.settled_total = 0
        self._cond = threading.Condition()
        self._closing = False
        self._abort = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"gatewatch-forward-{self.name}", daemon=True)
        if threaded:
            self._thread.start()

    # -- the detection side ---------------------------------------------------

    def submit(self, event: AlertEvent) -> None:
        """Queue ``event`` if it passes the filter; never blocks (a full queue dead-letters it)."""
        if not self.wants(event):
            self._count("filtered")
            return
        with self._cond:
            if len(self._queue) < self.config.queue_max_events and not self._closing:
                self._queue.append(event)
                self.queued_total += 1
                self._cond.notify()
                return
        full = "queue_max_events reached: the receiver is slower than the alerts"
        if self._dead_letter(event, "queue_full", full, 0):
            return
        with self._cond:  # not written down either: queued past the cap rather than lost
            self._queue.append(event)
            self.queued_total += 1
            self._cond.notify()

    def wants(self, event: AlertEvent) -> bool:
        """Whether ``event`` passes this forwarder's filter (rules, min_severity, states)."""
        alert = event.alert
        return (
            (not self._rules or alert.rule in self._rules)
            and _SEVERITY_RANK[alert.severity] >= self._min_rank
            and event.state in self._states
        )

    def queued(self) -> int:
        return len(self._queue)

    def close(self) -> None:
        """Deliver what is queued for up to ``drain_timeout_secs``, dead-letter the rest, release everything."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.ident is not None:
            self._thread.join(self.config.drain_timeout_secs)
            if self._thread.is_alive():
                self._abort.set()
                self._thread.join()
        with self._cond:
            left, self._queue = list(self._queue), deque()
        written = 0  # settled in queue order: marks count them (see queued_total)
        for event in left:
            if not self._dead_letter(event, "shutdown", "not delivered within drain_timeout_secs", 0):
                log.error("forward_events_unsettled forwarder=%s count=%d: neither sent nor written to %s; serve "
                          "sends them again after a restart, replay exits 2", self.name, len(left) - written,
                          self.dead_letter_path)  # fmt: skip
                break
            written += 1
        with self._cond:
            self.settled_total += written
        try:
            self.forwarder.close()
        except Exception:  # noqa: BLE001 (closing a broken connection must not hide the counts)
            log.warning("forward_close_failed forwarder=%s", self.name, exc_info=True)
        with self._dead_letter_lock:
            self._close_dead_letters()

    # -- the delivery thread --------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue or self._abort.is_set():
                    return
                event = self._queue[0]
            if self._deliver(event) == UNSETTLED:
                continue  # only when aborted: close() tries its dead letter once more
            with self._cond:
                if self._queue and self._queue[0] is event:
                    self._queue.popleft()
                    self.settled_total += 1

    def deliver(self, event: AlertEvent) -> str:
        """Send ``event`` now, on the calling thread, retrying as the thread would: ``sent``, or the reason of
        its dead letter (``rejected``, ``retries_exhausted``). Only for a runner made with ``threaded=False``."""
        if self._thread.ident is not None:
            raise RuntimeError("deliver() is for a runner without its delivery thread")
        return self._deliver(event)

    def _deliver(self, event: AlertEvent) -> str:
        config = self.config
        backoff: float = config.retry_backoff_secs
        attempts = 0
        while True:
            attempts += 1
            try:
                self.forwarder.send(event)
            except DeliveryError as error:
                failure, retryable, retry_after = str(error), error.retryable, error.retry_after_secs
            except Exception as error:  # noqa: BLE001 (a forwarder bug must not stop delivery of the rest)
                failure, retryable, retry_after = f"{type(error).__name__}: {error}", True, None
            else:
                self._count("sent")
                return "sent"
            if not retryable or attempts >= config.max_attempts:
                reason = "retries_exhausted" if retryable else "rejected"
                if self._dead_letter(event, reason, failure, attempts):
                    return reason
                # Neither sent nor written down: kept, and both tried again after the longest backoff.
                wait = config.retry_max_backoff_secs
            else:
                wait = min(max(backoff, retry_after or 0.0), config.retry_max_backoff_secs)
                backoff *= 2
                self._count("retried")
                log.info(
                    "forward_retry forwarder=%s attempt=%d wait_secs=%.2f error=%r", self.name, attempts, wait, failure
                )
            if self._abort.wait(wait):
                written = self._dead_letter(event, "shutdown", f"drain time over after: {failure}", attempts)
                return "shutdown" if written else UNSETTLED

    # -- outcomes ---------------------------------------------------------------

    def _dead_letter(self, event: AlertEvent, reason: str, error: str, attempts: int) -> bool:
        """Append ``event`` to the dead-letter file; False (logged, counted) if the file cannot be written.

        A fault trial: with the folder unwritable, the first dead letter's error ended the delivery thread
        silently, and the forwarder never sent again, nor settled, so the detect stage's checkpoint stopped.
        """
        record = {
            "reason": reason,
            "error": error,
            "forwarder": self.name,
            "attempts": attempts,
            "failed_at": iso(time.time()),
            "event": event.to_document(),
        }
        line = orjson.dumps(record) + b"\n"
        with self._dead_letter_lock:
            try:
                if self._dead_letter_handle is None:
                    self.dead_letter_path.parent.mkdir(parents=True, exist_ok=True)
                    self._dead_letter_handle = self.dead_letter_path.open("ab")
                self._dead_letter_handle.write(line)
                self._dead_letter_handle.flush()
            except OSError as failure:
                self._close_dead_letters()  # opened again next time: the folder may be fixed by then
                log.error("forward_dead_letter_failed forwarder=%s reason=%s event=%s error=%r: the event is kept "
                          "and tried again; make %s writable", self.name, reason, event.id, str(failure),
                          self.dead_letter_path.parent)  # fmt: skip
                self._count("dead_letter_failed")
                return False
        log.warning("forward_dead_letter forwarder=%s reason=%s event=%s", self.name, reason, event.id)
        self._count(f"dead_letter_{reason}")
        return True

    def _close_dead_letters(self) -> None:
        handle, self._dead_letter_handle = self._dead_letter_handle, None
        if handle is not None:
            try:
                handle.close()
            except OSError:
                pass  # what it could not flush is reported by the write that failed

    def _count(self, outcome: str, n: int = 1) -> None:
        with self._counts_lock:
            self.counts[outcome] += n
        if self._on_outcome is not None:
            self._on_outcome(self.name, outcome, n)


class ForwarderSet:
    """Every configured forwarder; a sink for ``replay`` (``write``/``close``) and a target for ``serve``."""

    def __init__(self, runners: Sequence[ForwarderRunner]) -> None:
        self.runners = list(runners)
        self._closed = False

    def submit(self, events: Iterable[AlertEvent]) -> None:
        """Hand events to every forwarder; returns at once."""
        for event in events:
            for runner in self.runners:
                runner.submit(event)

    def write(self, batch: Batch) -> None:
        self.submit(batch.alert_events)

    def mark(self) -> tuple[int, ...]:
        """Where each forwarder's queue stands now: see :meth:`settled`."""
        return tuple(runner.queued_total for runner in self.runners)

    def settled(self, mark: tuple[int, ...]) -> bool:
        """Whether every event queued by ``mark`` has been sent or dead-lettered, by every forwarder."""
        return all(runner.settled_total >= queued for runner, queued in zip(self.runners, mark))

    def close(self) -> None:
        """Close every runner (:meth:`ForwarderRunner.close`); once: a serve stage closes them before its last
        checkpoint, then the service again on its way out."""
        if self._closed:
            return
        self._closed = True
        for runner in self.runners:
            runner.close()

    def counts(self) -> dict[str, dict[str, int]]:
        return {runner.name: dict(runner.counts) for runner in self.runners}
