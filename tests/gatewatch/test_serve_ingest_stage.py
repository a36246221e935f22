"""The ingest stage's rules on test doubles, in seconds: progress, stale ends, commit after store, outage, rebalance.

The real :class:`~ingest.sources.kafka.KafkaSource` reads a
:class:`~ingest.testing.MemoryKafkaConsumer`; a
:class:`~gatewatch.testing.MemoryProducer` takes the requests topic; the
real store writer thread writes to a :class:`~ingest.testing.MemorySink` that
a test can hold or fail. Real Kafka runs the same stage in tests/integration.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import orjson
import pytest
from kafka import TopicPartition

from gatewatch.config import parse_config
from gatewatch.errors import StoreUnavailableError
from gatewatch.metrics import ServeMetrics
from gatewatch.serve_ingest import IngestStage
from gatewatch.serve_stage import Shared
from gatewatch.serve_topics import InternalTopics
from gatewatch.store_writer import StoreWriter
from gatewatch.testing import MemoryProducer
from gatewatch.wire import IngestProgress, StreamProgress, decode_requests_message
from ingest.sinks.base import Batch
from ingest.sources.kafka import KafkaSource
from ingest.testing import MemoryKafkaConsumer, MemorySink

GW, APP = TopicPartition("gatewatch-gateway", 0), TopicPartition("gatewatch-app", 0)
GW_STREAM, APP_STREAM = "gatewatch-gateway/0", "gatewatch-app/0"
TOPICS = InternalTopics("gatewatch-requests", "gatewatch-keyed", "gatewatch-findings", 3)
T0 = 1_772_442_000.0  # 2026-03-02T09:00:00Z


def _line(second: int, rid: str, day: str = "2026-03-02") -> bytes:
    return (f'[{day}T09:00:{second:02d}.000Z] "GET /v1/invoices HTTP/1.1" 200 - 0 120 5 4 "203.0.113.7" '
            f'"curl/8.5.0" "{rid}" "billing" "10.1.0.20:8080"').encode()  # fmt: skip


class HeldSink(MemorySink):
    """A store whose writes wait while ``held`` (a bulk request in flight); ``attempts`` lists every batch tried."""

    def __init__(self) -> None:
        super().__init__()
        self.released = threading.Event()
        self.attempts: list[Batch] = []

    def hold(self) -> None:
        self.released.clear()

    def release(self) -> None:
        self.released.set()

    def write(self, batch: Batch) -> None:
        self.released.wait(30)
        self.attempts.append(batch)
        super().write(batch)


class Harness:
    def __init__(self) -> None:
        config = parse_config({})
        self.shared = Shared(config, ServeMetrics(), threading.Event())
        self.sink = HeldSink()
        self.sink.release()
        self.shared.writer = StoreWriter(self.sink, config.store.bulk_max_docs, self.shared.metrics)
        self.consumer = MemoryKafkaConsumer({GW: [], APP: []})
        self.producer = MemoryProducer()
        self.stage = IngestStage(self.shared)
        self.stage._source = KafkaSource(config.kafka, consumer=self.consumer)  # type: ignore[arg-type]
        self.stage._producer = self.producer  # type: ignore[assignment]
        self.stage.topics = TOPICS

    def assign(self, *tps: TopicPartition) -> None:
        self.consumer.rebalance(tps)
        self.stage.step()  # the poll during which the group rebalanced: its records are not used
        assert self.stage._pending_assignment is None and not self.producer.sent

    def progress(self) -> list[tuple[int | None, IngestProgress]]:
        """The progress messages sent since the last call, with their partition."""
        sent, self.producer.sent = self.producer.sent, []
        found = [(partition, decode_requests_message(value)) for _, partition, value in sent]
        return [(partition, message) for partition, message in found if isinstance(message, IngestProgress)]

    def wait_for_writes(self) -> None:
        for item in list(self.stage._in_flight):
            if item.pending is not None:
                item.pending._done.wait(30)


@pytest.fixture
def harness() -> Iterator[Harness]:
    h = Harness()
    yield h
    h.sink.release()
    assert h.shared.writer is not None
    h.shared.writer.close()


def test_progress_goes_to_every_requests_partition_with_the_credible_clock(harness: Harness) -> None:
    harness.consumer.logs[GW] += [_line(s, f"r{s}") for s in range(5)]
    harness.consumer.logs[GW].append(_line(1, "from-the-future", day="2027-03-02"))  # a year ahead, alone
    harness.assign(GW, APP)
    harness.stage.step()
    sent = harness.progress()
    assert sorted(partition for partition, _ in sent) == [0, 1, 2]  # every requests partition, once
    (_, first), *others = sent
    assert all(message == first for _, message in others)
    assert first.streams[GW_STREAM].position == first.streams[GW_STREAM].end_offset == 6
    assert first.streams[GW_STREAM].clock == T0 + 4  # the future line read, but not vouched for by any other
    # Nothing fetched from the empty app partition yet: not known caught up until Kafka lists its end.
    assert first.streams[APP_STREAM] == StreamProgress(0, 1, None, None)
    harness.stage._update_lag()
    harness.stage._send_progress_only()
    assert all(message.streams[APP_STREAM] == StreamProgress(0, 0, None, None) for _, message in harness.progress())


def test_a_paused_partition_is_never_reported_caught_up_until_fetched_again(harness: Harness) -> None:
    harness.consumer.logs[GW] += [_line(s, f"r{s}") for s in range(3)]
    harness.assign(GW, APP)
    harness.stage.step()
    (_, caught_up), *_ = harness.progress()
    assert caught_up.streams[GW_STREAM].position == caught_up.streams[GW_STREAM].end_offset == 3
    harness.stage._set_backpressure(True)  # paused: no fetch, so the end it knows (3) goes stale
    harness.consumer.logs[GW] += [_line(s, f"late{s}") for s in range(3, 6)]
    harness.stage._send_progress_only()
    (_, paused), *_ = harness.progress()
    assert paused.streams[GW_STREAM].position == 3 and paused.streams[GW_STREAM].end_offset > 3
    harness.stage._set_backpressure(False)
    harness.stage.step()  # fetched: read up to the end it now knows
    (_, resumed), *_ = harness.progress()
    assert resumed.streams[GW_STREAM].position == resumed.streams[GW_STREAM].end_offset == 6


def test_offsets_are_committed_only_once_the_store_acknowledged(harness: Harness) -> None:
    harness.consumer.logs[GW] += [_line(s, f"r{s}") for s in range(4)]
    harness.assign(GW, APP)
    harness.sink.hold()
    harness.stage.step()
    harness.stage.step()  # still being written: its poll stays uncommitted
    assert not any(entry.startswith("commit ") for entry in harness.consumer.journal)
    assert harness.producer.sent  # the events went on to the join tasks meanwhile
    harness.sink.release()
    harness.wait_for_writes()
    harness.stage.step()
    assert [e for e in harness.consumer.journal if e.startswith("commit ")] == ["commit gatewatch-gateway/0@4"]
    assert len(harness.sink.events) == 4


def test_a_store_outage_pauses_every_partition_and_retries_the_same_batch(harness: Harness) -> None:
    harness.consumer.logs[GW] += [_line(s, f"r{s}") for s in range(4)]
    harness.consumer.logs[APP] += [b"{not json"]
    harness.assign(GW, APP)
    harness.sink.fail_next(StoreUnavailableError("store down", 0.0), StoreUnavailableError("store down", 0.0))
    paused_sets: list[set[TopicPartition]] = []
    set_backpressure = harness.stage._set_backpressure

    def watched(paused: bool) -> None:
        set_backpressure(paused)
        paused_sets.append(set(harness.consumer.paused))

    harness.stage._set_backpressure = watched  # type: ignore[method-assign]
    harness.stage.step()
    harness.stage.shutdown()  # waits for the write in flight: retried until the store is back
    assert paused_sets == [{GW, APP}, set()]  # every partition paused while down, all resumed after
    attempts = harness.sink.attempts
    assert len(attempts) == 3 and all(batch is attempts[0] for batch in attempts)
    assert len(harness.sink.events) == 4 and len(harness.sink.dead_letters) == 1
    assert sorted(e for e in harness.consumer.journal if e.startswith("commit ")) == [
        "commit gatewatch-app/0@1", "commit gatewatch-gateway/0@4",
    ]  # fmt: skip
    text = harness.shared.metrics.exposition().decode()
    assert 'component_errors_total{error_type="unavailable",stage="store"} 2.0' in text


def test_writes_that_failed_in_an_outage_now_over_are_written_again_without_a_pause(harness: Harness) -> None:
    # A fault trial: after a store block lifted, each of twelve batches that had failed with it waited the
    # store's retry delay, one after the other, paused each time, with a stale warning each.
    harness.consumer.logs[GW] += [_line(s, f"r{s}") for s in range(4)]
    harness.assign(GW, APP)
    harness.sink.hold()
    harness.consumer.logs[GW] += [_line(s, f"a{s}") for s in range(4, 6)]
    harness.stage.step()  # in the writer, held
    harness.consumer.logs[GW] += [_line(s, f"b{s}") for s in range(6, 8)]
    harness.stage.step()  # queued behind it
    harness.sink.fail_next(*[StoreUnavailableError("store down", 0.0)] * 2)  # one for each write, merged or not
    harness.sink.release()
    harness.wait_for_writes()
    assert [item.pending._error is not None for item in harness.stage._in_flight if item.pending] == [True, True]
    harness.sink._failures.clear()  # one write may have taken both batches: the outage is over either way
    paused: list[bool] = []
    harness.stage._set_backpressure = paused.append  # type: ignore[method-assign]
    harness.stage.shutdown()  # the store is back
    assert paused == []
    assert len(harness.sink.events) == 8
    assert sorted(e for e in harness.consumer.journal if e.startswith("commit ")) == ["commit gatewatch-gateway/0@8"]


def test_a_rebalance_settles_the_writes_in_flight_before_reading_the_committed_offsets(harness: Harness) -> None:
    harness.consumer.logs[GW] += [_line(s, f"r{s}") for s in range(5)]
    harness.assign(GW, APP)
    harness.sink.hold()
    harness.stage.step()  # read, handed to the store, not stored yet
    harness.consumer.rebalance({GW, APP})
    harness.stage.step()  # the rebalancing poll
    releaser = threading.Timer(0.05, harness.sink.release)  # the store answers while the stage waits for it
    releaser.start()
    harness.stage.step()  # settles, then resumes from the committed offsets
    releaser.join()
    journal = harness.consumer.journal
    assert journal[journal.index("commit gatewatch-gateway/0@5") + 1 :] == [
        "committed gatewatch-app/0", "committed gatewatch-gateway/0",
    ]  # fmt: skip
    assert harness.consumer.positions[GW] == 5  # nothing read twice: the resume started after the stored poll
    assert len(harness.sink.events) == 5 and len(harness.sink.attempts) == 1


def test_a_partition_moved_away_drops_its_lag_series(harness: Harness) -> None:
    """Its new owner reports its lag; the value this process set last stayed and paged as a stalled ingest."""
    harness.consumer.logs[GW] += [_line(s, f"r{s}") for s in range(5)]
    harness.assign(GW, APP)
    harness.stage.step()  # resumes from the committed offsets
    harness.stage._update_lag()
    lag = harness.shared.metrics.consumer_lag
    assert {labels["topic"] for metric in lag.collect() for labels in (s.labels for s in metric.samples)} == {
        GW.topic, APP.topic}  # fmt: skip
    harness.consumer.rebalance({APP})
    harness.stage.step()  # the rebalancing poll
    harness.stage.step()
    assert {labels["topic"] for metric in lag.collect() for labels in (s.labels for s in metric.samples)} == {
        APP.topic}  # fmt: skip


def test_messages_not_wrapped_as_configured_are_named_in_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    # A shipper trial: kafka.unwrap.app log, Fluentd putting the line under "message": every record a dead letter
    # "missing_timestamp", nothing logged, the user debugging timestamps instead of the unwrap key.
    h = Harness()
    config = parse_config({"kafka": {"unwrap": {"gateway": "log"}}})
    h.stage._source = KafkaSource(config.kafka, consumer=h.consumer)  # type: ignore[arg-type]
    h.consumer.logs[GW] += [b'{"message": ' + orjson.dumps(_line(s, f"r{s}").decode()) + b"}" for s in range(3)]
    try:
        h.assign(GW, APP)
        with caplog.at_level("WARNING", logger="gatewatch.serve"):
            h.stage.step()
            h.consumer.logs[GW].append(_line(5, "r5"))
            h.stage.step()
        warnings = [r.getMessage() for r in caplog.records if "unwrap_missed" in r.getMessage()]
        assert len(warnings) == 1 and "records=3" in warnings[0] and "kafka.unwrap.<side>" in warnings[0]
    finally:
        h.sink.release()
        assert h.shared.writer is not None
        h.shared.writer.close()


def test_an_input_of_which_not_one_line_is_read_is_logged_once(
    harness: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    harness.consumer.logs[GW] += [b'{"not": "the configured format"}'] * 1200
    harness.consumer.logs[APP] += [orjson.dumps({"ts": "2026-03-02T09:00:01Z", "request_id": "r1", "status": 200})]
    harness.assign(GW, APP)
    with caplog.at_level("WARNING", logger="gatewatch.serve"):
        for _ in range(10):
            harness.stage.step()
    said = [r.getMessage() for r in caplog.records if "input_unread" in r.getMessage()]
    assert len(said) == 1 and "dataset=envoy.access" in said[0]
    assert "not one of the first 1200 gateway lines was read" in said[0] and "kafka.unwrap.gateway" in said[0]
    assert not [r for r in caplog.records if "field_unread" in r.getMessage()]  # too few app lines to judge

