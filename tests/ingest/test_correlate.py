"""Correlation by request id: retries, several app lines, late and out-of-order records, skew."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detectors.sample import app_event, gateway_event
from ingest.correlate import Correlator
from ingest.order import EventOrder
from ingest.records import Event, Transaction

LATENESS_SECS = 120.0
WINDOW_SECS = 30.0


def correlate(streams: dict[str, Sequence[Event]], read_chunk: int = 3) -> list[Transaction]:
    """Drive order + correlation the way the pipeline does: interleaved chunks, whole-second ticks."""
    order = EventOrder(LATENESS_SECS)
    correlator = Correlator(WINDOW_SECS)
    out: list[Transaction] = []
    tick: list[float] = []

    def process(event: Event) -> None:
        second = math.floor(event.ts)
        if not tick:
            tick.append(second)
        while tick[0] < second:
            tick[0] += 1
            out.extend(correlator.close_until(tick[0]))
        if event.request_id:
            correlator.add(event, order.clock)

    cursors = {name: 0 for name in streams}
    for name in streams:
        order.open_stream(name)
    while cursors:
        name = min(cursors, key=order.stream_clock)
        start = cursors[name]
        chunk = streams[name][start : start + read_chunk]
        if not chunk:
            del cursors[name]
            order.close_stream(name)
        cursors_value = start + len(chunk)
        if name in cursors:
            cursors[name] = cursors_value
        for event in chunk:
            if not order.add(name, event):
                process(event)
        for event in order.release():
            process(event)
    for event in order.release(float("inf")):
        process(event)
    out.extend(correlator.close_all())
    return out


def shape(transactions: list[Transaction]) -> list[tuple[str, str, tuple[str, ...], tuple[str, ...]]]:
    return [(t.request_id, t.kind, tuple(e.id for e in t.gateway), tuple(e.id for e in t.app)) for t in transactions]


def traffic(skew_secs: float = 0.0) -> tuple[list[Event], list[Event]]:
    gateway, app = [], []
    for i in range(40):
        rid = f"r{i:03d}"
        ts = i * 2.0
        gateway.append(gateway_event(ts, request_id=rid, status=200))
        if i % 5 == 0:  # a retried request: two gateway attempts
            gateway.append(gateway_event(ts + 0.8, request_id=rid, status=200))
        if i % 7 != 0:  # every 7th request was rejected at the gateway
            app.append(app_event(ts + 0.1 + skew_secs, request_id=rid, message="received"))
            app.append(app_event(ts + 0.4 + skew_secs, request_id=rid, message="charge created"))
    app.append(app_event(90.0, request_id="bypass-1", message="received"))
    gateway.sort(key=lambda e: e.ts)
    app.sort(key=lambda e: e.ts)
    return gateway, app


def late_delivery(events: list[Event], delay_secs: float) -> list[Event]:
    """Deliver every third event ``delay_secs`` after its time (the file order is delivery order)."""
    return sorted(events, key=lambda e: e.ts + (delay_secs if e.origin.offset % 3 == 0 else 0.0))


ORDERINGS: dict[str, Callable[[list[Event], list[Event]], dict[str, list[Event]]]] = {
    "in_order": lambda g, a: {"gateway": g, "app": a},
    "sources_swapped": lambda g, a: {"app": a, "gateway": g},
    "app_late_60s": lambda g, a: {"gateway": g, "app": late_delivery(a, 60.0)},
    "gateway_late_60s": lambda g, a: {"gateway": late_delivery(g, 60.0), "app": a},
    "shuffled_within_lateness": lambda g, a: {
        "gateway": sorted(g, key=lambda e: e.ts + random.Random(e.id).uniform(0, 90)),
        "app": sorted(a, key=lambda e: e.ts + random.Random(e.id).uniform(0, 90)),
    },
    "split_streams": lambda g, a: {"gateway-0": g[::2], "gateway-1": g[1::2], "app": a},
}


@pytest.fixture(params=sorted(ORDERINGS))
def record_order(request: pytest.FixtureRequest) -> Callable[[list[Event], list[Event]], dict[str, list[Event]]]:
    return ORDERINGS[request.param]


def test_joins_retries_and_app_lines(record_order) -> None:
    gateway, app = traffic()
    result = {t.request_id: t for t in correlate(record_order(gateway, app))}
    assert len(result) == 41
    assert result["r005"].kind == "joined"
    assert len(result["r005"].gateway) == 2 and len(result["r005"].app) == 2
    assert result["r007"].kind == "gateway_only"
    assert result["bypass-1"].kind == "app_only"
    assert sum(t.kind == "joined" for t in result.values()) == 40 - 6


def test_result_does_not_depend_on_read_order(record_order) -> None:
    gateway, app = traffic()
    assert shape(correlate(record_order(gateway, app))) == shape(correlate(ORDERINGS["in_order"](gateway, app)))


@pytest.mark.parametrize("skew_secs", [-4.0, 3.0, 8.0])
def test_clock_skew_of_a_few_seconds_still_joins(skew_secs: float) -> None:
    gateway, app = traffic(skew_secs=skew_secs)
    result = {t.request_id: t for t in correlate({"gateway": gateway, "app": app})}
    assert result["r001"].kind == "joined"
    assert sum(t.kind == "app_only" for t in result.values()) == 1  # only the real bypass


@pytest.mark.parametrize("read_chunk", [1, 3, 50])
def test_a_request_longer_than_the_join_window_is_joined_from_its_end(read_chunk: int) -> None:
    """Envoy dates its record by the request's start, Billing by its end: a 45 s export is one request."""
    background = [gateway_event(float(t), request_id=f"bg{t}", status=200) for t in range(0, 400, 5)]
    gateway = sorted([*background, gateway_event(10.0, request_id="export", status=200, duration_ms=45_000.0),
                      gateway_event(20.0, request_id="stuck", status=200, duration_ms=10 * 86_400_000.0),
                      gateway_event(30.0, request_id="quick", status=200, duration_ms=2.0)],
                     key=lambda e: e.ts)  # fmt: skip
    app = [app_event(55.0, request_id="export"), app_event(200.0, request_id="quick")]
    result = {t.request_id: t for t in correlate({"gateway": gateway, "app": app}, read_chunk)}
    assert result["export"].kind == "joined"
    # a request that ended long before the app's line is no excuse to join it: its end plus the window
    assert [t.kind for t in correlate({"gateway": gateway, "app": app}) if t.request_id == "quick"] == [
        "gateway_only", "app_only"]  # fmt: skip
    correlator = Correlator(WINDOW_SECS)
    stuck = next(e for e in gateway if e.request_id == "stuck")
    correlator.add(stuck, now=stuck.ts)
    assert list(correlator.close_until(stuck.ts + 86_400 + WINDOW_SECS)) == []  # a day at most, not ten
    assert [t.request_id for t in correlator.close_until(stuck.ts + 86_400 + WINDOW_SECS + 1)] == ["stuck"]


