"""The reorder buffer releases exactly what a plain sort would, however its arrivals fall.

The buffer merges arrivals into its sorted entries once per release: most near
its newest entries, a few (a slow request, dated when it began) far back. Each
release must still be every event at or below the watermark, in ``(ts, id)``
order, and nothing else.
"""

from __future__ import annotations

import random

import msgspec
import pytest

from detectors.sample import T0, app_event, gateway_event
from ingest.correlate import Correlator
from ingest.order import EventOrder
from ingest.records import Event


def _arrivals(rng: random.Random, count: int, far_share: float) -> list[tuple[str, Event]]:
    """Two inputs about in time order, with a share of events dated far back (up to a minute)."""
    out = []
    for i in range(count):
        ts = i * 0.01 + rng.uniform(0, 0.05)
        if rng.random() < far_share:
            ts -= rng.uniform(1, 60)
        out.append(("gw", gateway_event(ts, request_id=f"r-{i}")) if i % 2 else ("app", app_event(ts)))
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("far_share", [0.0, 0.01, 0.2])
def test_each_release_is_the_sorted_events_up_to_the_watermark(seed: int, far_share: float) -> None:
    rng = random.Random(seed)
    order = EventOrder(lateness_secs=70.0)
    order.open_stream("gw")
    order.open_stream("app")
    waiting: list[Event] = []
    arrivals = _arrivals(rng, 6_000, far_share)
    at = 0
    while at < len(arrivals):
        batch = arrivals[at : at + rng.randint(1, 700)]
        at += len(batch)
        for stream, event in batch:
            if order.add(stream, event):
                waiting.append(event)
        limit = order.watermark if rng.random() < 0.8 else T0 + rng.uniform(0, at * 0.01)
        expected = sorted((e for e in waiting if e.ts <= limit), key=lambda e: (e.ts, e.id))
        assert list(order.release(limit)) == expected
        waiting = [e for e in waiting if e.ts > limit]
        assert len(order) == len(waiting)
    assert list(order.release(float("inf"))) == sorted(waiting, key=lambda e: (e.ts, e.id))


@pytest.mark.parametrize("seed", range(4))
def test_a_lagging_input_is_sorted_in_where_it_belongs(seed: int) -> None:
    """One input's polls seconds behind the other's: its arrivals land close together, far back in the buffer."""
    rng = random.Random(seed)
    order = EventOrder(lateness_secs=60.0)
    order.open_stream("gw")
    order.open_stream("app")
    gateway = [gateway_event(i * 0.01 + rng.uniform(0, 0.02), request_id=f"r-{i}") for i in range(8_000)]
    app = [app_event(i * 0.01 + rng.uniform(0, 0.02), request_id=f"r-{i}") for i in range(8_000)]
    app += [app_event(gateway[i].ts, request_id=gateway[i].request_id) for i in range(0, 8_000, 97)]  # same times
    app.sort(key=lambda e: e.ts)
    waiting: list[Event] = []
    lag = rng.randint(800, 2_000)  # arrivals, ~8-20 s of event time
    for at in range(0, len(app) + lag + 250, 250):
        late = app[at - lag : at - lag + 250] if at >= lag else []
        for stream, batch in (("gw", gateway[at : at + 250]), ("app", late)):
            for event in batch:
                if order.add(stream, event):
                    waiting.append(event)
        limit = T0 + rng.uniform(0, (at - lag) * 0.01) if rng.random() < 0.3 else order.watermark
        expected = sorted((e for e in waiting if e.ts <= limit), key=lambda e: (e.ts, e.id))
        assert order.take(limit) == expected
        waiting = [e for e in waiting if e.ts > limit]
    assert order.take(float("inf")) == sorted(waiting, key=lambda e: (e.ts, e.id))


def test_a_consumer_stopping_early_leaves_the_rest_buffered() -> None:
    order = EventOrder(lateness_secs=0.0)
    events = [gateway_event(float(i)) for i in range(10)]
    for event in reversed(events):
        order.add("gw", event)
    released = order.release(float("inf"))
    assert [next(released) for _ in range(3)] == events[:3]
    released.close()
    assert len(order) == 7
    assert list(order.release(float("inf"))) == events[3:]


def test_groups_close_in_deadline_then_request_id_order_also_between_whole_seconds() -> None:
    correlator = Correlator(join_window_secs=5.0)
    rng = random.Random(7)
    events = [gateway_event(rng.uniform(0, 20), request_id=f"r-{rng.randrange(300)}") for _ in range(1_000)]
    deadlines: dict[str, float] = {}
    for event in sorted(events, key=lambda e: e.ts):
        correlator.add(event, now=event.ts)
        assert event.request_id is not None
        deadlines[event.request_id] = event.ts + 5.0
    closed: list[str] = []
    for until in (T0 + 9.5, T0 + 10.0, T0 + 12.25, T0 + 12.75, T0 + 20.0, float("inf")):
        closed.extend(t.request_id for t in correlator.close_until(until))
        assert all(deadlines[r] > until for r in correlator._groups)
    assert closed == sorted(deadlines, key=lambda r: (deadlines[r], r))


def test_a_record_delivered_twice_is_released_twice_in_arrival_order() -> None:
    # Same id and time, another position (a batch posted twice): the buffer never compares the events.
    order = EventOrder(lateness_secs=0.0)
    first = gateway_event(1.0)
    again = msgspec.structs.replace(first, origin=msgspec.structs.replace(first.origin, offset=first.origin.offset + 1))
    for event in (gateway_event(2.0), first, gateway_event(0.5), again):
        order.add("gw", event)
    released = list(order.release(float("inf")))
    assert [e.ts for e in released] == [T0 + 0.5, T0 + 1.0, T0 + 1.0, T0 + 2.0]
    assert released[1] is first and released[2] is again
