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

from ingest.errors import SourceError
from ingest.records import Dataset, Origin, RawRecord
from ingest.sources.unwrap import compile_unwrap, join_pieces

_GZIP_MAGIC = b"\x1f\x8b"


def open_log(path: Path) -> BinaryIO:
    """Open ``path`` for binary reading, gunzipping it if it is gzip (by content, not name)."""
    try:
        with path.open("rb") as probe:
            compressed = probe.read(2) == _GZIP_MAGIC
        return gzip.open(path, "rb") if compressed else path.open("rb")  # type: ignore[return-value]
    except OSError as error:
        raise SourceError(f"cannot open log file {path}: {error.strerror or error}") from None


def read_lines(path: Path, dataset: Dataset, max_line_bytes: int, unwrap: str | None = None) -> Iterator[RawRecord]:
    """Yield every line of ``path`` (without its line ending) as a raw record.

    ``unwrap`` (``none``, ``docker``, ``cri`` or a JSON key, see
    :mod:`ingest.sources.unwrap`) takes a container runtime's or shipper's
    wrapper off each line first, joining the pieces of a split line.
    """
    stream = str(path)
    unwrapper = compile_unwrap(unwrap)
    with open_log(path) as handle:
        try:
            if unwrapper is not None:
                # JSON escaping can double a line: keep enough of the wrapper to find the line in it.
                lines = _bounded_lines(handle, 2 * max_line_bytes + _WRAPPER_BYTES)
                yield from join_pieces(lines, unwrapper, dataset, stream, max_line_bytes)
                return
            number = 0
            for line in _bounded_lines(handle, max_line_bytes + 1):
                number += 1
                yield RawRecord(Origin(dataset, stream, number), line)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            raise SourceError(f"error reading {path}: {error}") from None


_WRAPPER_BYTES = 4096


_BLOCK_BYTES = 1 << 20


def _bounded_lines(handle: BinaryIO, limit: int) -> Iterator[bytes]:
    """Lines of at most ``limit`` bytes: a longer line is cut to its head, the rest skipped.

    Reads whole blocks and splits them in C: a readline() call per line cost
    more than parsing it.
    """
    head = b""  # start of a line that continues in the next block
    cut = False  # the line in ``head`` is already longer than ``limit``
    while block := handle.read(_BLOCK_BYTES):
        lines = block.split(b"\n")
        tail = lines.pop()
        if lines:
            first = lines[0]
            lines[0] = head if cut else head + first
            for line in lines:
                if len(line) >= limit:
                    yield line[:limit]
                elif line.endswith(b"\r"):
                    yield line[:-1]
                else:
                    yield line
            head, cut = b"", False
        if not cut:
            head += tail
            if len(head) >= limit:
                head, cut = head[:limit], True
    if head:
        yield head if cut or not head.endswith(b"\r") else head[:-1]
