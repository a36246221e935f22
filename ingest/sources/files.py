"""Files: read log files (plain or gzip) as raw records, one line each.

A line's origin is the file's path and its 1-based line number, so a replay of
the same file yields the same record ids. Lines longer than ``max_line_bytes``
are read in pieces and only their first ``max_line_bytes + 1`` bytes are kept:
the parser turns that into an ``oversized`` dead letter without the whole line
ever sitting in memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from gatewatch.errors import SourceError
from ingest.records import Dataset, Origin, RawRecord

_GZIP_MAGIC = b"\x1f\x8b"


def open_log(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading, gunzipping it if it is gzip (by content, not name)."""
    try:
        with path.open("rb") as probe:
            compressed = probe.read(2) == _GZIP_MAGIC
        return gzip.open(path, "rb") if compressed else path.open("rb")  # type: ignore[return-value]
    except OSError as error:
        raise SourceError(f"cannot open log file {path}: {error.strerror or error}") from None


def read_lines(path: Path, dataset: Dataset, max_line_bytes: int) -> Iterator[RawRecord]:
    """Yield every line of ``path`` (without its line ending) as a raw record."""
    stream = str(path)
    limit = max_line_bytes + 1
    with open_log(path) as handle:
        try:
            for number, line in enumerate(_bounded_lines(handle, limit), start=1):
                yield RawRecord(Origin(dataset, stream, number), line)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            raise SourceError(f"error reading {path}: {error}") from None


def _bounded_lines(handle: BinaryIO, limit: int) -> Iterator[bytes]:
    readline = handle.readline
    while True:
        line = readline(limit)
        if not line:
            return
        if line.endswith(b"\n"):
            yield line.rstrip(b"\r\n")
            continue
        if len(line) < limit:
            yield line  # last line, no newline
            return
        # Oversized: keep the head, skip the rest of the line.
        while True:
            rest = readline(1 << 20)
            if not rest or rest.endswith(b"\n"):
                break
        yield line
