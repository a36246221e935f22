"""The reorder buffer survives a checkpoint: its state encoded and decoded, restored in the same order."""

from __future__ import annotations

import pytest

from detectors.sample import app_event, gateway_event
from gatewatch.errors import WireError
from ingest.codec import decode_state, encode_state
from ingest.order import EventOrder


def _buffer_of(count: int) -> EventOrder:
    order = EventOrder(lateness_secs=10_000.0)
    order.open_stream("gw")
    order.open_stream("app")
    for i in range(count):
        # Out of order within each input, and the two inputs interleaved.
        ts = (i * 7919) % count / 10
        order.add("gw" if i % 2 else "app", gateway_event(ts, request_id=f"r-{i}") if i % 2 else app_event(ts))
    return order


def _round_trip(order: EventOrder) -> EventOrder:
    restored = EventOrder(order.lateness_secs)
    restored.restore_state(decode_state(encode_state(order.state()), EventOrder.State))
    return restored


def test_a_buffer_restores_to_the_same_release_order_and_clocks() -> None:
    original = _buffer_of(12_345)
    list(original.release(original.clock + 100))  # some released: the clock and late count are state too
    original.add("gw", gateway_event(0.0))  # late
    restored = _round_trip(original)
    assert len(restored) == len(original)
    assert (restored.watermark, restored.clock, restored.late_events) == (
        original.watermark, original.clock, original.late_events
    )
    assert restored.stream_clock("gw") == original.stream_clock("gw")
    assert list(restored.release(float("inf"))) == list(original.release(float("inf")))


def test_an_empty_buffer_with_a_silent_input_keeps_holding_the_watermark() -> None:
    order = EventOrder(lateness_secs=5.0)
    order.open_stream("gw")
    restored = _round_trip(order)
    assert restored.watermark == float("-inf")
    assert restored.stream_clock("gw") == float("-inf")


def test_a_state_out_of_heap_order_is_restored_as_a_heap() -> None:
    original = _buffer_of(200)
    state = original.state()
    state.events.rows.reverse()
    state.events.stream_of.reverse()
    restored = EventOrder(original.lateness_secs)
    restored.restore_state(decode_state(encode_state(state), EventOrder.State))
    released = list(restored.release(float("inf")))
    assert released == [e for _, _, e in sorted(original._heap)]


def test_a_table_naming_a_stream_it_does_not_have_is_refused() -> None:
    state = _buffer_of(10).state()
    state.events.stream_of[3] = 7
    with pytest.raises(WireError):
        EventOrder(1.0).restore_state(decode_state(encode_state(state), EventOrder.State))
