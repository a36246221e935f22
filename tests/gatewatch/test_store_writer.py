"""The store writer: batches written in order from its own thread, merged while a write runs."""

from __future__ import annotations

import threading

import pytest

from gatewatch.errors import StoppedError, StoreUnavailableError
from gatewatch.metrics import ServeMetrics
from gatewatch.store_writer import StoreWriter, merge_batches
from ingest.records import Dataset, DeadLetter, Origin
from ingest.sinks.base import Batch


def batch(*offsets: int) -> Batch:
    return Batch(dead_letters=[DeadLetter(Origin(Dataset.APP, "app/0", o), "invalid_json", "x", b"{") for o in offsets])


def offsets(written: Batch) -> list[int]:
    return [letter.origin.offset for letter in written.dead_letters]


class GatedSink:
    """Records each write; the first write waits for ``release`` so that others queue up behind it."""

    def __init__(self, fail_on: set[int] | None = None) -> None:
        self.writes: list[list[int]] = []
        self.started = threading.Event()
        self.release = threading.Event()
        self.fail_on = fail_on or set()

    def write(self, written: Batch) -> None:
        self.started.set()
        self.release.wait(timeout=10)
        self.writes.append(offsets(written))
        if self.fail_on & set(offsets(written)):
            raise StoreUnavailableError("node frozen", 1.0)

    def close(self) -> None:
        pass


def test_batches_queued_during_a_write_go_out_merged_in_order_up_to_max_docs() -> None:
    sink = GatedSink()
    writer = StoreWriter(sink, max_docs=4, metrics=ServeMetrics())
    first = writer.submit(batch(0))
    assert sink.started.wait(timeout=10)
    queued = [writer.submit(batch(1, 2)), writer.submit(batch(3)), writer.submit(batch(4, 5, 6)), writer.submit(batch(7))]
    sink.release.set()
    for pending in [first, *queued]:
        pending.result()
    writer.close()
    # 1,2 + 3 fit in 4 docs; 4,5,6 would not: the next write starts there.
    assert sink.writes == [[0], [1, 2, 3], [4, 5, 6, 7]]
    assert all(pending.done() for pending in queued)


def test_a_failed_write_fails_every_batch_merged_into_it_and_later_writes_go_on() -> None:
    sink = GatedSink(fail_on={2})
    writer = StoreWriter(sink, max_docs=100, metrics=ServeMetrics())
    first = writer.submit(batch(0))
    assert sink.started.wait(timeout=10)
    merged = [writer.submit(batch(1)), writer.submit(batch(2))]
    sink.release.set()
    first.result()
    for pending in merged:
        with pytest.raises(StoreUnavailableError):
            pending.result()
    writer.write(batch(3))  # the caller retries its own batch; the writer is still alive
    writer.close()
    assert sink.writes == [[0], [1, 2], [3]]


def test_close_finishes_what_was_submitted() -> None:
    sink = GatedSink()
    sink.release.set()
    writer = StoreWriter(sink, max_docs=2, metrics=ServeMetrics(), threads=2)
    pending = [writer.submit(batch(n)) for n in range(6)]
    writer.close()
    assert all(p.done() for p in pending)
    assert sorted(o for write in sink.writes for o in write) == list(range(6))
    with pytest.raises(StoppedError, match="closed"):
        writer.submit(batch(9))


def test_merge_keeps_the_latest_version_of_an_alert() -> None:
    # Stand-ins for Alert values: merging only looks at the ids.
    older, newer = Batch(alerts={"a": "v1", "b": "b1"}), Batch(alerts={"a": "v2"})  # type: ignore[dict-item]
    merged = merge_batches([batch(1), older, newer, batch(2)])
    assert merged.alerts == {"a": "v2", "b": "b1"}
    assert offsets(merged) == [1, 2]


def test_close_without_drain_abandons_queued_batches_but_finishes_the_running_write() -> None:
    sink = GatedSink()
    writer = StoreWriter(sink, max_docs=1, metrics=ServeMetrics())
    running = writer.submit(batch(0))
    assert sink.started.wait(timeout=10)
    queued = writer.submit(batch(1))
    closer = threading.Thread(target=writer.close, kwargs={"drain": False})
    closer.start()
    with pytest.raises(StoppedError, match="closed before"):
        queued.result()
    sink.release.set()
    closer.join(timeout=10)
    running.result()
    assert sink.writes == [[0]]


class RefusingSink:
    """Refuses the documents at the offsets in ``refuse`` for their content, as a search sink does."""

    def __init__(self, refuse: set[int]) -> None:
        self.refuse = refuse
        self.docs_rejected = 0

    def write(self, written: Batch) -> None:
        self.docs_rejected += len(self.refuse & set(offsets(written)))

    def close(self) -> None:
        pass


def test_documents_the_store_refused_are_counted_once_as_store_errors_and_dead_letters() -> None:
    metrics = ServeMetrics()
    writer = StoreWriter(RefusingSink(refuse={1, 2, 5}), max_docs=100, metrics=metrics)
    for n in range(4):
        writer.write(batch(2 * n, 2 * n + 1))
    writer.close()
    sample = metrics.registry.get_sample_value
    assert sample("component_errors_total", {"stage": "store", "error_type": "document_rejected"}) == 3
    assert sample("gatewatch_dead_letters_total", {"reason": "store_rejected"}) == 3
