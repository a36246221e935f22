"""The detect stage's rules on test doubles, in seconds: what it applies, delivers, checkpoints, commits, restores.

A fake consumer (partitions as lists, a committed offset each), a fake
producer and a fake checkpoint store stand in for Kafka; a fake task records
what it is given and outputs one keyed message per input. Real Kafka runs the
same stage in tests/integration.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

import gatewatch.serve_resume as serve_resume
from gatewatch.checkpoint import Checkpoint
from gatewatch.config import parse_config
from gatewatch.metrics import ServeMetrics
from gatewatch.serve_detect import DetectStage, _Listener
from gatewatch.serve_stage import Shared
from gatewatch.serve_topics import InternalTopics
from gatewatch.tasks.base import TaskOutput
from ingest.records import Dataset, DeadLetter, Origin

TOPICS = InternalTopics("g-requests", "g-keyed", "g-findings", 2)
DIGEST = "digest"


def _tp(role: str, partition: int) -> TopicPartition:
    return TopicPartition(TOPICS.topic(role), partition)


@dataclass
class _Message:
    offset: int
    value: bytes


class FakeTask:
    """Keeps the values it applied; each becomes a message to keyed partition 0; ``poison`` a dead letter."""

    def __init__(self, role: str, partition: int, seen: list[str] | None = None) -> None:
        self.role, self.partition = role, partition
        self.seen: list[str] = seen or []
        self._out = TaskOutput()

    next_offset = 0
    watermark = float("-inf")
    tick = None

    def apply(self, offset: int, value: bytes) -> None:
        if value == b"poison":
            origin = Origin(Dataset.INTERNAL, f"{TOPICS.topic(self.role)}/{self.partition}", offset)
            self._out.batch.dead_letters.append(DeadLetter(origin, "undecodable", "not msgpack", value))
            return
        self.seen.append(value.decode())
        self._out.records += 1
        if value.startswith(b"late"):
            self._out.late += 1  # processed behind the watermark (a KEYED task sees it again, late as well)
        if self.role == "requests":
            self._out.messages.append(("keyed", 0, value))

    def take(self) -> TaskOutput:
        out, self._out = self._out, TaskOutput()
        return out

    def snapshot(self) -> bytes:
        return orjson.dumps([self.role, self.partition, self.seen])

    @classmethod
    def restore(cls, role: str, partition: int, snapshot: bytes) -> FakeTask:
        saved_role, saved_partition, seen = orjson.loads(snapshot)  # raises on a damaged snapshot
        assert (saved_role, saved_partition) == (role, partition)
        return cls(role, partition, seen)


class FakeConsumer:
    """Partitions as lists of values; the stage's seeks, pauses and commits."""

    def __init__(self, logs: dict[TopicPartition, list[bytes]], journal: list[str]) -> None:
        self.logs = logs
        self.journal = journal  # shared with the checkpoint store: saves and commits in order
        self.positions: dict[TopicPartition, int] = {}
        self.paused: set[TopicPartition] = set()
        self.assigned: set[TopicPartition] = set()
        self.committed_offsets: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []

    def poll(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[_Message]]:
        out = {}
        for tp in sorted(self.assigned - self.paused):
            at = self.positions.get(tp, 0)
            values = self.logs.get(tp, [])[at:]
            if values:
                out[tp] = [_Message(at + i, v) for i, v in enumerate(values)]
                self.positions[tp] = at + len(values)
        return out

    def pause(self, *tps: TopicPartition) -> None:
        self.paused |= set(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused -= set(tps)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.positions[tp] = offset

    def assignment(self) -> set[TopicPartition]:
        return set(self.assigned)

    def committed(self, tp: TopicPartition) -> int | None:
        return self.committed_offsets.get(tp)

    def beginning_offsets(self, tps: list[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: 0 for tp in tps}

    def end_offsets(self, tps: list[TopicPartition], timeout_ms: int | None = None) -> dict[TopicPartition, int]:
        return {tp: len(self.logs.get(tp, [])) for tp in tps}

    def partitions_for_topic(self, topic: str) -> set[int]:
        return {0, 1}

    def commit(self, offsets: dict[TopicPartition, Any]) -> None:
        plain = {tp: meta.offset for tp, meta in offsets.items()}
        self.committed_offsets.update(plain)
        self.commits.append(plain)
        self.journal += [f"commit {tp.topic}/{tp.partition}@{offset}" for tp, offset in sorted(plain.items())]


class FakeProducer:
    def __init__(self, consumer: FakeConsumer) -> None:
        self.consumer = consumer
        self.failures = 0

    def send(self, topic: str, value: bytes, partition: int, key: bytes | None = None) -> Any:
        if self.failures:
            self.failures -= 1
            raise KafkaTimeoutError("broker away")
        self.consumer.logs.setdefault(TopicPartition(topic, partition), []).append(value)
        return _Done()

    def flush(self, timeout: float | None = None) -> None:
        pass


class _Done:
    def get(self, timeout: float | None = None) -> None:
        return None


class FakeCheckpoints:
    def __init__(self, journal: list[str]) -> None:
        self.saved: dict[tuple[str, ...], list[Checkpoint]] = {}
        self.events = journal  # "save <stream>@<offset>", in order with the consumer's commits

    def save_many(self, checkpoints: list[Checkpoint]) -> int:
        for checkpoint in checkpoints:
            self.saved.setdefault(checkpoint.assignment, []).insert(0, checkpoint)
            self.events += [f"save {s}@{o}" for s, o in checkpoint.offsets.items()]
        return sum(len(c.snapshot) for c in checkpoints)

    def load_many(self, assignments: list[tuple[str, ...]]) -> dict[tuple[str, ...], list[Checkpoint]]:
        return {a: self.saved.get(a, [])[:2] for a in assignments}

    def resumed_from(self, checkpoint: Checkpoint) -> None:
        pass


@pytest.fixture
def stage(monkeypatch: pytest.MonkeyPatch) -> DetectStage:
    monkeypatch.setattr(serve_resume, "new_task", lambda config, role, partition, partitions, streams:
                        FakeTask(role, partition))  # fmt: skip
    monkeypatch.setattr(serve_resume, "restore_task", lambda config, role, partition, partitions, snapshot:
                        FakeTask.restore(role, partition, snapshot))  # fmt: skip
    config = parse_config({"kafka": {"checkpoint_interval_secs": 3600}})
    shared = Shared(config, ServeMetrics(), threading.Event())
    detect = DetectStage(shared, DIGEST)
    journal: list[str] = []
    consumer = FakeConsumer({}, journal)
    detect.topics = TOPICS
    detect._consumer = consumer  # type: ignore[assignment]
    detect._producer = FakeProducer(consumer)  # type: ignore[assignment]
    detect._checkpoints = FakeCheckpoints(journal)  # type: ignore[assignment]
    return detect


def _rebalance(stage: DetectStage, assigned: set[TopicPartition]) -> None:
    consumer: FakeConsumer = stage._consumer  # type: ignore[assignment]
    listener = _Listener(stage)
    listener.on_partitions_revoked(set(consumer.assigned))
    consumer.assigned = set(assigned)
    listener.on_partitions_assigned(assigned)
    stage.step()  # handles it (nothing is applied in a rebalancing step)


def _task(stage: DetectStage, role: str, partition: int) -> FakeTask:
    return stage._tasks[_tp(role, partition)].task  # type: ignore[return-value]


def test_applies_delivers_then_checkpoints_each_task_before_committing_its_offset(stage: DetectStage) -> None:
    consumer: FakeConsumer = stage._consumer  # type: ignore[assignment]
    consumer.logs[_tp("requests", 0)] = [b"r0-a", b"r0-b"]
    consumer.logs[_tp("requests", 1)] = [b"r1-a"]
    _rebalance(stage, {_tp("requests", 0), _tp("requests", 1), _tp("keyed", 0)})
    assert set(stage.tasks) == {"g-requests/0", "g-requests/1", "g-keyed/0"}
    stage.step()  # the join tasks' inputs; their outputs reach keyed/0
    assert consumer.logs[_tp("keyed", 0)] == [b"r0-a", b"r0-b", b"r1-a"]
    stage.step()  # keyed/0 reads them
    assert _task(stage, "keyed", 0).seen == ["r0-a", "r0-b", "r1-a"]
    checkpoints: FakeCheckpoints = stage._checkpoints  # type: ignore[assignment]
    stage._checkpoint()
    saves, commits = checkpoints.events[:3], checkpoints.events[3:]  # every save before any commit
    assert sorted(saves) == ["save g-keyed/0@3", "save g-requests/0@2", "save g-requests/1@1"]
    assert commits == ["commit g-keyed/0@3", "commit g-requests/0@2", "commit g-requests/1@1"]
    stage._checkpoint()  # nothing changed since: nothing saved or committed again
    assert len(consumer.commits) == 1


def test_a_late_event_is_counted_once_where_it_is_joined_not_again_by_each_keyed_task(stage: DetectStage) -> None:
    """A scale-out trial: gatewatch_late_events_total rose by 76 for 20 late records; each KEYED task an event fans
    out to counted it again."""
    consumer: FakeConsumer = stage._consumer  # type: ignore[assignment]
    consumer.logs[_tp("requests", 0)] = [b"late-1", b"on-time", b"late-2"]
    _rebalance(stage, {_tp("requests", 0), _tp("keyed", 0)})
    stage.step()
    stage.step()  # keyed/0 reads the late ones too
    assert _task(stage, "keyed", 0).seen == ["late-1", "on-time", "late-2"]
    assert "gatewatch_late_events_total 2.0" in stage.shared.metrics.exposition().decode()


def test_poison_is_a_dead_letter_the_stage_stores_and_counts_and_the_task_goes_on(stage: DetectStage) -> None:
    consumer: FakeConsumer = stage._consumer  # type: ignore[assignment]
    consumer.logs[_tp("requests", 1)] = [b"poison", b"good"]
    stored: list[Any] = []
    stage.shared.write = stored.append  # type: ignore[method-assign]
    _rebalance(stage, {_tp("requests", 1)})
    stage.step()
    letters = [letter for batch in stored for letter in batch.dead_letters]
    assert [(d.origin.stream, d.origin.offset, d.reason) for d in letters] == [("g-requests/1", 0, "undecodable")]
    assert _task(stage, "requests", 1).seen == ["good"]
    text = stage.shared.metrics.exposition().decode()
    assert 'component_errors_total{error_type="undecodable",stage="detect"} 1.0' in text


def test_a_task_given_back_unchanged_keeps_its_state_and_one_moved_on_restores_its_checkpoint(
    stage: DetectStage,
) -> None:
    consumer: FakeConsumer = stage._consumer  # type: ignore[assignment]
    r0, r1 = _tp("requests", 0), _tp("requests", 1)
    consumer.logs[r0] = [b"a", b"b"]
    consumer.logs[r1] = [b"x"]
    _rebalance(stage, {r0, r1})
    stage.step()
    stage._checkpoint()
    consumer.logs[r0].append(b"c")
    consumer.logs[r1].append(b"y")
    stage.step()  # past the checkpoint, not checkpointed
    kept = _task(stage, "requests", 0)
    # Another process owned r1 meanwhile, read one more message and committed past this one's position.
    consumer.logs[r1].append(b"z")
    consumer.committed_offsets[r1] = 3
    _rebalance(stage, {r0, r1})
    assert _task(stage, "requests", 0) is kept  # nobody committed past it: the same task, state in memory
    restored = _task(stage, "requests", 1)
    assert restored.seen == ["x"]  # from its checkpoint at offset 1 ...
    assert stage._tasks[r1].next_offset == 1 and consumer.positions[r1] == 1  # ... re-reading from there
    stage.step()
    assert restored.seen == ["x", "y", "z"]


def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_and_none_starts_fresh(stage: DetectStage) -> None:
    consumer: FakeConsumer = stage._consumer  # type: ignore[assignment]
    checkpoints: FakeCheckpoints = stage._checkpoints  # type: ignore[assignment]
    r0, r1 = _tp("requests", 0), _tp("requests", 1)
    good = Checkpoint(("g-requests/0",), {"g-requests/0": 5}, orjson.dumps(["requests", 0, ["old"]]), 1.0, DIGEST)
    damaged = Checkpoint(("g-requests/0",), {"g-requests/0": 9}, b"\x80\x04 not json", 2.0, DIGEST)
    checkpoints.saved[("g-requests/0",)] = [damaged, good]
    consumer.committed_offsets[r1] = 7
    consumer.logs[r0] = [b"-"] * 5 + [b"next"]
    _rebalance(stage, {r0, r1})
    assert _task(stage, "requests", 0).seen == ["old"] and stage._tasks[r0].next_offset == 5
    assert _task(stage, "requests", 1).seen == [] and stage._tasks[r1].next_offset == 7  # fresh, committed offset
    stage.step()
    assert _task(stage, "requests", 0).seen == ["old", "next"]


def test_a_checkpoint_taken_under_other_settings_is_restored_and_logged(
    stage: DetectStage, caplog: pytest.LogCaptureFixture
) -> None:
    # An operator trial changed one threshold: the tasks started empty at the committed offsets, losing 2.5 min of
    # transactions and raising gateway_bypass for requests whose gateway line the discarded state had read.
    consumer: FakeConsumer = stage._consumer  # type: ignore[assignment]
    checkpoints: FakeCheckpoints = stage._checkpoints  # type: ignore[assignment]
    r0 = _tp("requests", 0)
    older = Checkpoint(("g-requests/0",), {"g-requests/0": 5}, orjson.dumps(["requests", 0, ["open"]]), 1.0, "before")
    checkpoints.saved[("g-requests/0",)] = [older]
    consumer.committed_offsets[r0] = 5
    consumer.logs[r0] = [b"-"] * 5 + [b"next"]
    _rebalance(stage, {r0})
    assert _task(stage, "requests", 0).seen == ["open"] and stage._tasks[r0].next_offset == 5
    assert "state_under_new_config" in caplog.text and "state_fresh" not in caplog.text


def test_a_produce_that_fails_is_retried_with_the_partitions_paused_and_nothing_is_lost(stage: DetectStage) -> None:
    consumer: FakeConsumer = stage._consumer  # type: ignore[assignment]
    producer: FakeProducer = stage._producer  # type: ignore[assignment]
    r0 = _tp("requests", 0)
    consumer.logs[r0] = [b"a", b"b"]
    _rebalance(stage, {r0})
    producer.failures = 1  # the first attempt fails: the whole batch of messages is sent again
    stage.step()
    assert consumer.logs[_tp("keyed", 0)] == [b"a", b"b"]
    assert not consumer.paused  # resumed once delivered
    text = stage.shared.metrics.exposition().decode()
    assert 'component_errors_total{error_type="KafkaTimeoutError",stage="alerts"} 1.0' in text


def test_a_task_moved_away_drops_its_series_and_the_stage_stands_by_without_tasks(stage: DetectStage) -> None:
    consumer: FakeConsumer = stage._consumer  # type: ignore[assignment]
    r0, r1 = _tp("requests", 0), _tp("requests", 1)
    consumer.logs[r0], consumer.logs[r1] = [b"a"], [b"b"]
    _rebalance(stage, {r0, r1})
    stage.step()
    stage._checkpoint()
    series = 'gatewatch_task_checkpoint_timestamp_seconds{partition="1",role="requests"}'
    assert series in stage.shared.metrics.exposition().decode()
    _rebalance(stage, {r0})
    text = stage.shared.metrics.exposition().decode()
    assert series not in text and 'partition="0",role="requests"' in text
    assert stage.owner and stage.tasks == ["g-requests/0"]
    _rebalance(stage, set())
    assert not stage.owner
    assert "gatewatch_detect_owner 0.0" in stage.shared.metrics.exposition().decode()


def test_the_alert_tasks_checkpoint_waits_until_its_forwarded_events_are_settled(
    stage: DetectStage, tmp_path: Path
) -> None:
    """kill -9 while a SIEM is slow: the lifecycle events in the forwarders' queues are in memory only. The
    ALERT task's checkpoint is held until each of them is sent or dead-lettered, so a crash re-sends them."""
    from gatewatch.forward.base import ForwarderRunner, ForwarderSet
    from tests.gatewatch.forward.test_forward_runner import Gate, settings
    from tests.gatewatch.forward.test_syslog_rsyslog import hostile_events

    events = iter(hostile_events())
    gate = Gate(wait_secs=30.0)
    stage._forwarders = ForwarderSet([ForwarderRunner(settings(tmp_path), gate)])
    consumer: FakeConsumer = stage._consumer  # type: ignore[assignment]
    checkpoints: FakeCheckpoints = stage._checkpoints  # type: ignore[assignment]
    consumer.logs[_tp("findings", 0)] = [b"f-a", b"f-b"]
    _rebalance(stage, {_tp("findings", 0), _tp("keyed", 0)})
    alert_task = _task(stage, "findings", 0)
    original_apply = alert_task.apply

    def apply(offset: int, value: bytes) -> None:  # each finding message makes one lifecycle event
        original_apply(offset, value)
        alert_task._out.batch.alert_events.append(next(events))

    alert_task.apply = apply  # type: ignore[method-assign]
    stage.step()
    consumer.logs[_tp("keyed", 0)] = [b"k-a"]
    stage.step()
    stage._checkpoint()
    assert checkpoints.events == ["save g-keyed/0@1", "commit g-keyed/0@1"]  # the other tasks as before
    consumer.logs[_tp("findings", 0)].append(b"f-c")  # more comes while the first two wait
    stage.step()
    stage._checkpoint()
    assert len(checkpoints.events) == 2
    gate.open.set()  # the receiver is back: the first two go out, then the third
    deadline = time.monotonic() + 10
    while stage._forwarders.runners[0].settled_total < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    stage.step()  # saves the checkpoint held since the first two were queued: it covers those only
    assert checkpoints.events[2:] == ["save g-findings/0@2", "commit g-findings/0@2"]
    stage._checkpoint()  # the task applied f-c since: a checkpoint of that, all settled
    assert checkpoints.events[4:] == ["save g-findings/0@3", "commit g-findings/0@3"]
    assert len(gate.sent) == 3
    stage._forwarders.close()


def test_late_records_are_said_in_the_log_at_most_once_a_minute(
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A newcomer's trial: a backfill of one side, then the other, made 34,684 records late and three false
    # bypass alerts; only a metric counted them, serve's log said nothing.
    import gatewatch.serve_stage as serve_stage

    now = [1000.0]
    monkeypatch.setattr(serve_stage.time, "monotonic", lambda: now[0])
    notice = serve_stage.LateNotice()
    with caplog.at_level("WARNING", logger="gatewatch.serve"):
        notice.add(0)
        notice.add(5)
        notice.add(3)  # within the minute: counted for the next line
        now[0] += 61
        notice.add(1)
    said = [r.getMessage() for r in caplog.records if "late_events" in r.getMessage()]
    assert [line.split(" hint=")[0] for line in said] == ["event=late_events records=5", "event=late_events records=4"]
    assert "correlate.allowed_lateness_secs" in said[0]
