"""One set of counters: the pipeline's totals, and what is new since the last report (issue 13).

Serve's metrics and a JOIN task's output add ``Pipeline.take_counts()``; the
totals in ``Pipeline.stats`` stay the one count, whoever reports them.
"""

from __future__ import annotations

from pathlib import Path

import msgspec

from gatewatch.config import GatewatchConfig, load_config
from gatewatch.demo.files import write_demo
from gatewatch.metrics import ServeMetrics
from gatewatch.topology import Pipeline, RunStats, build_parsers, parse_records
from ingest.records import Dataset, Origin, RawRecord
from ingest.sources.files import read_lines


def _gateway(tmp_path: Path) -> tuple[GatewatchConfig, list[RawRecord]]:
    """The demo's gateway lines that parse (the demo mixes in hostile ones): each is one event."""
    demo = write_demo(tmp_path, seed=3, duration_secs=300.0, requests_per_sec=2.0, attacks=False)
    config = load_config(demo.config_yaml)
    lines = list(read_lines(demo.gateway_log, Dataset.GATEWAY, 65536))
    events, _ = parse_records(build_parsers(config), lines)
    parsed = {event.origin.offset for event in events}
    return config, [line for line in lines if line.origin.offset in parsed]


def _summed(parts: list[RunStats]) -> RunStats:
    total = RunStats()
    for part in parts:
        for name in ("records_in", "redelivered", "late_events", "dead_letters", "events"):
            setattr(total, name, getattr(total, name) + getattr(part, name))
        for reason, n in part.dead_letter_reasons.items():
            total.dead_letter_reasons[reason] = total.dead_letter_reasons.get(reason, 0) + n
    return total


def test_counts_taken_add_up_to_the_totals_and_never_repeat(tmp_path: Path) -> None:
    config, lines = _gateway(tmp_path)
    stream = lines[0].origin.stream
    pipeline = Pipeline(config)
    pipeline.open_stream(stream)
    taken: list[RunStats] = []
    half = len(lines) // 2
    pipeline.feed(lines[:half])
    pipeline.process()
    pipeline.drain()
    taken.append(pipeline.take_counts())
    assert pipeline.take_counts() == RunStats()  # nothing new: nothing reported twice
    end = lines[-1].origin.offset
    late = msgspec.structs.replace(lines[0], origin=Origin(Dataset.GATEWAY, stream, end + 1))  # an old request, new offset
    garbage = RawRecord(Origin(Dataset.GATEWAY, stream, end + 2), b"not an access log line")
    pipeline.feed(lines[half - 5 :] + [late, garbage])  # five re-delivered
    pipeline.process()
    pipeline.drain()
    taken.append(pipeline.take_counts())

    assert taken[1].redelivered == 5 and taken[1].late_events == 1
    assert taken[1].dead_letter_reasons == {"format_mismatch": 1}
    total, stats = _summed(taken), pipeline.stats
    assert (total.records_in, total.redelivered, total.late_events, total.events, total.dead_letters) == (
        stats.records_in, stats.redelivered, stats.late_events, stats.events, stats.dead_letters,
    )  # fmt: skip
    assert total.dead_letter_reasons == stats.dead_letter_reasons

    # A pipeline restored from a checkpoint does not report what its state counted before it.
    restored = Pipeline(config)
    restored.restore(pipeline.snapshot())
    assert restored.stats.late_events == 1
    assert restored.take_counts() == RunStats()


def test_serve_metrics_add_what_the_pipeline_reports() -> None:
    metrics = ServeMetrics()
    metrics.record_pipeline_counts(RunStats(late_events=3))
    metrics.record_pipeline_counts(RunStats(late_events=1, dead_letter_reasons={"truncated": 2}))
    text = metrics.exposition().decode()
    assert "gatewatch_late_events_total 4.0" in text
    assert 'gatewatch_dead_letters_total{reason="truncated"} 0.0' in text  # counted from the batches instead
