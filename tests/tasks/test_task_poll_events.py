"""``poll_events``: a poll's events for one requests partition in one message, all inputs; ``events`` still read."""

from __future__ import annotations

import hashlib

import pytest

from gatewatch.config import parse_config
from gatewatch.serve_ingest import _events_messages
from gatewatch.tasks.join import JoinTask
from gatewatch.wire import (
    PollEventsMessage, decode_findings_message, decode_keyed_message, decode_requests_message, encode_events,
    encode_ingest_progress, encode_poll_events,
)  # fmt: skip
from ingest.codec import encode, encode_rows, events_from_rows
from ingest.records import Dataset, Event, Origin, record_id

GATEWAY, APP = "gw-gateway/0", "gw-app/1"
T0 = 1_767_225_600.0
# Pinned when poll_events was introduced: a running deployment's requests topic must keep reading back.
GOLDEN = "2c75b50fb0414e9aa3f5451c02e99e05c416a541577fa9b171d346e8024808d6"


def _event(stream: str, offset: int, ts: float, request_id: str, **fields: object) -> Event:
    dataset = Dataset.GATEWAY if stream == GATEWAY else Dataset.APP
    origin = Origin(dataset, stream, offset)
    return Event(record_id(origin), dataset, ts, origin, request_id=request_id, **fields)  # type: ignore[arg-type]


def _poll() -> dict[str, list[Event]]:
    """Both sides of 40 requests from one client, most answered 401 at the gateway, expired tokens the app took."""
    gateway = [_event(GATEWAY, i, T0 + i * 0.5, f"r-{i}", method="GET", path="/v1/items", status=401 if i % 3 else 200,
                      source_ip="198.51.100.7", token_jti=f"j-{i % 4}", token_exp=T0 - 3600.0) for i in range(40)]
    app = [_event(APP, i, T0 + i * 0.5 + 0.1, f"r-{i}", user_id="u-1", action="list", outcome="success", status=200,
                  token_jti=f"j-{i % 4}", token_sub="u-1", token_exp=T0 - 3600.0) for i in range(40)]  # fmt: skip
    return {GATEWAY: gateway, APP: app}


def test_a_poll_events_message_round_trips_every_stream_in_order() -> None:
    poll = _poll()
    message = decode_requests_message(encode_poll_events(T0, [(s, encode_rows(e)) for s, e in poll.items()]))
    assert isinstance(message, PollEventsMessage) and message.wall_secs == T0
    assert {part.stream: events_from_rows(part.stream, part.events) for part in message.parts} == poll


def test_the_bytes_of_a_poll_events_message_stay_the_same() -> None:
    poll = _poll()
    message = encode_poll_events(T0, [(s, encode_rows(e[:2])) for s, e in poll.items()])
    assert hashlib.sha256(message).hexdigest() == GOLDEN


def test_the_ingest_stage_packs_each_requests_partition_s_chunks_in_one_message() -> None:
    rows = {stream: encode_rows(events) for stream, events in _poll().items()}
    chunks = [(GATEWAY, 0, rows[GATEWAY]), (GATEWAY, 2, rows[GATEWAY]), (APP, 0, rows[APP]), (APP, 1, rows[APP])]
    assert _events_messages(chunks) == [(0, [(GATEWAY, rows[GATEWAY]), (APP, rows[APP])]), (2, [(GATEWAY, rows[GATEWAY])]),
                                      (1, [(APP, rows[APP])])]  # fmt: skip


def _outputs(messages: list[bytes]) -> tuple[list[object], list[object], list[str]]:
    """Findings, keyed items and stored transaction ids a JOIN task makes of ``messages`` (chunking aside)."""
    config = parse_config({"kafka": {"group_id": "gw"}, "trust": {"gateway_networks": ["10.0.0.0/24"]}})
    task = JoinTask(config, 0, 2, [GATEWAY, APP])
    for offset, value in enumerate(messages):
        task.apply(offset, value)
    task.finish()
    out = task.take()
    assert not out.batch.dead_letters
    findings: list[object] = []
    keyed: list[object] = []
    for role, partition, value in out.messages:
        if role == "findings":
            findings += [(r.rule, r.entity_value, r.ts, r.request_ids) for r in decode_findings_message(value).findings]
        else:
            message = decode_keyed_message(value)
            keyed += [(partition, row.id, mask) for row, mask in zip(message.events, message.event_masks)]
            keyed += [(partition, t.request_id, t.mask) for t in message.transactions]
    return sorted(findings, key=repr), sorted(keyed, key=repr), sorted(t.id for t in out.batch.transactions)


def test_a_join_task_makes_the_same_of_one_poll_events_message_as_of_one_events_message_per_stream() -> None:
    poll = _poll()
    progress = encode_ingest_progress(T0 + 1.0, {GATEWAY: (40, 40, T0 + 19.5, T0), APP: (40, 40, T0 + 19.6, T0)})
    one = [encode_poll_events(T0, [(s, encode_rows(e)) for s, e in poll.items()]), progress]
    per_stream = [*(encode_events(T0, s, encode_rows(e)) for s, e in poll.items()), progress]
    got = _outputs(one)
    assert got == _outputs(per_stream)
    assert got[0] and got[1] and len(got[2]) == 40  # findings, keyed items and every request: not a vacuous match


@pytest.mark.parametrize(("body", "reason"), [
    ((T0, [(GATEWAY, []), ("not-an-input/0", [])]), "unknown_stream"),
    ((T0, [(GATEWAY, [["id", "gateway", float("nan"), 0]])]), "undecodable"),
    ((T0, [[GATEWAY]]), "undecodable"),
])  # fmt: skip
def test_a_poisoned_poll_events_message_is_a_dead_letter_and_nothing_of_it_is_applied(
    body: tuple[object, ...], reason: str
) -> None:
    config = parse_config({"kafka": {"group_id": "gw"}})
    task = JoinTask(config, 0, 1, [GATEWAY, APP])
    task.apply(0, encode("poll_events", 1, body))
    out = task.take()
    assert [(d.reason, d.origin.stream, d.origin.offset) for d in out.batch.dead_letters] == [(reason, "gw-requests/0", 0)]
    assert out.records == 0
