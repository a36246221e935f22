"""Replay: run the whole pipeline over log files, as a live run would see them.

Files are read in chunks, always from the input whose event time is furthest
behind, so the reorder buffer holds about ``allowed_lateness_secs`` of traffic
however long or unbalanced the files are.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from gatewatch.config import GatewatchConfig
from gatewatch.topology import Pipeline, RunStats, read_position, tune_gc_for_streaming
from ingest.escape import quoted
from ingest.records import Dataset
from ingest.sinks.base import Sink
from ingest.sources.base import Source
from ingest.sources.files import FileSource, longer_copy

log = logging.getLogger(__name__)

CHUNK_RECORDS = 512
DRAIN_EVERY_RECORDS = 20_000


def replay(
    config: GatewatchConfig,
    gateway_paths: Sequence[Path],
    app_paths: Sequence[Path],
    sinks: Sequence[Sink],
    on_progress: Callable[[int], None] | None = None,
    *,
    sources: dict[str, FileSource] | None = None,
) -> RunStats:
    """Read every file to its end, write all outputs to ``sinks``, and return the run's counts.

    ``sources``: :func:`file_sources` of the paths, when the caller has opened them already.
    """
    tune_gc_for_streaming()
    pipeline = Pipeline(config)
    if sources is None:
        sources = file_sources(config, gateway_paths, app_paths)
    readers: dict[str, Source[str]] = {}
    for stream, source in sources.items():
        readers[stream] = source
        pipeline.open_stream(stream)

    since_drain = 0
    positions = dict.fromkeys(readers, -math.inf)
    try:
        while readers:
            stream = min(readers, key=positions.__getitem__)
            chunk = readers[stream].poll(0.0, CHUNK_RECORDS)
            if readers[stream].at_end:
                readers.pop(stream).close()
                pipeline.close_stream(stream)
            positions[stream] = read_position(pipeline.feed(chunk), positions[stream])
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


def file_sources(
    config: GatewatchConfig, gateway_paths: Sequence[Path], app_paths: Sequence[Path]
) -> dict[str, FileSource]:
    """A source for each file, by its records' stream (``file:<fingerprint of its first line>``).

    Two files that begin with the same line are one file when one's content is the start of the
    other's (a copy taken while it grew, the same file compressed, a second name): the longer is read.
    Files that begin with the same line and then differ (a fixed banner line) are both read, the
    later one named by its path too, and a warning says so: its ids change if it is moved.
    """
    sources: dict[str, FileSource] = {}
    for dataset, paths, section in (
        (Dataset.GATEWAY, gateway_paths, config.gateway),
        (Dataset.APP, app_paths, config.app),
    ):
        for path in paths:
            source = FileSource(path, dataset, section.max_line_bytes, section.unwrap)
            known = sources.get(source.stream)
            if known is None:
                sources[source.stream] = source
                continue
            longer = longer_copy(known.path, path)
            if longer is not None:
                keep, skip = (known, source) if longer == known.path else (source, known)
                skip.close()
                sources[source.stream] = keep
                log.info("same_content read=%s skipped=%s", quoted(str(keep.path)), quoted(str(skip.path)))
                continue
            source.close()
            by_path = hashlib.blake2b(str(path.absolute()).encode(), digest_size=4).hexdigest()
            source = FileSource(path, dataset, section.max_line_bytes, section.unwrap, f"{source.stream}@{by_path}")
            sources[source.stream] = source
            log.warning("same_first_line path=%s as=%s note=%s", quoted(str(path)), quoted(str(known.path)),
                        quoted("it begins with the same line and then differs: named by its path as well"))  # fmt: skip
    return sources


def _write(pipeline: Pipeline, sinks: Sequence[Sink]) -> None:
    batch = pipeline.drain()
    if len(batch):
        for sink in sinks:
            sink.write(batch)
