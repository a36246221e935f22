"""Files: read log files (plain or gzip) as raw records, one line each.

A line's origin is the file's path and its 1-based line number, so a replay of
the same file yields the same record ids. Lines longer than ``max_line_bytes``
are read in pieces and only their first ``max_line_bytes + 1`` bytes are kept:
the parser turns that into an ``oversized`` dead letter without the whole line
ever sitting in memory.
"""

from __future__ import annotations

import gzip
from collections.abc import Generator, Iterator, Mapping
from itertools import islice
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


def read_lines(
    path: Path, dataset: Dataset, max_line_bytes: int, unwrap: str | None = None
) -> Generator[RawRecord, None, None]:
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

POLL_RECORDS = 512
"""Records a :meth:`FileSource.poll` returns when the caller sets no cap."""


class FileSource:
    """One log file as a :class:`~ingest.sources.base.Source`: read once, to its end, in line order.

    Its one partition is the file's stream name (its path, the records'
    ``origin.stream``). ``poll`` never waits: a file has no more lines later.
    Positions are not durable (a replay starts over): ``commit`` only
    remembers them, in :attr:`committed`.
    """

    def __init__(self, path: Path, dataset: Dataset, max_line_bytes: int, unwrap: str | None = None) -> None:
        self.stream = str(path)
        self.committed: dict[str, int] = {}
        self._lines = read_lines(path, dataset, max_line_bytes, unwrap)
        self._at_end = False

    @property
    def at_end(self) -> bool:
        return self._at_end

    def poll(self, timeout_secs: float = 0.0, max_records: int | None = None) -> list[RawRecord]:
        """The next ``max_records`` lines (default :data:`POLL_RECORDS`); ``[]`` at the end. Raises SourceError."""
        if self._at_end:
            return []
        chunk = list(islice(self._lines, max_records or POLL_RECORDS))
        if not chunk:
            self._at_end = True
        return chunk

    def commit(self, offsets: Mapping[str, int]) -> None:
        self.committed.update(offsets)

    def close(self) -> None:
        self._lines.close()  # closes the file now, not when the generator is collected


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
