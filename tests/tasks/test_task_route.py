"""The ingest side of partitioned detection: routing by request id, and the credible stream clocks."""

from __future__ import annotations

import msgspec

from detectors.sample import T0, app_event, gateway_event
from gatewatch.tasks.route import StreamClocks, entity_partition, progress_message, requests_partition, route_events
from gatewatch.wire import IngestProgress, PollEventsMessage, decode_requests_message, encode_poll_events

DAY = 86_400.0
FAR = 253_402_300_000.0  # 9999-12-31


def test_both_sides_of_a_request_meet_in_one_partition_whatever_stream_they_came_from() -> None:
    for n in range(200):
        gateway = gateway_event(n, request_id=f"req-{n}")
        app = msgspec.structs.replace(app_event(n + 0.1, request_id=f"req-{n}"))
        assert requests_partition(gateway, 5) == requests_partition(app, 5) == entity_partition(f"req-{n}", 5)
    spread = {requests_partition(gateway_event(0, request_id=f"req-{n}"), 4) for n in range(200)}
    assert spread == {0, 1, 2, 3}
    no_id = gateway_event(0)
    assert requests_partition(no_id, 4) == entity_partition(no_id.origin.stream, 4)


def test_route_events_splits_a_poll_by_partition_in_offset_order() -> None:
    events = [gateway_event(n, request_id=f"req-{n}") for n in range(50)]
    parts = route_events(events, 3)
    seen = []
    for partition, encoded in parts:
        message = decode_requests_message(encode_poll_events(1.0, [(events[0].origin.stream, encoded)]))
        assert isinstance(message, PollEventsMessage)
        part = message.parts[0].events
        assert all(requests_partition(e, 3) == partition for e in part)
        assert [e.origin.offset for e in part] == sorted(e.origin.offset for e in part)
        seen += part
    assert sorted(e.id for e in seen) == sorted(e.id for e in events)


def test_a_record_dated_9999_never_moves_a_stream_clock() -> None:
    clocks = StreamClocks(DAY)
    first = [gateway_event(0), gateway_event(1)]
    clocks.observe("gw/0", first, 100.0)
    far = msgspec.structs.replace(gateway_event(2), ts=FAR)
    clocks.observe("gw/0", [far, gateway_event(3)], 101.0)
    clocks.observe("app/0", [msgspec.structs.replace(app_event(4), ts=FAR + 2 * DAY)], 102.0)  # lone too
    assert clocks.clocks == {"gw/0": T0 + 3}
    assert clocks.last_wall == {"gw/0": 101.0, "app/0": 102.0}
    progress = decode_requests_message(progress_message(103.0, clocks, {"gw/0": (5, 5), "app/0": (1, 1)}))
    assert isinstance(progress, IngestProgress)
    assert (progress.streams["gw/0"].clock, progress.streams["app/0"].clock) == (T0 + 3, None)
    assert progress.streams["app/0"].last_wall == 102.0


def test_before_any_credible_time_a_record_needs_another_within_reach() -> None:
    clocks = StreamClocks(DAY)
    clocks.observe("gw/0", [msgspec.structs.replace(gateway_event(0), ts=FAR)], 1.0)
    assert clocks.clocks == {} and clocks.newest is None
    far = msgspec.structs.replace(gateway_event(1), ts=FAR + 2 * DAY)  # lone as well: two days from the first
    clocks.observe("gw/0", [gateway_event(0), far, gateway_event(2)], 2.0)
    assert clocks.clocks == {"gw/0": T0 + 2}
    # a lone record two days ahead stays out; logs that really jumped corroborate each other
    clocks.observe("gw/0", [gateway_event(3), gateway_event(2 * DAY)], 3.0)
    assert clocks.clocks == {"gw/0": T0 + 3}
    clocks.observe("gw/0", [gateway_event(2 * DAY + 1), gateway_event(2 * DAY + 2)], 4.0)
    assert clocks.clocks == {"gw/0": T0 + 2 * DAY + 2}


def test_two_lone_records_polls_apart_vouch_for_each_other() -> None:
    # A quiet new deployment: one record a poll. As the order holds them, they vouch for each other.
    clocks = StreamClocks(DAY)
    clocks.observe("gw/0", [gateway_event(0)], 1.0)
    assert clocks.clocks == {} and clocks.newest is None
    clocks.observe("app/0", [app_event(180)], 181.0)
    assert clocks.clocks == {"gw/0": T0, "app/0": T0 + 180} and clocks.newest == T0 + 180
    # Later lone ones: one two days ahead stays out until another lands near it, then both count.
    clocks.observe("gw/0", [gateway_event(2 * DAY)], 182.0)
    assert clocks.clocks["gw/0"] == T0
    clocks.observe("app/0", [app_event(2 * DAY + 5)], 183.0)
    assert clocks.clocks == {"gw/0": T0 + 2 * DAY, "app/0": T0 + 2 * DAY + 5}


def test_a_lone_record_becomes_credible_when_time_reaches_it() -> None:
    clocks = StreamClocks(DAY)
    clocks.observe("gw/0", [gateway_event(0), gateway_event(1)], 1.0)
    clocks.observe("app/0", [app_event(1.5 * DAY)], 2.0)  # ahead of reach: held
    assert "app/0" not in clocks.clocks
    clocks.observe("gw/0", [gateway_event(0.8 * DAY)], 3.0)  # now within a day of it
    assert clocks.clocks == {"gw/0": T0 + 0.8 * DAY, "app/0": T0 + 1.5 * DAY}
