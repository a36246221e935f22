"""The pipeline's contract for streaming: same input set, same output — however it is chunked,
interleaved, re-delivered, or stopped and resumed from a snapshot."""

from __future__ import annotations

from itertools import islice

import orjson
import pytest

from gatewatch.config import load_config, parse_config
from gatewatch.demo.files import DemoFiles, write_demo
from gatewatch.topology import Pipeline, _warn_once
from ingest.records import Dataset, Origin, RawRecord
from ingest.sources.files import read_lines
from tests.state_v1 import pipeline_as_v1


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return write_demo(tmp_path_factory.mktemp("demo"), seed=5, duration_secs=600.0, requests_per_sec=6.0)


def records(demo: DemoFiles) -> dict[str, list[RawRecord]]:
    return {
        "gateway": list(read_lines(demo.gateway_log, Dataset.GATEWAY, 65536)),
        "app": list(read_lines(demo.app_log, Dataset.APP, 65536)),
    }


def run(
    pipeline: Pipeline,
    streams: dict[str, list[RawRecord]],
    chunks: dict[str, int],
    finish: bool = True,
    stop_after: int | None = None,
) -> tuple[dict[str, dict], set[str]]:
    """Feed the streams round-robin in the given chunk sizes; return alerts by id and transaction ids."""
    alerts: dict[str, dict] = {}
    transactions: set[str] = set()
    cursors = {name: iter(lines) for name, lines in streams.items() if lines}
    for name, lines in streams.items():
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
            batch = pipeline.drain()
            alerts.update((a.id, a.to_document()) for a in batch.alerts.values())
            transactions.update(t.id for t in batch.transactions)
        if stop_after is not None and fed >= stop_after:
            return alerts, transactions
    if finish:
        pipeline.finish()
    batch = pipeline.drain()
    alerts.update((a.id, a.to_document()) for a in batch.alerts.values())
    transactions.update(t.id for t in batch.transactions)
    return alerts, transactions


def test_chunking_and_interleaving_do_not_change_the_output(demo: DemoFiles) -> None:
    config = load_config(demo.config_yaml)
    streams = records(demo)
    reference = run(Pipeline(config), streams, {"gateway": 512, "app": 512})
    assert reference[0], "the demo must raise alerts"
    for chunks in ({"gateway": 1, "app": 7}, {"gateway": 3000, "app": 50}, {"gateway": 97, "app": 4000}):
        assert run(Pipeline(config), streams, chunks) == reference


def test_redelivered_records_are_ignored(demo: DemoFiles) -> None:
    config = load_config(demo.config_yaml)
    streams = records(demo)
    reference = run(Pipeline(config), streams, {"gateway": 500, "app": 500})
    # Every 500-record chunk is followed by a repeat of its last 200 (a producer restarted mid-batch).
    doubled = {name: [r for i in range(0, len(lines), 500) for r in lines[i : i + 500] + lines[i + 300 : i + 500]]
               for name, lines in streams.items()}  # fmt: skip
    pipeline = Pipeline(config)
    assert run(pipeline, doubled, {"gateway": 500, "app": 500}) == reference
    assert pipeline.stats.redelivered > 0


@pytest.mark.parametrize("written_by", ["this release", "the previous release"])
def test_snapshot_and_restore_continue_exactly(demo: DemoFiles, written_by: str) -> None:
    """What a process killed after a checkpoint must do: resume from snapshot + offsets, same alerts.

    Also from a snapshot the previous release wrote (``pipeline`` v1: events in EventTables)."""
    config = load_config(demo.config_yaml)
    streams = records(demo)
    reference = run(Pipeline(config), streams, {"gateway": 400, "app": 400})

    first = Pipeline(config)
    half = sum(len(lines) for lines in streams.values()) // 2
    alerts, transactions = run(first, streams, {"gateway": 400, "app": 400}, stop_after=half)
    snapshot = first.snapshot()
    if written_by == "the previous release":
        snapshot = pipeline_as_v1(snapshot)
    resume_at = dict(first.stream_offsets)
    # Records after the snapshot were also fed and drained, then the process "died".
    run(first, {k: v[len(v) // 2 :] for k, v in streams.items()}, {"gateway": 400, "app": 400}, finish=False)

    second = Pipeline(config)
    second.restore(snapshot)
    rest = {name: [r for r in lines if r.origin.offset > resume_at.get(r.origin.stream, 0)]
            for name, lines in streams.items()}  # fmt: skip
    more_alerts, more_transactions = run(second, rest, {"gateway": 400, "app": 400})
    alerts.update(more_alerts)
    assert second.stats.redelivered == 0
    assert (alerts, transactions | more_transactions) == reference


def test_a_record_that_proves_a_rule_alerts_before_the_reorder_buffer_releases_it() -> None:
    """An untrusted peer's line alerts at once, although the buffer still waits for the gateway input."""
    config = parse_config({"trust": {"gateway_networks": ["10.0.0.0/24"]}})
    pipeline = Pipeline(config)
    pipeline.open_stream("gateway/0")
    pipeline.open_stream("app/0")
    line = orjson.dumps({"ts": "2026-03-02T09:00:00Z", "request_id": "r-1", "method": "GET", "path": "/v1/invoices",
                         "status": 200, "peer": {"ip": "10.9.9.9"}})  # fmt: skip
    # A first record is judged once a second one vouches for its time (ingest/order.py: far-future guard).
    health = orjson.dumps({"ts": "2026-03-02T09:00:01Z", "request_id": "r-2", "method": "GET", "path": "/healthz",
                           "status": 200, "peer": {"ip": "10.0.0.7"}})  # fmt: skip
    pipeline.feed([RawRecord(Origin(Dataset.APP, "app/0", 0), line), RawRecord(Origin(Dataset.APP, "app/0", 1), health)])
    pipeline.process()
    batch = pipeline.drain()
    assert pipeline.order.watermark == float("-inf")  # nothing released: the gateway input has not spoken
    assert [(a.rule, a.reason, a.entity_value) for a in batch.alerts.values()] == [
        ("gateway_bypass", "untrusted_peer", "10.9.9.9")
    ]


def test_every_pipeline_of_a_process_shares_one_revocation_list(demo: DemoFiles) -> None:
    """serve runs a pipeline (or rule set) a task: a list of a million jtis was 140 MB a copy."""
    config = load_config(demo.config_yaml)
    assert config.tokens.revoked is not None
    first, second = Pipeline(config), Pipeline(config)
    assert first.context.revoked and first.context.revoked is second.context.revoked


def test_an_unconfigured_trust_is_warned_of_once_a_process(caplog: pytest.LogCaptureFixture) -> None:
    config = parse_config({})
    _warn_once.cache_clear()
    for _ in range(2):
        Pipeline(config)
    assert [r.getMessage()[:18] for r in caplog.records] == ["trust_unconfigured"]


def test_a_gateway_line_limit_below_the_default_is_warned_of(caplog: pytest.LogCaptureFixture) -> None:
    # An upgrade trial: an earlier release's deploy config set gateway.max_line_bytes 65536, which an
    # escaped 33 KB header passes (a dead letter, a false bypass); the upgraded config kept it without a word.
    from gatewatch.topology import build_parsers

    _warn_once.cache_clear()
    build_parsers(parse_config({}))
    assert not caplog.records
    build_parsers(parse_config({"gateway": {"max_line_bytes": 65536}}))
    (record,) = caplog.records
    assert record.getMessage().startswith("gateway_line_limit_low: gateway.max_line_bytes 65536 is below")
