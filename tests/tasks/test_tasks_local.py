"""Partitioned detection in memory: the JOIN, KEYED and ALERT tasks give replay's alerts, lifecycle and joins.

Every case runs the single pipeline (``reference``, as replay reads files)
and the tasks (``LocalRun``: P partitions, a seeded interleaving of every
partition's messages, tasks restarted from their snapshots mid-stream) over
the same records, and compares what each stored: every alert's final
document, every lifecycle event in order, every transaction.
"""

from __future__ import annotations

import os
import pickle
import random
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from detectors import registry
from detectors.sample import T0, gateway_event
from gatewatch.config import load_config, parse_config
from gatewatch.demo.files import write_demo
from gatewatch.errors import WireError
from gatewatch.tasks.base import new_task, restore_task
from gatewatch.tasks.local import LocalRun, RunResult, reference
from gatewatch.tasks.route import requests_partition
from gatewatch.topology import build_parsers, parse_records
from ingest.codec import encode
from ingest.records import Dataset, Event, Origin, RawRecord, Transaction, record_id
from ingest.sources.files import read_lines
from tests.state_v1 import task_state_as_v1

EXAMPLES_CONFIG = parse_config({
    "trust": {"gateway_identities": ["spiffe://billing.example/ns/edge/sa/ambassador"],
              "gateway_networks": ["10.0.0.0/24"],
              "internal_callers": ["spiffe://billing.example/ns/ops/sa/reconciler"]},
})  # fmt: skip


def assert_same(expected: RunResult, got: RunResult) -> None:
    documents = [{i: a.to_document() for i, a in run.alerts.items()} for run in (expected, got)]
    assert documents[1] == documents[0]
    assert [e.to_document() for e in got.alert_events] == [e.to_document() for e in expected.alert_events]
    assert set(got.transactions) == set(expected.transactions)


def split(events: Iterable[Event], inputs: int, keyed: bool) -> dict[str, list[Event]]:
    """Events spread over ``inputs`` partitions per topic: by request id (keyed) or round robin (not keyed)."""
    streams: dict[str, list[Event]] = {}
    for n, event in enumerate(events):
        if keyed:
            k = zlib.crc32((event.request_id or "").encode()) % inputs
        else:
            k = n % inputs
        stream = f"{event.dataset.value}/{k}"
        part = streams.setdefault(stream, [])
        origin = Origin(event.dataset, stream, len(part))
        part.append(msgspec.structs.replace(event, id=record_id(origin), origin=origin))
    return streams


def example_events(records: Iterable[Event | Transaction]) -> list[Event]:
    events: list[Event] = []
    for record in records:
        events += [*record.gateway, *record.app] if isinstance(record, Transaction) else [record]
    return sorted(events, key=lambda e: (e.ts, e.id))


EXAMPLES = [
    pytest.param(example, id=f"{rule_id}:{example.name}")
    for rule_id, cls in registry().items()
    for example in cls.examples()
]


@pytest.mark.parametrize("example", EXAMPLES)
def test_every_rule_example_gives_replays_output_partitioned(example: Any) -> None:
    events = example_events(example.records)
    poll = len(events) // 20 + 1  # about 40 polls of both inputs: seconds for all examples
    for partitions in (1, 3):
        streams = split(events, 2, keyed=partitions == 1)
        expected = reference(EXAMPLES_CONFIG, events=streams)
        got = LocalRun(EXAMPLES_CONFIG, partitions, seed=partitions, restarts=1, poll_records=poll).run_events(streams)
        assert_same(expected, got)


# -- the demo scenario --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, dict[str, list[RawRecord]], list[Event]]:
    files = write_demo(tmp_path_factory.mktemp("demo"), seed=11, duration_secs=600.0, requests_per_sec=8.0)
    config = load_config(files.config_yaml)
    records = {
        "gateway/0": list(read_lines(files.gateway_log, Dataset.GATEWAY, config.gateway.max_line_bytes)),
        "app/0": list(read_lines(files.app_log, Dataset.APP, config.app.max_line_bytes)),
    }
    events, _ = parse_records(build_parsers(config), [r for part in records.values() for r in part])
    return config, records, events


_references: dict[bool, RunResult] = {}


def demo_reference(config: Any, streams: dict[str, list[Event]], keyed: bool) -> RunResult:
    if keyed not in _references:
        _references[keyed] = reference(config, events=streams)
    return _references[keyed]


