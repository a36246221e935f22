"""``poll_events``: a poll's events for one requests partition in one message, all inputs.

Its v1 and the ``events`` messages before it are still read."""

from __future__ import annotations

import hashlib

import pytest

from gatewatch.config import parse_config
from gatewatch.serve_ingest import _events_messages
from gatewatch.tasks.join import JoinTask
from gatewatch.wire import (
    PollEventsMessage, PollRowsMessage, decode_findings_message, decode_keyed_message, decode_requests_message,
    encode_events, encode_ingest_progress, encode_poll_events, encode_poll_rows,
)  # fmt: skip
from ingest.codec import encode, encode_event_list, encode_rows, events_from_rows
from ingest.records import Dataset, Event, Origin, record_id

GATEWAY, APP = "gw-gateway/0", "gw-app/1"
T0 = 1_767_225_600.0
# Pinned when each version was introduced: what a running deployment wrote must keep reading back.
GOLDEN_V1 = "2c75b50fb0414e9aa3f5451c02e99e05c416a541577fa9b171d346e8024808d6"
GOLDEN_V2 = "3d9f7012806706dd9330b9e3cfa40490f09e33bae23dee41c4f047a92bfd7b6d"


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
    message = decode_requests_message(encode_poll_events(T0, [(s, encode_event_list(e)) for s, e in poll.items()]))
    assert isinstance(message, PollEventsMessage) and message.wall_secs == T0
    assert {part.stream: part.events for part in message.parts} == poll


def test_a_poll_events_v1_message_is_still_read() -> None:
    poll = _poll()
    message = decode_requests_message(encode_poll_rows(T0, [(s, encode_rows(e)) for s, e in poll.items()]))
    assert isinstance(message, PollRowsMessage) and message.wall_secs == T0
    assert {part.stream: events_from_rows(part.stream, part.events) for part in message.parts} == poll


def test_the_bytes_of_poll_events_messages_stay_the_same() -> None:
    poll = _poll()
    v1 = encode_poll_rows(T0, [(s, encode_rows(e[:2])) for s, e in poll.items()])
    v2 = encode_poll_events(T0, [(s, encode_event_list(e[:2])) for s, e in poll.items()])
    assert (hashlib.sha256(v1).hexdigest(), hashlib.sha256(v2).hexdigest()) == (GOLDEN_V1, GOLDEN_V2)


def test_the_ingest_stage_packs_each_requests_partition_s_chunks_in_one_message() -> None:
    rows = {stream: encode_event_list(events) for stream, events in _poll().items()}
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


def test_a_join_task_makes_the_same_of_one_poll_events_message_as_of_older_messages() -> None:
    poll = _poll()
    progress = encode_ingest_progress(T0 + 1.0, {GATEWAY: (40, 40, T0 + 19.5, T0), APP: (40, 40, T0 + 19.6, T0)})
    one = [encode_poll_events(T0, [(s, encode_event_list(e)) for s, e in poll.items()]), progress]
    one_v1 = [encode_poll_rows(T0, [(s, encode_rows(e)) for s, e in poll.items()]), progress]
    per_stream = [*(encode_events(T0, s, encode_rows(e)) for s, e in poll.items()), progress]
    got = _outputs(one)
    assert got == _outputs(one_v1) == _outputs(per_stream)
    assert got[0] and got[1] and len(got[2]) == 40  # findings, keyed items and every request: not a vacuous match


def _event_array(stream: str = GATEWAY, dataset: str = "envoy.access", ts: float = T0, offset: int = 0) -> list[object]:
    return ["id", "envoy.access", ts, [dataset, stream, offset]]


@pytest.mark.parametrize(("version", "body", "reason"), [
    (1, (T0, [(GATEWAY, []), ("not-an-input/0", [])]), "unknown_stream"),
    (1, (T0, [(GATEWAY, [["id", "gateway", float("nan"), 0]])]), "undecodable"),
    (1, (T0, [[GATEWAY]]), "undecodable"),
    (2, (T0, [(GATEWAY, []), ("not-an-input/0", [])]), "unknown_stream"),
    (2, (T0, [(GATEWAY, [_event_array(ts=float("nan"))])]), "undecodable"),
    (2, (T0, [(GATEWAY, [_event_array(offset=-1)])]), "undecodable"),
    (2, (T0, [(GATEWAY, [_event_array(stream=APP)])]), "undecodable"),  # an origin that is not its part's stream
    (2, (T0, [(GATEWAY, [_event_array(dataset="billing.app")])]), "undecodable"),  # nor its event's dataset
    (2, (T0, [(GATEWAY, [_event_array(), ["id", "envoy.access", T0, 0]])]), "undecodable"),  # a v1 row
    (3, (T0, [(GATEWAY, [])]), "unknown_version"),
])  # fmt: skip
def test_a_poisoned_poll_events_message_is_a_dead_letter_and_nothing_of_it_is_applied(
    version: int, body: tuple[object, ...], reason: str
) -> None:
    config = parse_config({"kafka": {"group_id": "gw"}})
    task = JoinTask(config, 0, 1, [GATEWAY, APP])
    task.apply(0, encode("poll_events", version, body))
    out = task.take()
    assert [(d.reason, d.origin.stream, d.origin.offset) for d in out.batch.dead_letters] == [(reason, "gw-requests/0", 0)]
    assert out.records == 0


def test_a_valid_event_array_is_applied() -> None:
    """The poisoned cases above differ from this one by the one value each names."""
    config = parse_config({"kafka": {"group_id": "gw"}})
    task = JoinTask(config, 0, 1, [GATEWAY, APP])
    task.apply(0, encode("poll_events", 2, (T0, [(GATEWAY, [_event_array()])])))
    out = task.take()
    assert not out.batch.dead_letters and out.records == 1


def test_a_join_task_compiles_no_parsers() -> None:
    """Its events come parsed: compiling the config's readers cost each task ~8 ms at every rebalance."""
    config = parse_config({"kafka": {"group_id": "gw"}})
    task = JoinTask(config, 0, 1, [GATEWAY, APP])
    task.apply(0, encode("poll_events", 2, (T0, [(GATEWAY, [_event_array()])])))
    task.take()
    assert "_parsers" not in vars(task._pipeline)
