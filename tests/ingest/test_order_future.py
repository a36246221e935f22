"""The far-future guard of the reorder buffer: what moves a clock, and that arrival order does not matter."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from detectors.sample import T0, app_event
from ingest.order import MAX_HELD_EVENTS, EventOrder
from ingest.records import Event

DAY = 86_400.0


def _feed(order: EventOrder, events: list[Event]) -> list[Event]:
    """Feed like the pipeline does; return every event admitted (added), in admission order."""
    admitted: list[Event] = []

    def add(event: Event) -> None:
        admitted.append(event)
        order.add(event.origin.stream, event)

    for event in events:
        if event.ts > order.horizon:
            for ready in order.hold(event):
                add(ready)
        else:
            add(event)
        for ready in order.reached():
            add(ready)
    for ready in order.settle():
        add(ready)
    return admitted


def _events(offsets: list[float]) -> list[Event]:
    return [app_event(ts, request_id=f"r-{i}") for i, ts in enumerate(offsets)]


def test_one_record_a_year_ahead_moves_no_clock() -> None:
    order = EventOrder(lateness_secs=120.0)
    order.open_stream("example-app")
    events = _events([0.0, 1.0, 365 * DAY, 2.0, 3.0])
    admitted = _feed(order, events)
    assert [e.request_id for e in admitted] == ["r-0", "r-1", "r-3", "r-4"]
    assert order.stream_clock("example-app") == T0 + 3.0 and order.future_events == 1


def test_a_real_jump_vouches_for_itself_with_its_next_record() -> None:
    order = EventOrder(lateness_secs=120.0)
    order.open_stream("example-app")
    admitted = _feed(order, _events([0.0, 1.0, 3 * DAY, 3 * DAY + 5]))
    assert len(admitted) == 4 and order.future_events == 0
    assert order.stream_clock("example-app") == T0 + 3 * DAY + 5


def test_a_single_record_run_is_still_processed() -> None:
    order = EventOrder(lateness_secs=120.0)
    order.open_stream("example-app")
    assert [e.request_id for e in _feed(order, _events([10.0]))] == ["r-0"]


def test_a_first_record_from_the_far_future_waits_and_stays_out() -> None:
    order = EventOrder(lateness_secs=120.0)
    order.open_stream("example-app")
    admitted = _feed(order, _events([9_000 * DAY, 0.0, 1.0]))
    assert sorted(e.request_id for e in admitted) == ["r-1", "r-2"]
    assert order.stream_clock("example-app") == T0 + 1.0


# Clusters of traffic days apart, plus lone records anywhere.
_times = st.lists(
    st.one_of(
        st.integers(0, 3).map(lambda day: day * 10 * DAY) | st.integers(0, 3).map(lambda day: day * 10 * DAY + 60),
        st.floats(0, 400 * DAY, allow_nan=False),
    ),
    min_size=1,
    max_size=30,
)


@given(_times, st.randoms(use_true_random=False))
def test_what_is_held_at_the_end_does_not_depend_on_arrival_order(times: list[float], random: object) -> None:
    events = _events(times)
    shuffled = list(events)
    random.shuffle(shuffled)  # type: ignore[attr-defined]
    held_in_order = {e.id for e in events} - {e.id for e in _feed(EventOrder(120.0), events)}
    held_shuffled = {e.id for e in events} - {e.id for e in _feed(EventOrder(120.0), shuffled)}
    assert held_in_order == held_shuffled
    # What is held: lone records (none other within a day) above every pair that vouch for each other.
    ordered = sorted(times)
    vouched = [t for i, t in enumerate(ordered) if any(abs(t - u) <= DAY for j, u in enumerate(ordered) if j != i)]
    top = max(vouched) if vouched else ordered[0]
    expected = {e.id for e in events if e.ts - T0 > top + DAY}
    assert held_in_order == expected


def test_held_events_are_capped_and_the_rest_counted() -> None:
    order = EventOrder(lateness_secs=120.0, max_future_secs=1.0)
    order.open_stream("example-app")
    assert _feed(order, _events([0.0, 0.5])) != []  # a credible start
    lone = _events([10.0 + 2 * i for i in range(MAX_HELD_EVENTS + 5)])  # each alone: 2 s apart, reach 1 s
    for event in lone:
        assert order.hold(event) == []
    assert order.future_discarded == 5 and order.future_events == MAX_HELD_EVENTS + 5