@pytest.mark.parametrize("start", [0.0, 0.5])
def test_a_line_exactly_a_join_window_after_the_request_s_end_joins_whatever_the_second(start: float) -> None:
    """A detection audit: a Billing line exactly 30 s after the request's end made a second transaction when the
    end fell on a whole second (the close at that second's tick came before the line), and joined 0.5 s later."""
    gateway = [gateway_event(start, request_id="r", status=200, duration_ms=1000.0)]
    app = [app_event(start + 0.1, request_id="r"), app_event(start + 1 + WINDOW_SECS, request_id="r")]
    assert [(t.request_id, t.kind) for t in correlate({"gateway": gateway, "app": app})] == [("r", "joined")]
    later = [app_event(start + 0.1, request_id="r"), app_event(start + 1 + WINDOW_SECS + 1.001, request_id="r")]
    assert [t.kind for t in correlate({"gateway": gateway, "app": later})] == ["joined", "app_only"]


def test_a_request_longer_than_the_allowed_lateness_is_late_and_still_joined() -> None:
    """Envoy writes the record when the request ends: a 300 s upload's record comes 300 s after its time."""
    upload = gateway_event(10.0, request_id="upload", status=200, duration_ms=300_000.0)
    background = [gateway_event(float(t), request_id=f"bg{t}", status=200) for t in range(0, 600, 5)]
    gateway = [e for e in background if e.ts <= upload.ts + 300] + [upload] + [e for e in background
                                                                           if e.ts > upload.ts + 300]  # fmt: skip
    result = {t.request_id: t for t in correlate({"gateway": gateway, "app": [app_event(310.0, request_id="upload")]})}
    assert result["upload"].kind == "joined"


