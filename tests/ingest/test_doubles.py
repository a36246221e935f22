"""The shipped doubles (ingest/testing.py) keep the source and sink contracts, and so do the real sources."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from kafka import TopicPartition
from kafka.errors import (
    FencedInstanceIdError,
    GroupAuthorizationFailedError,
    KafkaConnectionError,
    TopicAuthorizationFailedError,
)

from gatewatch.config import parse_config
from ingest.errors import FencedError, SourceAuthError, SourceError, StoreUnavailableError
from ingest.parsers import build_app_parser
from ingest.records import Dataset, DeadLetter, Event, RawRecord
from ingest.sinks.base import Batch
from ingest.sources.base import Source
from ingest.sources.files import FileSource
from ingest.sources.kafka import KafkaSource, commit_offsets
from ingest.testing import MemoryLog, MemorySink, MemorySource

LINES = [b'{"ts": "2026-03-01T12:00:%02dZ", "request_id": "r%d", "msg": "ok"}' % (i, i) for i in range(7)]


def _memory(tmp_path: Path) -> MemorySource:
    log = MemoryLog()
    log.append("app/0", Dataset.APP, *LINES)
    return log.source(finite=True)


def _file(tmp_path: Path) -> FileSource:
    path = tmp_path / "app.log"
    path.write_bytes(b"\n".join(LINES) + b"\n")
    return FileSource(path, Dataset.APP, 65536)


@pytest.mark.parametrize("make", [_memory, _file], ids=["memory", "file"])
def test_a_finite_source_hands_out_every_record_once_in_order(
    make: Callable[[Path], Source[str]], tmp_path: Path
) -> None:
    source = make(tmp_path)
    assert isinstance(source, Source)
    seen: list[RawRecord] = []
    while not source.at_end:
        batch = source.poll(0.0, 3)
        assert len(batch) <= 3
        seen.extend(batch)
    assert [r.line for r in seen] == LINES
    offsets = [r.origin.offset for r in seen]
    assert offsets == sorted(set(offsets)) and {r.origin.stream for r in seen} == {seen[0].origin.stream}
    assert source.poll(0.0, 3) == [] and source.at_end
    source.close()


def _store(source: MemorySource, sink: MemorySink, max_records: int) -> dict[str, int]:
    """One cycle of the contract: poll, parse, write, and the offsets to commit."""
    parse = build_app_parser({})
    records = source.poll(0.0, max_records)
    parsed = [parse(record) for record in records]
    sink.write(
        Batch(
            events=[p for p in parsed if isinstance(p, Event)],
            dead_letters=[p for p in parsed if isinstance(p, DeadLetter)],
        )
    )
    return {r.origin.stream: r.origin.offset + 1 for r in records}


def test_a_new_reader_re_reads_what_was_not_committed_and_the_sink_keeps_one_copy() -> None:
    log = MemoryLog()
    log.append("app/0", Dataset.APP, *LINES)
    sink = MemorySink()
    first = log.source()
    first.commit(_store(first, sink, 4))
    _store(first, sink, 2)  # stored, never committed: the process dies here
    first.close()

    second = log.source()
    assert second.poll(0.0, 1)[0].origin.offset == 4  # resumes at the commit
    second = log.source()
    while offsets := _store(second, sink, 10):
        second.commit(offsets)
    assert log.committed == {"app/0": len(LINES)}
    assert sink.writes == 4  # 4 records, 2, the last 3 (two of them again), then an empty poll
    assert len(sink.events) == len(LINES)  # the repeated records overwrote themselves
    assert {e.request_id for e in sink.events.values()} == {f"r{i}" for i in range(7)}


def test_a_failed_poll_consumes_nothing_and_a_failed_commit_keeps_the_previous() -> None:
    log = MemoryLog()
    log.append("app/0", Dataset.APP, *LINES)
    source = log.source()
    source.fail_next(SourceError("broker unreachable"))
    with pytest.raises(SourceError):
        source.poll(0.0, 2)
    assert [r.origin.offset for r in source.poll(0.0, 2)] == [0, 1]
    source.commit({"app/0": 2})
    source.poll(0.0, 3)
    source.fail_next(SourceError("commit failed"))
    with pytest.raises(SourceError):
        source.commit({"app/0": 5})
    assert log.committed == {"app/0": 2}
    assert log.source().poll(0.0, 1)[0].origin.offset == 2


def test_breaking_the_contract_is_an_assertion_not_a_failure() -> None:
    log = MemoryLog()
    log.append("app/0", Dataset.APP, *LINES)
    source = log.source()
    source.poll(0.0, 2)
    with pytest.raises(AssertionError, match="past the 2 polled"):
        source.commit({"app/0": 3})
    source.close()
    with pytest.raises(AssertionError, match="after close"):
        source.poll(0.0, 1)


def test_a_live_memory_source_is_never_at_end_and_sees_appended_records() -> None:
    log = MemoryLog()
    log.append("gw/0", Dataset.GATEWAY, b"a")
    source = log.source()
    assert [r.line for r in source.poll()] == [b"a"] and source.poll() == [] and not source.at_end
    log.append("gw/0", Dataset.GATEWAY, b"b")
    log.append("app/0", Dataset.APP, b"c")
    assert [(r.origin.dataset, r.line) for r in source.poll()] == [(Dataset.APP, b"c"), (Dataset.GATEWAY, b"b")]


def test_a_sink_that_fails_stores_nothing_of_that_batch() -> None:
    parse = build_app_parser({})
    batch = Batch(events=[e for line in LINES if isinstance(e := parse(_raw(line)), Event)])
    sink = MemorySink()
    sink.fail_next(StoreUnavailableError("store unreachable", retry_after_secs=0.5))
    with pytest.raises(StoreUnavailableError):
        sink.write(batch)
    assert not sink.events and sink.writes == 0
    sink.write(batch)
    sink.write(batch)
    assert len(sink.events) == 1 and sink.writes == 2
    sink.close()
    with pytest.raises(AssertionError):
        sink.write(batch)


def _raw(line: bytes) -> RawRecord:
    from ingest.records import Origin

    return RawRecord(Origin(Dataset.APP, "app.log", 1), line)


# -- KafkaSource keeps the contract's raise rules, without a broker -------------------------------


class _Consumer:
    """Just enough of a KafkaConsumer for KafkaSource to call."""

    config = {"group_instance_id": "pod-1-ingest"}

    def __init__(self, error: Exception) -> None:
        self.error = error

    def subscribe(self, topics: list[str], listener: Any) -> None:
        pass

    def topics(self) -> set[str]:
        return set()

    def poll(self, **kwargs: Any) -> dict[Any, Any]:
        raise self.error

    def commit(self, offsets: Any) -> None:
        raise self.error


def _kafka_source(error: Exception) -> KafkaSource:
    kafka = parse_config({"kafka": {"sasl_username": "gw-ingest", "sasl_password": "s3cret", "group_id": "gw"}}).kafka
    return KafkaSource(kafka, consumer=_Consumer(error))


@pytest.mark.parametrize(
    "error", [TopicAuthorizationFailedError({"gatewatch-app"}), GroupAuthorizationFailedError("gw")], ids=repr
)
def test_kafka_refusing_gatewatch_stops_with_one_line_naming_the_user(error: Exception) -> None:
    source = _kafka_source(error)
    assert isinstance(source, Source) and not source.at_end
    for call in (lambda: source.poll(0.1), lambda: source.commit({TopicPartition("gatewatch-app", 0): 5})):
        with pytest.raises(SourceAuthError) as caught:
            call()
        message = str(caught.value)
        assert "\n" not in message and "'gw-ingest'" in message and "'gw'" in message and "s3cret" not in message
        assert not isinstance(caught.value, SourceError)  # serve retries a SourceError: this one must stop it


def test_other_kafka_failures_stay_retryable() -> None:
    with pytest.raises(SourceError, match="poll failed"):
        _kafka_source(KafkaConnectionError("broker down")).poll(0.1)
    with pytest.raises(FencedError, match="pod-1-ingest"):
        commit_offsets(_Consumer(FencedInstanceIdError()), {TopicPartition("t", 0): 1})  # type: ignore[arg-type]


def test_a_topic_the_acls_deny_stops_the_source_instead_of_reading_the_other_alone() -> None:
    # kafka-python only records the refusal in its cluster metadata and polls the other topic on.
    consumer = _Consumer(KafkaConnectionError("unused"))
    consumer.poll = lambda **kwargs: {}  # type: ignore[method-assign]
    consumer._client = SimpleNamespace(cluster=SimpleNamespace(unauthorized_topics=set()))  # type: ignore[attr-defined]
    kafka = parse_config({"kafka": {"sasl_username": "gw-ingest", "sasl_password": "s3cret"}}).kafka
    source = KafkaSource(kafka, consumer=consumer)
    assert source.poll(0.1) == []
    consumer._client.cluster.unauthorized_topics = {kafka.topics.gateway, "someone-elses-topic"}  # type: ignore[attr-defined]
    with pytest.raises(SourceAuthError, match=f"TopicAuthorizationFailed: {kafka.topics.gateway}\\)"):
        source.poll(0.1)
