"""The idle-input rule of the detect stage, on its own and applied to an event order."""

from __future__ import annotations

from gatewatch.serve_idle import IdleInputs, IdleMove
from ingest.order import EventOrder
from ingest.records import Dataset, Event, Origin

T0 = 1_767_000_000.0
LATENESS_SECS = 120.0
STREAMS = [f"gw/{n}" for n in range(4)]


def _event(stream: str, ts: float, n: int) -> Event:
    return Event(f"{stream}-{n}", Dataset.GATEWAY, ts, Origin(Dataset.GATEWAY, stream, n))


def _apply(order: EventOrder, moves: list[IdleMove]) -> None:
    for move in moves:
        if move.ts is None:
            order.close_stream(move.stream)
        else:
            order.advance_stream(move.stream, move.ts)


def test_busy_or_recent_inputs_are_left_alone() -> None:
    idle = IdleInputs(10.0)
    idle.delivered("gw/0", 100.0, T0)
    idle.delivered("gw/1", 100.0, T0 + 5)
    # gw/0 is behind its end, gw/1 caught up but only 9 s quiet
    assert idle.on_progress(109.0, {"gw/0": (5, 9), "gw/1": (9, 9)}) == []


def test_a_quiet_caught_up_input_moves_to_the_newest_event_time_of_the_others() -> None:
    idle = IdleInputs(10.0)
    idle.delivered("gw/0", 100.0, T0)  # its data ended 9 minutes before the others'
    idle.delivered("gw/1", 125.0, T0 + 540)
    idle.delivered("app/0", 125.0, T0 + 540.003)
    progress = {"gw/0": (7, 7), "gw/1": (3, 9), "app/0": (2, 8)}
    assert idle.on_progress(126.0, progress) == [IdleMove("gw/0", T0 + 540)]


def test_with_every_input_quiet_the_front_moves_at_wall_speed() -> None:
    idle = IdleInputs(10.0)
    idle.delivered("gw/0", 100.0, T0)
    idle.delivered("gw/1", 100.0, T0 + 540)
    idle.delivered("app/0", 100.0, T0 + 540)
    moves = idle.on_progress(130.0, {"gw/0": (7, 7), "gw/1": (9, 9), "app/0": (4, 4)})
    assert moves == [IdleMove("gw/0", T0 + 570), IdleMove("gw/1", T0 + 570), IdleMove("app/0", T0 + 570)]


def test_one_input_hours_ahead_does_not_carry_the_others_there() -> None:
    """A host clock 12 h fast (credible: inside max_future_secs) shows on one input only."""
    idle = IdleInputs(10.0)
    idle.delivered("gw/0", 100.0, T0)
    idle.delivered("app/0", 100.0, T0 + 1)
    idle.delivered("gw/1", 100.0, T0 + 12 * 3600)
    moves = idle.on_progress(110.0, {"gw/0": (1, 1), "app/0": (1, 1), "gw/1": (1, 1)})
    assert moves == [IdleMove("gw/0", T0 + 11), IdleMove("app/0", T0 + 11), IdleMove("gw/1", T0 + 12 * 3600 + 10)]


def test_a_never_delivering_input_is_closed_only_after_the_timeout() -> None:
    idle = IdleInputs(10.0)
    assert idle.on_progress(100.0, {"gw/3": (0, 0)}) == []
    assert idle.on_progress(109.0, {"gw/3": (0, 0)}) == []
    assert idle.on_progress(110.0, {"gw/3": (0, 0)}) == [IdleMove("gw/3", None)]
    # falling behind (new data) restarts the count
    assert idle.on_progress(111.0, {"gw/3": (0, 2)}) == []
    assert idle.on_progress(115.0, {"gw/3": (2, 2)}) == []


def test_the_short_partition_no_longer_holds_the_watermark() -> None:
    """The measured case: one of four partitions ends 9 minutes of event time before the others."""
    order = EventOrder(LATENESS_SECS)
    idle = IdleInputs(10.0)
    for stream in STREAMS:
        order.open_stream(stream)
    ends = {stream: T0 + 2700 for stream in STREAMS} | {"gw/2": T0 + 2700 - 540}
    for n, stream in enumerate(STREAMS):
        order.add(stream, _event(stream, ends[stream], n))
        idle.delivered(stream, 100.0, ends[stream])
    assert order.watermark == T0 + 2700 - 540 - LATENESS_SECS
    # All read within a second; one progress message 10 s later (every input quiet) frees every window
    # that ends before the newest event time minus the lateness.
    _apply(order, idle.on_progress(110.0, {stream: (1, 1) for stream in STREAMS}))
    assert order.watermark >= T0 + 2700 - LATENESS_SECS
    released = [event.ts for event in order.release()]
    assert released == sorted(ends.values())[:1]  # the rest are inside the last lateness_secs + 10 s


