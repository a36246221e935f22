"""One thread that writes to the store for both stages of ``gatewatch serve``.

A bulk request spends most of its time in the search node. Written from the
stage's own thread, parsing stops for that long; handed to this thread, the
ingest stage parses and produces the next poll meanwhile, and the node always
has the next bulk ready. Batches queued while a write is running are merged
into the next write (up to ``max_docs`` documents), so bulks grow to a size
the node indexes efficiently when the store is the bottleneck.

Callers get a :class:`PendingWrite` and decide when to wait for it: the
ingest stage commits a poll's offsets only once its write is done, the detect
stage waits at once. Writes start in submission order. A merged write that
fails fails every batch in it; each caller retries its own batch (writes are
idempotent). With one thread (the default) only it touches the sink; serve
runs two for sinks that say they are ``thread_safe``, so that the next bulk
is on its way while the node indexes the last. Two writes may then finish out
of order, which is harmless for callers that wait for a write before
submitting a newer version of the same document (the detect stage does).
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

from gatewatch.errors import StoppedError
from ingest.sinks.base import Batch, Sink

__all__ = ["PendingWrite", "StoreWriter", "merge_batches"]


class PendingWrite:
    """A batch handed to the writer; :meth:`result` waits and raises what the sink raised."""

    __slots__ = ("batch", "_done", "_error")

    def __init__(self, batch: Batch) -> None:
        self.batch = batch
        self._done = threading.Event()
        self._error: BaseException | None = None

    def done(self) -> bool:
        return self._done.is_set()

    def result(self) -> None:
        self._done.wait()
        if self._error is not None:
            raise self._error

    def _finish(self, error: BaseException | None) -> None:
        self._error = error
        self._done.set()


def merge_batches(batches: list[Batch]) -> Batch:
    """One batch with everything of ``batches``; a later version of an alert replaces an earlier one."""
    if len(batches) == 1:
        return batches[0]
    merged = Batch()
    for batch in batches:
        merged.add(batch)
    return merged


class StoreWriter:
    """Writes submitted batches to ``sink`` in order from ``threads`` threads (see the module docstring)."""

    def __init__(self, sink: Sink, max_docs: int, metrics: Any, threads: int = 1) -> None:
        self.sink = sink
        self.max_docs = max_docs
        self._metrics = metrics
        self._queue: deque[PendingWrite] = deque()
        self._rejected_seen = 0  # the sink's running ``docs_rejected`` already counted
        self._rejected_lock = threading.Lock()
        self._ready = threading.Condition()
        self._closing = False
        self._threads = [
            threading.Thread(target=self._run, name=f"gatewatch-store-writer-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, batch: Batch) -> PendingWrite:
        pending = PendingWrite(batch)
        with self._ready:
            if self._closing:
                raise StoppedError("store writer is closed")
            self._queue.append(pending)
            self._ready.notify()
        return pending

    def write(self, batch: Batch) -> None:
        """Submit ``batch`` and wait for it."""
        self.submit(batch).result()

    def close(self, drain: bool = True) -> None:
        """Finish what was submitted (``drain=False``: only the writes already running), then stop."""
        with self._ready:
            self._closing = True
            abandoned = [] if drain else list(self._queue)
            if abandoned:
                self._queue.clear()
            self._ready.notify_all()
        for pending in abandoned:
            pending._finish(StoppedError("store writer closed before this batch was written"))
        for thread in self._threads:
            thread.join()

    def _take(self) -> list[PendingWrite]:
        with self._ready:
            while not self._queue and not self._closing:
                self._ready.wait()
            taken = [self._queue.popleft()] if self._queue else []
            docs = len(taken[0].batch) if taken else 0
            while self._queue and docs + len(self._queue[0].batch) <= self.max_docs:
                docs += len(self._queue[0].batch)
                taken.append(self._queue.popleft())
            return taken

    def _count_rejected(self) -> None:
        # Search sinks turn refused documents into dead letters and only count them; the metrics see them here.
        with self._rejected_lock:
            total = int(getattr(self.sink, "docs_rejected", 0))
            delta, self._rejected_seen = total - self._rejected_seen, total
        self._metrics.record_documents_rejected(delta)

    def _run(self) -> None:
        while taken := self._take():
            error: BaseException | None = None
            try:
                with self._metrics.bulk_duration.time():
                    self.sink.write(merge_batches([pending.batch for pending in taken]))
            except BaseException as caught:  # noqa: BLE001 (handed to every caller of this write)
                error = caught
            self._count_rejected()
            for pending in taken:
                pending._finish(error)
