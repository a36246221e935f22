"""The KEYED task's buffers: items taken by tick, in the order a heap of (time, id, arrival) gave them."""

from __future__ import annotations

import heapq
import math

from hypothesis import given
from hypothesis import strategies as st

from detectors.sample import gateway_event
from gatewatch.tasks.keyed import _TickBuckets

TIMES = st.floats(min_value=-5.0, max_value=30.0, allow_nan=False).map(lambda t: round(t * 4) / 4)  # ties on purpose
IDS = st.sampled_from(["a", "b", "c"])
# Whole ticks as the JOIN tasks send them, and halves: a tick from the wire is any bounded float.
LIMITS = st.lists(st.integers(min_value=-6, max_value=62).map(lambda n: n / 2), min_size=1, max_size=12)


def _entries(items: list[tuple[float, str]]) -> list[tuple[float, str, int, object, int]]:
    event = gateway_event(0.0)
    return [(time, id_, arrival, event, 1) for arrival, (time, id_) in enumerate(items)]


@given(st.lists(st.tuples(TIMES, IDS), max_size=60), LIMITS, st.booleans())
def test_buckets_give_what_a_heap_gives(items: list[tuple[float, str]], limits: list[float], strict: bool) -> None:
    # Events leave below a limit (ts < tick + 1), by their second; transactions through it
    # (deadline <= tick), by the tick their deadline falls in.
    buckets: _TickBuckets = _TickBuckets(math.floor if strict else math.ceil)
    heap: list[tuple[float, str, int, object, int]] = []
    entries = _entries(items)
    half = len(entries) // 2
    for entry in entries[:half]:
        buckets.add(entry)  # type: ignore[arg-type]
        heapq.heappush(heap, entry)
    for number, limit in enumerate(sorted(limits)):
        if number == 1:  # more arrive between takes, some older than what was taken
            for entry in entries[half:]:
                buckets.add(entry)  # type: ignore[arg-type]
                heapq.heappush(heap, entry)
        expected = []
        while heap and (heap[0][0] < limit if strict else heap[0][0] <= limit):
            expected.append(heapq.heappop(heap))
        taken = buckets.take_below(limit) if strict else buckets.take_through(limit)
        assert taken == expected
        assert bool(buckets) == bool(heap)
        if heap:
            tick_of = math.floor if strict else math.ceil
            assert buckets.first_tick() == tick_of(heap[0][0])
    assert sorted(buckets.entries()) == sorted(heap)
    assert buckets.take_through(math.inf) == sorted(heap)
    assert not buckets
