"""The reorder buffer survives a checkpoint: its state encoded and decoded, restored in the same order."""

from __future__ import annotations

import msgspec
import pytest

from detectors.sample import app_event, gateway_event
from gatewatch.errors import WireError
from ingest.codec import decode_event_state, decode_state, encode_event_state, encode_state, pack_events
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
    reversed_events = decode_event_state(state.events, packed=False)[::-1]
    state = msgspec.structs.replace(state, events=encode_event_state(reversed_events))
    restored = EventOrder(original.lateness_secs)
    restored.restore_state(decode_state(encode_state(state), EventOrder.State))
    released = list(restored.release(float("inf")))
    assert released == [e for _, _, e in sorted(original._heap)]


def _packed(state: EventOrder.State) -> EventOrder.State:
    """``state`` as a state v1 held it: its events in EventTables."""
    events, held = (decode_event_state(raw, packed=False) for raw in (state.events, state.held))
    return msgspec.structs.replace(state, events=msgspec.Raw(encode_state(pack_events(events))),
                                   held=msgspec.Raw(encode_state(pack_events(held))))  # fmt: skip


def test_a_state_v1_with_event_tables_restores_the_same_buffer() -> None:
    original = _buffer_of(2_000)
    original.add("gw", gateway_event(1e9))  # far in the future
    state = _packed(original.state())
    restored = EventOrder(original.lateness_secs)
    restored.restore_state(decode_state(encode_state(state), EventOrder.State), packed=True)
    assert restored.event_ids() == original.event_ids() and len(restored.event_ids()) == 2_001
    assert (len(restored), restored.future_events) == (len(original), original.future_events)
    assert list(restored.release(float("inf"))) == list(original.release(float("inf")))


def test_a_table_naming_a_stream_it_does_not_have_is_refused() -> None:
    state = _packed(_buffer_of(10).state())
    table = decode_state(state.events, type(pack_events([])))
    table.stream_of[3] = 7
    state = msgspec.structs.replace(state, events=msgspec.Raw(encode_state(table)))
    with pytest.raises(WireError):
        EventOrder(1.0).restore_state(decode_state(encode_state(state), EventOrder.State), packed=True)


def test_events_that_do_not_decode_are_refused() -> None:
    state = _buffer_of(10).state()
    events = msgspec.msgpack.decode(state.events)
    events[3][2] = float("nan")  # an event time no tick can step over
    state = msgspec.structs.replace(state, events=msgspec.Raw(encode_state(events)))
    with pytest.raises(WireError):
        EventOrder(1.0).restore_state(decode_state(encode_state(state), EventOrder.State))