def test_groups_leave_memory_when_the_window_closes() -> None:
    correlator = Correlator(WINDOW_SECS)
    for i in range(1000):
        event = gateway_event(float(i), request_id=f"r{i}")
        correlator.add(event, now=event.ts)
        list(correlator.close_until(event.ts))
    assert len(correlator) <= WINDOW_SECS + 1


def test_a_late_record_of_a_closed_request_starts_a_new_group() -> None:
    correlator = Correlator(WINDOW_SECS)
    gateway = gateway_event(0.0, request_id="r")
    correlator.add(gateway, now=gateway.ts)
    now = gateway.ts + 100.0
    (first,) = correlator.close_until(now)
    correlator.add(app_event(1.0, request_id="r"), now=now)  # arrives after the window closed
    assert list(correlator.close_until(now + WINDOW_SECS)) == []  # a record at its deadline would still join
    (second,) = correlator.close_until(now + WINDOW_SECS + 1)
    assert (first.kind, second.kind) == ("gateway_only", "app_only")


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 10_000), chunk=st.integers(1, 50), delay=st.floats(0, LATENESS_SECS - 1))
def test_order_independence_property(seed: int, chunk: int, delay: float) -> None:
    gateway, app = traffic()
    rng = random.Random(seed)
    streams = {
        "gateway": sorted(gateway, key=lambda e: e.ts + rng.uniform(0, delay)),
        "app": sorted(app, key=lambda e: e.ts + rng.uniform(0, delay)),
    }
    if rng.random() < 0.5:
        streams = dict(reversed(list(streams.items())))
    assert shape(correlate(streams, read_chunk=chunk)) == shape(correlate({"gateway": gateway, "app": app}))


def test_open_groups_continue_from_their_state() -> None:
    """A correlator restored from its encoded state closes the same transactions at the same points."""
    from ingest.codec import decode_state, encode_state

    def fill(correlator: Correlator, events: list[Event]) -> None:
        for event in events:
            correlator.add(event, event.ts)

    batch = [gateway_event(i * 0.5, request_id=f"r-{i // 3}") for i in range(60)]
    batch += [app_event(i * 0.5 + 0.1, request_id=f"r-{i // 2}") for i in range(40)]
    batch.sort(key=lambda e: e.ts)
    original, restored = Correlator(WINDOW_SECS), Correlator(WINDOW_SECS)
    fill(original, batch[:70])
    restored.restore_state(decode_state(encode_state(original.state()), Correlator.State))
    assert len(restored) == len(original) > 0
    fill(original, batch[70:])
    fill(restored, batch[70:])
    for until in (batch[0].ts + 40, batch[-1].ts + 10, math.inf):
        assert [t.id for t in restored.close_until(until)] == [t.id for t in original.close_until(until)]


@settings(max_examples=200, deadline=None)
@given(times=st.lists(st.sampled_from([0.0, 0.5, 1.0]), min_size=1, max_size=4), data=st.data())
def test_each_side_closes_in_time_then_id_order(times: list[float], data: st.DataObject) -> None:
    """However a request's records arrive (late ones appended), each side leaves sorted by (ts, id).

    Ties in time are common (one millisecond clock), so the id breaks them, as it does in the order.
    """
    app = [app_event(ts, request_id="r") for ts in times]
    arrival = data.draw(st.permutations(app))
    correlator = Correlator(WINDOW_SECS)
    for event in arrival:
        correlator.add(event, now=0.0)
    (txn,) = correlator.close_all()
    assert list(txn.app) == sorted(app, key=lambda e: (e.ts, e.id))


def test_a_request_id_kept_open_by_its_client_is_closed_once_full(monkeypatch: pytest.MonkeyPatch) -> None:
    """A flood trial: a client that sets its own request id kept one group open as long as it sent (29,900 attempts
    in one 800 KB transaction). A full side closes the group at the next whole second; later records start anew."""
    from ingest import correlate as correlate_module

    monkeypatch.setattr(correlate_module, "MAX_SIDE_RECORDS", 10)
    gateway = [gateway_event(i * 0.5, request_id="same", status=200) for i in range(25)]
    transactions = correlate({"gateway": gateway, "app": []})
    assert [len(t.gateway) for t in transactions] == [10, 10, 5]  # each closed at the second after its tenth
    assert sorted(e.id for t in transactions for e in t.gateway) == sorted(e.id for e in gateway)
