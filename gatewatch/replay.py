"""Replay: run the whole pipeline over log files, as a live run would see them.

Files are read in chunks, always from the input whose event time is furthest
behind, so the reorder buffer holds about ``allowed_lateness_secs`` of traffic
however long or unbalanced the files are.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from gatewatch.config import GatewatchConfig
from gatewatch.topology import Pipeline, RunStats, tune_gc_for_streaming
from ingest.escape import quoted
from ingest.records import Dataset
from ingest.sinks.base import Sink
from ingest.sources.base import Source
from ingest.sources.files import FileSource

log = logging.getLogger(__name__)

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
    sources: dict[str, FileSource] = {}
    for dataset, paths, section in (
        (Dataset.GATEWAY, gateway_paths, config.gateway),
        (Dataset.APP, app_paths, config.app),
    ):
        for path in paths:
            source = FileSource(path, dataset, section.max_line_bytes, section.unwrap)
            known = sources.get(source.stream)
            if known is not None:
                source = _same_content(known, source)
            sources[source.stream] = source
    readers: dict[str, Source[str]] = {}
    for stream, source in sources.items():
        readers[stream] = source
        pipeline.open_stream(stream)

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


def _same_content(known: FileSource, other: FileSource) -> FileSource:
    """Of two files that begin with the same line, the one to read: the longer, as the other is taken for a copy
    of its start (a rotated file and the same file compressed; a file under two names). Warns once."""
    sizes = [_size(source.path) for source in (known, other)]
    keep, skip = (other, known) if sizes[1] > sizes[0] else (known, other)
    skip.close()
    log.warning("same_first_line read=%s skipped=%s note=%s", quoted(str(keep.path)), quoted(str(skip.path)),
                quoted("files that begin with the same line are taken for one (their records share ids)"))  # fmt: skip
    return keep


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _write(pipeline: Pipeline, sinks: Sequence[Sink]) -> None:
    batch = pipeline.drain()
    if len(batch):
        for sink in sinks:
            sink.write(batch)