@pytest.mark.parametrize(("partitions", "keyed", "seed"), [(1, True, 1), (2, False, 2), (3, True, 3), (4, False, 4)])
def test_demo_gives_replays_alerts_lifecycle_and_transactions(
    demo: Any, partitions: int, keyed: bool, seed: int
) -> None:
    config, _, events = demo
    streams = split(events, 3, keyed)
    expected = demo_reference(config, streams, keyed)
    assert len(expected.alerts) >= 10 and {a.rule for a in expected.alerts.values()} >= {
        "gateway_bypass", "http_4xx_burst", "http_5xx_burst", "token_replay", "behaviour_outlier"}
    got = LocalRun(config, partitions, seed=seed, restarts=3, poll_records=256).run_events(streams)
    assert got.restarts >= 1
    assert_same(expected, got)
    # the alerts go out as event time passes, not only at the end
    assert 0 < got.alert_events_before_finish < len(got.alert_events)


def test_raw_records_through_the_ingest_path_give_replays_output(demo: Any) -> None:
    config, records, _ = demo
    expected = reference(config, inputs=records)
    got = LocalRun(config, 3, seed=9, restarts=2, poll_records=256).run_records(records)
    assert_same(expected, got)
    assert {d.reason for d in got.dead_letters} == {d.reason for d in expected.dead_letters}
    assert len(got.dead_letters) == len(expected.dead_letters) > 0


# -- progress, idleness, far future ---------------------------------------------------------------

QUICK_CONFIG = parse_config({"correlate": {"allowed_lateness_secs": 2, "join_window_secs": 5}})


def stuffing(clients: int = 1, seconds: int = 200, partitions: int = 4, avoid: int | None = None) -> list[Event]:
    """Credential stuffing from ``clients`` addresses, one 401 a second each (request ids avoiding a partition)."""
    events = []
    for t in range(seconds):
        for c in range(clients):
            n = 0
            while True:
                event = gateway_event(t + c / 10, request_id=f"rs-{t}-{c}-{n}", status=401, path="/v1/login",
                                      source_ip=f"203.0.113.{c + 1}")  # fmt: skip
                if avoid is None or requests_partition(event, partitions) != avoid:
                    break
                n += 1
            events.append(event)
    return events


def test_an_empty_requests_partition_never_stalls_the_alerts() -> None:
    streams = split(stuffing(avoid=3), 2, keyed=False)
    assert all(requests_partition(e, 4) != 3 for part in streams.values() for e in part)
    run = LocalRun(QUICK_CONFIG, 4, seed=1)
    got = run.run_events(streams, finish=False)
    # partition 3 never got an event, yet its tick moved with the progress messages
    assert run.tasks[("requests", 3)].tick is not None
    assert [e.state for e in got.alert_events][:1] == ["open"]  # before the end of input
    assert_same(reference(QUICK_CONFIG, events=streams), run.finish())


def test_a_record_dated_9999_moves_no_partitions_watermark() -> None:
    events = stuffing(seconds=120)
    far = gateway_event(0, request_id="far", status=401, source_ip="203.0.113.1")
    far = msgspec.structs.replace(far, ts=253_402_300_000.0)  # 9999-12-31
    events.insert(60, far)
    streams = split(events, 2, keyed=False)
    run = LocalRun(QUICK_CONFIG, 3, seed=2)
    run.run_events(streams, finish=False)
    for partition in range(3):
        assert run.tasks[("requests", partition)].watermark < T0 + 120
    assert_same(reference(QUICK_CONFIG, events=streams), run.finish())


