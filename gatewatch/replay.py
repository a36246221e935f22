"""Replay: run the whole pipeline over log files, as a live run would see them.

Files are read in chunks, always from the input whose event time is furthest
behind, so the reorder buffer holds about ``allowed_lateness_secs`` of traffic
however long or unbalanced the files are.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from gatewatch.config import GatewatchConfig
from gatewatch.topology import Pipeline, RunStats, tune_gc_for_streaming
from ingest.records import Dataset
from ingest.sinks.base import Sink
from ingest.sources.base import Source
from ingest.sources.files import FileSource

CHUNK_RECORDS = 512
DRAIN_EVERY_RECORDS = 20_000


def replay(
    config: GatewatchConfig,
    gateway_paths: Sequence[Path],
    app_paths: Sequence[Path],
    sinks: Sequence[Sink],
    on_progress: Callable[[int], None] | None = None,
) -> RunStats:
    """Read every file to its end, write all outputs to ``sinks``, and return the run's counts."""
    tune_gc_for_streaming()
    pipeline = Pipeline(config)
    readers: dict[str, Source[str]] = {}
    for dataset, paths, section in (
        (Dataset.GATEWAY, gateway_paths, config.gateway),
        (Dataset.APP, app_paths, config.app),
    ):
        for path in paths:
            source = FileSource(path, dataset, section.max_line_bytes, section.unwrap)
            readers[source.stream] = source  # the records' stream, one for every name of a file: read once
            pipeline.open_stream(source.stream)

    since_drain = 0
    try:
        while readers:
            stream = min(readers, key=pipeline.stream_clock)
            chunk = readers[stream].poll(0.0, CHUNK_RECORDS)
            if readers[stream].at_end:
                readers.pop(stream).close()
                pipeline.close_stream(stream)
            pipeline.feed(chunk)
            pipeline.process()
            since_drain += len(chunk)
            if since_drain >= DRAIN_EVERY_RECORDS:
                _write(pipeline, sinks)
                if on_progress is not None:
                    on_progress(since_drain)
                since_drain = 0
    finally:
        for reader in readers.values():  # a file failed, or a sink: close the others now
            reader.close()
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
