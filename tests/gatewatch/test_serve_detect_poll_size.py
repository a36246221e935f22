"""How many internal messages serve's detect stage asks for a poll: about STEP_RECORDS records' worth."""

from __future__ import annotations

from gatewatch.serve_detect import DETECT_POLL_MESSAGES, DETECT_POLL_MESSAGES_MAX, STEP_RECORDS, poll_messages


def test_small_messages_are_polled_many_at_a_time_up_to_the_cap() -> None:
    # a catching-up run: events messages of ~40 events, keyed and findings messages of a few items
    assert poll_messages(applied=40, records=40 * 30) == DETECT_POLL_MESSAGES_MAX


def test_full_events_messages_keep_a_step_near_step_records() -> None:
    # 5,000 events a message (the ingest stage's chunk): a step of 8 messages at most
    assert poll_messages(applied=8, records=8 * 5_000) == DETECT_POLL_MESSAGES
    assert poll_messages(applied=10, records=10 * 500) == STEP_RECORDS // 500


def test_messages_without_records_do_not_divide_by_zero() -> None:
    # progress messages and ticks only
    assert poll_messages(applied=12, records=0) == DETECT_POLL_MESSAGES_MAX