class _Marker:
    """Makes a directory when unpickled: what an attacker would write instead of a message."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def test_poison_in_each_internal_topic_is_a_dead_letter_and_the_tasks_go_on(tmp_path: Path) -> None:
    streams = split(stuffing(clients=2, seconds=150), 2, keyed=False)
    bad = [
        pickle.dumps(_Marker(tmp_path / "ran")),
        b"\xff" * 40,
        encode("keyed", 99, []),
        encode("findings", 1, ("gatewatch-findings/0", 1, None, [], [], False)),  # not a task of this group
        encode("progress", 2, (0.0, {"elsewhere/0": (0, 0, None, None)})),  # not an input stream
    ]
    poison = [(role, partition, value) for value in bad
              for role, partition in (("requests", 1), ("keyed", 0), ("findings", 0))]  # fmt: skip
    got = LocalRun(QUICK_CONFIG, 2, seed=3, restarts=1).run_events(streams, poison=poison)
    assert not (tmp_path / "ran").exists()
    letters = [d for d in got.dead_letters if d.origin.dataset is Dataset.INTERNAL]
    assert {d.origin.stream.rpartition("/")[0] for d in letters} == {"gatewatch-requests", "gatewatch-keyed",
                                                                      "gatewatch-findings"}  # fmt: skip
    assert {d.reason for d in letters} >= {"undecodable", "unknown_version", "unknown_kind", "unknown_source",
                                            "unknown_stream"}  # fmt: skip
    assert len({d.id for d in letters}) == len(poison)  # once each, by topic/partition@offset, restarts or not
    assert_same(reference(QUICK_CONFIG, events=streams), got)


@pytest.mark.parametrize("role", ["requests", "keyed", "findings"])
def test_a_checkpoint_that_does_not_decode_raises_wire_error(role: Any, tmp_path: Path) -> None:
    for garbage in (b"", b"\x93\x01", pickle.dumps(_Marker(tmp_path / "ran")), encode(f"{role}_state", 7, [])):
        with pytest.raises(WireError):
            restore_task(QUICK_CONFIG, role, 0, 2, garbage)
    other = "keyed" if role != "keyed" else "requests"
    with pytest.raises(WireError):
        restore_task(QUICK_CONFIG, role, 0, 2, new_task(QUICK_CONFIG, other, 0, 2, ["gateway/0"]).snapshot())
    assert not (tmp_path / "ran").exists()


def test_a_batch_produced_twice_is_counted_once() -> None:
    """HTTP ingest after a lost 2xx: the same records (ids ``http:<source>:<batch>:<n>``) at new offsets."""
    events = stuffing(clients=2, seconds=150)
    once = split(events, 1, keyed=False)
    (stream, part), = once.items()
    batch = part[100:160]
    again = [msgspec.structs.replace(e, origin=Origin(e.dataset, stream, len(part) + n)) for n, e in enumerate(batch)]
    twice = {stream: part[:170] + again + part[170:]}
    twice[stream] = [msgspec.structs.replace(e, origin=Origin(e.dataset, stream, n)) for n, e in enumerate(twice[stream])]
    # within the open window (allowed lateness + join window, the defaults): a retry comes seconds later
    expected = reference(EXAMPLES_CONFIG, events=once)
    for partitions in (1, 3):
        got = LocalRun(EXAMPLES_CONFIG, partitions, seed=partitions, restarts=1, poll_records=16).run_events(twice)
        assert got.redelivered >= len(batch)
        assert_same(expected, got)


@pytest.mark.parametrize("written_by", ["this release", "the previous release"])
def test_a_restored_task_makes_exactly_the_messages_the_original_made(written_by: str) -> None:
    """A checkpoint the previous release wrote (state v1: events in EventTables) restores just as well."""
    as_written = task_state_as_v1 if written_by == "the previous release" else bytes
    streams = split(stuffing(clients=3, seconds=150), 2, keyed=False)
    run = LocalRun(QUICK_CONFIG, 2, seed=4)
    run.run_events(streams)
    for (role, partition), log in run.logs.items():
        original = new_task(QUICK_CONFIG, role, partition, 2, list(streams))
        half = len(log) // 2
        for offset in range(half):
            original.apply(offset, log[offset])
        original.take()
        snapshot = as_written(original.snapshot())
        assert (snapshot == original.snapshot()) == (as_written is bytes or role == "findings")
        restored = restore_task(QUICK_CONFIG, role, partition, 2, snapshot)
        assert restored.next_offset == original.next_offset == half
        outputs = []
        for task in (original, restored):
            for offset in range(half, len(log)):
                task.apply(offset, log[offset])
            out = task.take()
            outputs.append((out.messages, sorted(e.id for e in out.batch.alert_events),
                            sorted(t.id for t in out.batch.transactions)))  # fmt: skip
        assert outputs[0] == outputs[1]
        assert outputs[0][0] or role == "findings"


@pytest.mark.parametrize("rule_id", ["gateway_bypass", "token_expired_accepted", "token_cross_org"])
def test_a_join_task_restored_after_any_message_makes_the_messages_the_original_made(rule_id: str) -> None:
    """What an events message makes at once (arrival findings) is sent with it, not held for the
    progress behind it: a checkpoint taken between the two would have lost it."""
    example = next(e for e in registry()[rule_id].examples() if e.alerts)
    streams = split(example_events(example.records), 2, keyed=False)
    run = LocalRun(EXAMPLES_CONFIG, 2, seed=1)
    run.run_events(streams)
    for partition in range(2):
        log = run.logs[("requests", partition)]
        for cut in range(1, len(log)):
            original = new_task(EXAMPLES_CONFIG, "requests", partition, 2, list(streams))
            for offset in range(cut):
                original.apply(offset, log[offset])
            original.take()
            restored = restore_task(EXAMPLES_CONFIG, "requests", partition, 2, original.snapshot())
            outputs = []
            for task in (original, restored):
                for offset in range(cut, len(log)):
                    task.apply(offset, log[offset])
                outputs.append(task.take().messages)
            assert outputs[0] == outputs[1], f"partition {partition}, restored after message {cut}"


def test_far_future_records_past_the_cap_do_not_grow_the_joins_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    import gatewatch.tasks.join
    import ingest.order

    held = 100
    monkeypatch.setattr(ingest.order, "MAX_HELD_EVENTS", held)
    monkeypatch.setattr(gatewatch.tasks.join, "MAX_HELD_EVENTS", held)
    join = gatewatch.tasks.join.JoinTask(QUICK_CONFIG, 0, 1, ["gw/0"])
    normal = [gateway_event(t, request_id=f"n-{t}") for t in range(5)]
    far = [msgspec.structs.replace(gateway_event(0), ts=T0 + 10 * 86_400 * (n + 1)) for n in range(30_000)]
    for n, event in enumerate([*normal, *far]):
        origin = Origin(event.dataset, "gw/0", n)
        join._pipeline.order_events([msgspec.structs.replace(event, origin=origin, id=record_id(origin))])
    assert join._pipeline.order.future_events == 30_000  # 100 held, the rest dropped from detection
    assert len(join._pipeline.open_ids) <= held + 10_000 + 100


def test_a_quiet_caught_up_input_stops_holding_every_partitions_watermark() -> None:
    early = [gateway_event(t, request_id=f"q-{t}", status=200, source_ip="192.0.2.9") for t in range(20)]
    streams = {"quiet/0": split(early, 1, keyed=False)["envoy.access/0"],
               "busy/0": split(stuffing(seconds=200), 1, keyed=False)["envoy.access/0"]}  # fmt: skip
    for name, part in streams.items():
        streams[name] = [msgspec.structs.replace(e, id=record_id(o), origin=o)
                         for e in part for o in [Origin(e.dataset, name, e.origin.offset)]]  # fmt: skip
    held = LocalRun(QUICK_CONFIG, 2, seed=6, poll_records=4, wall_step_secs=0.001)
    assert held.run_events(streams, finish=False).alert_events == []  # "quiet" holds event time at 20 s
    run = LocalRun(QUICK_CONFIG, 2, seed=6, poll_records=4, wall_step_secs=1.0)  # 10 s of wall time: idle
    assert [e.state for e in run.run_events(streams, finish=False).alert_events][:1] == ["open"]
    assert_same(reference(QUICK_CONFIG, events=streams), run.finish())


def test_a_keyed_message_carrying_a_record_twice_does_not_break_the_task() -> None:
    from gatewatch.tasks.keyed import KeyedTask
    from gatewatch.wire import KeyedMessage, KeyedTxn, encode_keyed
    from ingest.codec import pack_events

    event = gateway_event(1, request_id="dup", status=401, source_ip="192.0.2.1")
    forged = msgspec.structs.replace(event, status=403)  # the same id and time, other contents
    task = KeyedTask(QUICK_CONFIG, 0, 1)
    twice = KeyedMessage("gatewatch-requests/0", 1, None, pack_events([event, forged]), [1 << 2, 1 << 2],
                         [KeyedTxn("dup", T0 + 9, 1, 1, 0)] * 2, pack_events([event, forged]))  # fmt: skip
    task.apply(0, encode_keyed(twice))
    task.apply(1, encode_keyed(KeyedMessage("gatewatch-requests/0", 2, T0 + 30, pack_events([]), [], [],
                                            pack_events([]))))  # fmt: skip
    out = task.take()
    assert out.applied == 2 and out.rejected == 0 and task.tick == T0 + 30


def test_flipped_bytes_in_any_internal_message_never_raise_out_of_a_task() -> None:
    streams = split(stuffing(clients=2, seconds=60), 2, keyed=False)
    run = LocalRun(QUICK_CONFIG, 2, seed=4)
    run.run_events(streams)
    rng = random.Random(1)
    for (role, partition), log in run.logs.items():
        for _ in range(30):
            messages = list(log)
            at = rng.randrange(len(messages))
            flipped = bytearray(messages[at])
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] = rng.randrange(256)
            messages[at] = bytes(flipped)
            task = new_task(QUICK_CONFIG, role, partition, 2, list(streams))
            for offset, value in enumerate(messages):
                task.apply(offset, value)
            restored = restore_task(QUICK_CONFIG, role, partition, 2, task.snapshot())
            restored.finish()
            restored.take()


def test_an_alert_task_started_empty_part_way_gives_its_lifecycle_events_ids_of_their_own() -> None:
    """serve's ``state_fresh`` (a detection setting changed): the ALERT task starts empty at the committed offset.

    Its alerts may go on (same rule, entity and window: the same alert id), counted from sequence 1 again.
    With the ids of before, a SIEM that drops ids it has seen would drop them: the resolution too.
    """
    streams = split(stuffing(clients=2, seconds=400), 2, keyed=False)
    run = LocalRun(QUICK_CONFIG, 2, seed=4)
    run.run_events(streams)
    log = run.logs[("findings", 0)]

    def events_from(start: int, snapshot_at: int | None = None) -> list[Any]:
        task = new_task(QUICK_CONFIG, "findings", 0, 2, list(streams))
        events = []
        for offset in range(start, len(log)):
            if offset == snapshot_at:
                events += task.take().batch.alert_events
                task = restore_task(QUICK_CONFIG, "findings", 0, 2, task.snapshot())
            task.apply(offset, log[offset])
        return events + task.take().batch.alert_events

    from_start = events_from(0)
    assert [e.id for e in from_start] == [e.id for e in run.result.alert_events]  # replay's ids, unchanged
    start = len(log) // 3
    fresh = events_from(start)
    continued = {e.alert.id for e in fresh} & {e.alert.id for e in from_start}
    assert continued, "no alert went on past the fresh start: the case is not tested"
    assert all(e.id == f"{e.alert.id}.{start}-{e.sequence}" for e in fresh)
    assert not {e.id for e in fresh} & {e.id for e in from_start}
    # a checkpoint of the fresh task keeps its epoch
    assert [e.id for e in events_from(start, snapshot_at=start + (len(log) - start) // 2)] == [e.id for e in fresh]


def test_an_alert_task_started_empty_at_the_start_after_events_were_sent_gives_ids_of_their_own() -> None:
    """An upgrade trial: from a release with the single detect topic, the new findings topic starts at 0, so the
    fresh ALERT task sent ``<alert id>-1``, ``-2``... again with other contents, which a SIEM dropping seen ids
    drops. serve tells it that the alerts topic holds events already (``sent_before``)."""
    streams = split(stuffing(clients=2, seconds=400), 2, keyed=False)
    run = LocalRun(QUICK_CONFIG, 2, seed=4)
    run.run_events(streams)
    log = run.logs[("findings", 0)]
    task = new_task(QUICK_CONFIG, "findings", 0, 2, list(streams))
    task.sent_before = True  # type: ignore[attr-defined]
    for offset, value in enumerate(log):
        task.apply(offset, value)
    events = task.take().batch.alert_events
    assert events and all(e.id == f"{e.alert.id}.0-{e.sequence}" for e in events)
    assert not {e.id for e in events} & {e.id for e in run.result.alert_events}


def test_every_task_takes_a_checkpoint_written_under_other_settings() -> None:
    """serve restores checkpoints across a config change (``state_under_new_config``): each role's task built from
    the new settings takes the old state and goes on, and the join loses no request open at the restart."""
    streams = split(stuffing(clients=2, seconds=400), 2, keyed=False)
    run = LocalRun(QUICK_CONFIG, 2, seed=4)
    run.run_events(streams)
    changed = parse_config({
        "correlate": {"allowed_lateness_secs": 3, "join_window_secs": 5},
        "trust": {"gateway_networks": ["10.0.0.0/24"], "allowlist_paths": ["/healthz", "/status"]},
        "alerts": {"suppression_window_secs": 1200},
        "detectors": {"http_4xx_burst": {"min_errors": 10, "window_secs": 30}, "behaviour_outlier": {"min_clients": 5}},
    })  # fmt: skip
    joined: set[str] = set()
    for (role, partition), log in run.logs.items():
        task = new_task(QUICK_CONFIG, role, partition, 2, list(streams))
        half = len(log) // 2
        for offset in range(half):
            task.apply(offset, log[offset])
        before = task.take()
        restored = restore_task(changed, role, partition, 2, task.snapshot())
        for offset in range(half, len(log)):
            restored.apply(offset, log[offset])
        restored.finish()
        after = restored.take()
        assert after.rejected == 0
        joined |= {txn.request_id for out in (before, after) for txn in out.batch.transactions}
    assert joined and joined == {txn.request_id for txn in run.result.transactions.values()}
