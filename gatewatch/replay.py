"""Replay: run the whole pipeline over log files, as a live run would see them.

Files are read in chunks, always from the input whose event time is furthest
behind, so the reorder buffer holds about ``allowed_lateness_secs`` of traffic
however long or unbalanced the files are.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from itertools import islice
from pathlib import Path
from typing import Any

from gatewatch.topology import Pipeline, RunStats, tune_gc_for_streaming
from ingest.records import Dataset, RawRecord
from ingest.sinks.base import Sink
from ingest.sources.files import read_lines

CHUNK_RECORDS = 512
DRAIN_EVERY_RECORDS = 20_000


def replay(
    config: Any,
    gateway_paths: Sequence[Path],
    app_paths: Sequence[Path],
    sinks: Sequence[Sink],
    on_progress: Callable[[int], None] | None = None,
) -> RunStats:
    """Read every file to its end, write all outputs to ``sinks``, and return the run's counts."""
    tune_gc_for_streaming()
    pipeline = Pipeline(config)
    readers: dict[str, Iterator[RawRecord]] = {}
    for dataset, paths, section in (
        (Dataset.GATEWAY, gateway_paths, config.gateway),
        (Dataset.APP, app_paths, config.app),
    ):
        for path in paths:
            readers[str(path)] = read_lines(path, dataset, section.max_line_bytes, section.unwrap)
            pipeline.open_stream(str(path))

    since_drain = 0
    while readers:
        stream = min(readers, key=pipeline.order.stream_clock)
        chunk = list(islice(readers[stream], CHUNK_RECORDS))
        if not chunk:
            del readers[stream]
            pipeline.close_stream(stream)
        pipeline.feed(chunk)
        pipeline.process()
        since_drain += len(chunk)
        if since_drain >= DRAIN_EVERY_RECORDS:
            _write(pipeline, sinks)
            if on_progress is not None:
                on_progress(since_drain)
            since_drain = 0
    pipeline.finish()
    _write(pipeline, sinks)
    if on_progress is not None:
        on_progress(since_drain)
    return pipeline.stats


def _write(pipeline: Pipeline, sinks: Sequence[Sink]) -> None:
    batch = pipeline.drain()
    if len(batch):
        for sink in sinks:
            sink.write(batch)
