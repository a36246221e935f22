"""The reorder buffer survives a checkpoint: pickled in chunks, restored in the same order."""

from __future__ import annotations

import pickle

from detectors.sample import app_event, gateway_event
from ingest.order import _PICKLE_CHUNK, EventOrder


def _buffer_of(count: int) -> EventOrder:
    order = EventOrder(lateness_secs=10_000.0)
    order.open_stream("gw")
    order.open_stream("app")
    for i in range(count):
        # Out of order within each input, and the two inputs interleaved.
        ts = (i * 7919) % count / 10
        order.add("gw" if i % 2 else "app", gateway_event(ts, request_id=f"r-{i}") if i % 2 else app_event(ts))
    return order


def test_a_buffer_larger_than_a_chunk_restores_to_the_same_release_order() -> None:
    original = _buffer_of(2 * _PICKLE_CHUNK + 123)
    restored = pickle.loads(pickle.dumps(original, protocol=pickle.HIGHEST_PROTOCOL))
    assert len(restored) == len(original)
    assert restored.watermark == original.watermark
    assert list(restored.release(float("inf"))) == list(original.release(float("inf")))


def test_a_snapshot_taken_before_chunking_still_loads() -> None:
    original = _buffer_of(50)
    restored = EventOrder.__new__(EventOrder)
    # The state as the default pickling wrote it, with the heap whole under "_heap".
    restored.__setstate__({**original.__dict__, "_heap": list(original._heap)})
    assert list(restored.release(float("inf"))) == list(original.release(float("inf")))
