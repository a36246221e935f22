"""EventOrder.take (a release as one list) and the buffer's sort without a key."""

from __future__ import annotations

import random

import msgspec
import pytest

from detectors.sample import T0, app_event, gateway_event
from ingest.codec import decode_state, encode_event_state, encode_state
from ingest.order import EventOrder


@pytest.mark.parametrize("seed", range(4))
def test_take_gives_what_release_gives(seed: int) -> None:
    rng = random.Random(seed)
    orders = EventOrder(lateness_secs=5.0), EventOrder(lateness_secs=5.0)
    taken: list[list[str]] = [[], []]
    for i in range(3_000):
        ts = i * 0.01 + rng.uniform(0, 0.05) - (rng.uniform(1, 20) if rng.random() < 0.02 else 0.0)
        event = gateway_event(ts, request_id=f"r-{i}") if i % 2 else app_event(ts)
        stream = "gw" if i % 2 else "app"
        for order in orders:
            order.add(stream, event)
        if i % 97 == 0:
            taken[0] += [e.id for e in orders[0].release()]
            taken[1] += [e.id for e in orders[1].take()]
            assert orders[0].clock == orders[1].clock
    taken[0] += [e.id for e in orders[0].release(float("inf"))]
    taken[1] += [e.id for e in orders[1].take(float("inf"))]
    assert taken[0] == taken[1] and len(taken[1]) == 3_000 - orders[1].late_events
    assert orders[1].take() == [] and len(orders[1]) == 0


def test_a_record_delivered_twice_survives_a_checkpoint_in_arrival_order() -> None:
    # Same id and time at two offsets: sorting the entries themselves would compare the events.
    order = EventOrder(lateness_secs=0.0, max_future_secs=10.0)
    order.add("gw", gateway_event(0.0))
    first = gateway_event(1.0)
    again = msgspec.structs.replace(first, origin=msgspec.structs.replace(first.origin, offset=first.origin.offset + 1))
    late = gateway_event(1_000.0)  # beyond the horizon: held
    late_again = msgspec.structs.replace(late, origin=msgspec.structs.replace(late.origin, offset=late.origin.offset + 1))
    for event in (gateway_event(2.0), first, again):
        order.add("gw", event)
    # Two held entries of one id and time vouch for each other, so only a checkpoint written elsewhere has them.
    state = msgspec.structs.replace(order.state(), held=encode_event_state([late, late_again]))
    restored = EventOrder(lateness_secs=0.0, max_future_secs=10.0)
    restored.restore_state(decode_state(encode_state(state), EventOrder.State))
    released = restored.take(float("inf"))
    assert [e.ts for e in released] == [T0 + 0.0, T0 + 1.0, T0 + 1.0, T0 + 2.0]
    assert [e.origin.offset for e in released[1:3]] == [first.origin.offset, again.origin.offset]
    assert restored.future_events == 2