def test_an_input_quiet_while_others_still_read_stops_holding_them() -> None:
    order = EventOrder(LATENESS_SECS)
    idle = IdleInputs(10.0)
    for stream in ("gw/0", "gw/1", "app/0"):
        order.open_stream(stream)
    order.add("gw/0", _event("gw/0", T0, 0))
    idle.delivered("gw/0", 100.0, T0)
    for stream in ("gw/1", "app/0"):
        order.add(stream, _event(stream, T0 + 600, 0))
        idle.delivered(stream, 111.0, T0 + 600)
    _apply(order, idle.on_progress(111.0, {"gw/0": (1, 1), "gw/1": (1, 50), "app/0": (1, 40)}))
    # the others still read: they alone bound the watermark now, not gw/0's 10-minute-old last record
    assert order.watermark == T0 + 600 - LATENESS_SECS


def test_a_record_the_idle_input_delivers_later_is_judged_against_the_lateness() -> None:
    order = EventOrder(LATENESS_SECS)
    idle = IdleInputs(10.0)
    for stream in ("gw/0", "gw/1", "app/0"):
        order.open_stream(stream)
    order.add("gw/0", _event("gw/0", T0, 0))
    idle.delivered("gw/0", 100.0, T0)
    for stream in ("gw/1", "app/0"):
        order.add(stream, _event(stream, T0 + 600, 0))
        idle.delivered(stream, 100.0, T0 + 600)
    _apply(order, idle.on_progress(120.0, {"gw/0": (1, 1), "gw/1": (1, 1), "app/0": (1, 1)}))
    assert [event.ts for event in order.release()] == [T0]
    # inside the lateness bound: ordered; beyond it (older than what was released): late, handed back
    assert order.add("gw/0", _event("gw/0", T0 + 600 - 60, 1)) is True
    assert order.add("gw/0", _event("gw/0", T0 - 1, 2)) is False
    assert order.late_events == 1
    # its clock was not moved back: it does not hold the watermark again
    assert order.watermark >= T0 + 600 - LATENESS_SECS


def test_a_restored_copy_takes_the_same_decisions() -> None:
    """Failover: state rebuilt from the checkpointed fields decides as the original would have."""
    messages = [
        ("events", "gw/0", 100.0, T0),
        ("events", "gw/1", 101.0, T0 + 300),
        ("progress", {"gw/0": (4, 4), "gw/1": (2, 8), "gw/2": (0, 0)}, 112.0),
        ("events", "gw/1", 113.0, T0 + 500),
        ("progress", {"gw/0": (4, 4), "gw/1": (8, 8), "gw/2": (0, 0)}, 125.0),
    ]

    def run(idle: IdleInputs, todo: list[tuple]) -> list[list[IdleMove]]:
        decisions = []
        for message in todo:
            if message[0] == "events":
                idle.delivered(message[1], message[2], message[3])
            else:
                decisions.append(idle.on_progress(message[2], message[1]))
        return decisions

    original = IdleInputs(10.0)
    expected = run(original, messages)
    assert any(move.ts is None for move in expected[1]) and all(moves for moves in expected)
    for cut in range(len(messages) + 1):
        first = IdleInputs(10.0)
        before = run(first, messages[:cut])
        restored = IdleInputs(10.0, first.last_wall, first.last_ts, first.caught_up_since, first.advanced)
        assert before + run(restored, messages[cut:]) == expected


def test_an_older_record_does_not_pull_an_input_back() -> None:
    idle = IdleInputs(10.0)
    idle.delivered("gw/0", 100.0, T0 + 50)
    idle.delivered("gw/0", 101.0, T0 + 10)  # an older record later on the same input
    assert idle.last_ts["gw/0"] == T0 + 50
    assert idle.on_progress(120.0, {"gw/0": (2, 2)}) == [IdleMove("gw/0", T0 + 50 + 19)]


def test_old_records_sent_again_to_idle_inputs_do_not_freeze_event_time() -> None:
    """Every input idle for 12 minutes, event time moving at wall speed; then a backlog of old records again.
    Once quiet, the inputs went on from their newest record's time: 12 minutes of wall time with event time
    frozen where it had been advanced to (no window closed, no alert resolved)."""
    idle = IdleInputs(10.0)
    for stream in ("gw/0", "app/0"):
        idle.delivered(stream, 100.0, T0)
    caught_up = {"gw/0": (5, 5), "app/0": (5, 5)}
    assert idle.on_progress(820.0, caught_up) == [IdleMove("gw/0", T0 + 720), IdleMove("app/0", T0 + 720)]
    for stream in ("gw/0", "app/0"):
        idle.delivered(stream, 830.0, T0 - 5)  # the same old records, sent again
    assert idle.on_progress(835.0, {"gw/0": (10, 10), "app/0": (10, 10)}) == []  # busy: not quiet yet
    assert idle.on_progress(840.0, {"gw/0": (10, 10), "app/0": (10, 10)}) == [
        IdleMove("gw/0", T0 + 740), IdleMove("app/0", T0 + 740)]  # fmt: skip
