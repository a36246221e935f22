"""Lifecycle events through the whole pipeline: the same sequence however the input is chunked,
interleaved or resumed from a snapshot (the contract of tests/gatewatch/test_topology.py, for transitions)."""

from __future__ import annotations

from itertools import islice

import pytest

from gatewatch.config import load_config
from gatewatch.demo.files import DemoFiles, write_demo
from gatewatch.topology import Pipeline
from ingest.records import Dataset, RawRecord
from ingest.sources.files import read_lines


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return write_demo(tmp_path_factory.mktemp("demo"), seed=5, duration_secs=600.0, requests_per_sec=6.0)


def streams_of(demo: DemoFiles) -> dict[str, list[RawRecord]]:
    return {
        "gateway": list(read_lines(demo.gateway_log, Dataset.GATEWAY, 65536)),
        "app": list(read_lines(demo.app_log, Dataset.APP, 65536)),
    }


def run(pipeline: Pipeline, streams: dict[str, list[RawRecord]], chunks: dict[str, int],
        finish: bool = True, stop_after: int | None = None) -> list[dict]:  # fmt: skip
    events: list[dict] = []
    cursors = {name: iter(lines) for name, lines in streams.items() if lines}
    for lines in streams.values():
        if lines:
            pipeline.open_stream(lines[0].origin.stream)
    fed = 0
    while cursors:
        for name in list(cursors):
            chunk = list(islice(cursors[name], chunks[name]))
            if not chunk:
                del cursors[name]
                pipeline.close_stream(streams[name][0].origin.stream)
                continue
            pipeline.feed(chunk)
            pipeline.process()
            fed += len(chunk)
            events.extend(e.to_document() for e in pipeline.drain().alert_events)
        if stop_after is not None and fed >= stop_after:
            return events
    if finish:
        pipeline.finish()
    events.extend(e.to_document() for e in pipeline.drain().alert_events)
    return events


def test_lifecycle_events_do_not_depend_on_chunking_or_interleaving(demo: DemoFiles) -> None:
    config = load_config(demo.config_yaml)
    streams = streams_of(demo)
    reference = run(Pipeline(config), streams, {"gateway": 512, "app": 512})
    states = [doc["lifecycle"]["state"] for doc in reference]
    assert "open" in states and "resolved" in states
    assert len({doc["lifecycle"]["event_id"] for doc in reference}) == len(reference)
    # Bypass and token alerts fire on arrival: an app stream read far ahead of the gateway's
    # makes them arrive minutes early in event time, and must change nothing.
    for chunks in ({"gateway": 1, "app": 7}, {"gateway": 3000, "app": 50}, {"gateway": 97, "app": 4000}):
        assert run(Pipeline(config), streams, chunks) == reference


def test_sequence_numbers_count_each_alerts_transitions(demo: DemoFiles) -> None:
    reference = run(Pipeline(load_config(demo.config_yaml)), streams_of(demo), {"gateway": 512, "app": 512})
    by_alert: dict[str, list[dict]] = {}
    for doc in reference:
        by_alert.setdefault(doc["id"], []).append(doc["lifecycle"])
    for lifecycle in by_alert.values():
        assert [item["sequence"] for item in lifecycle] == list(range(1, len(lifecycle) + 1))
        assert lifecycle[0]["state"] == "open"
        assert [item["at"] for item in lifecycle] == sorted(item["at"] for item in lifecycle)


def test_a_restored_snapshot_re_sends_the_same_events(demo: DemoFiles) -> None:
    """A process killed after its checkpoint: the next one repeats transitions with the same ids and contents."""
    config = load_config(demo.config_yaml)
    streams = streams_of(demo)
    reference = run(Pipeline(config), streams, {"gateway": 400, "app": 400})

    first = Pipeline(config)
    half = sum(len(lines) for lines in streams.values()) // 2
    before = run(first, streams, {"gateway": 400, "app": 400}, stop_after=half)
    snapshot, resume_at = first.snapshot(), dict(first.stream_offsets)
    second = Pipeline(config)
    second.restore(snapshot)
    rest = {name: [r for r in lines if r.origin.offset > resume_at.get(r.origin.stream, 0)]
            for name, lines in streams.items()}  # fmt: skip
    after = run(second, rest, {"gateway": 400, "app": 400})
    assert before + after == reference
