"""Files: read log files (plain or gzip) as raw records, one line each.

A line's origin is ``file:<fingerprint>`` (of the file's first line, see
:mod:`ingest.sources.fingerprint`) and the byte offset where the line starts in
the file's (gunzipped) content, as ``--follow`` names it: a replay of the same
file under whatever name (rotated, compressed, copied) yields the same record
ids, and a new file at an old name yields new ones. Lines
longer than ``max_line_bytes`` are read in pieces and only their first
``max_line_bytes + 1`` bytes are kept: the parser turns that into an
``oversized`` dead letter without the whole line ever sitting in memory.

A gzip file that ends early or is corrupt part-way (an interrupted copy, a
full disk during rotation) yields every line before the damage and then ends,
with a warning; its cut last line goes to the parser like any other, which
dead-letters it (``truncated``, ``invalid_json``...). Only a file that cannot
be opened or read at all is a :class:`~ingest.errors.SourceError`.
"""

from __future__ import annotations

import gzip
import io
import logging
import stat
import zlib
from collections.abc import Generator, Iterable, Iterator, Mapping
from itertools import accumulate, islice
from pathlib import Path

from ingest.errors import SourceError
from ingest.escape import quoted
from ingest.records import Dataset, Origin, RawRecord
from ingest.sources.fingerprint import GZIP_MAGIC, head_fingerprint, read_head
from ingest.sources.unwrap import compile_unwrap, join_pieces

log = logging.getLogger(__name__)

_DAMAGED = (EOFError, gzip.BadGzipFile, zlib.error)
"""What reading a gzip stream raises when it ends early or is corrupt part-way."""


def open_log(path: Path) -> io.BufferedIOBase:
    """Open ``path`` for binary reading, gunzipping it if it is gzip (by content, not name)."""
    try:
        with path.open("rb") as probe:
            compressed = probe.read(2) == GZIP_MAGIC
        return gzip.open(path, "rb") if compressed else path.open("rb")
    except OSError as error:
        raise SourceError(f"cannot open log file {path}: {error.strerror or error}") from None


def stream_name(path: Path) -> str:
    """The stream of a file's records, ``file:<fingerprint>``: its content's, not its name's (ids derive from it)."""
    try:
        if stat.S_ISFIFO(mode := path.stat().st_mode) or stat.S_ISSOCK(mode):
            # Its head is read before its lines, and a pipe gives its bytes once: lines would be lost.
            raise SourceError(f"{path} is a pipe, not a file: write it to a file and replay that")
        head = read_head(path)
    except OSError as error:
        raise SourceError(f"cannot open log file {path}: {error.strerror or error}") from None
    return f"file:{head_fingerprint(head, whole_file=True)}"


def longer_copy(first: Path, second: Path) -> Path | None:
    """Of two files one of whose contents (gunzipped) is the start of the other's, the longer (a file and
    a copy of it taken while it grew, the same file compressed); None when they differ, or one does not read."""
    try:
        with open_log(first) as a, open_log(second) as b:
            while True:
                piece_a, piece_b = a.read(_BLOCK_BYTES), b.read(_BLOCK_BYTES)
                if piece_a != piece_b:
                    if len(piece_a) < _BLOCK_BYTES and piece_b.startswith(piece_a):
                        return second
                    if len(piece_b) < _BLOCK_BYTES and piece_a.startswith(piece_b):
                        return first
                    return None
                if not piece_a:
                    return first  # the same content
    except (SourceError, OSError, *_DAMAGED):
        return None


def read_lines(
    path: Path, dataset: Dataset, max_line_bytes: int, unwrap: str | None = None
) -> Generator[RawRecord, None, None]:
    """Yield every line of ``path`` (without its line ending) as a raw record.

    ``unwrap`` (``none``, ``docker``, ``cri`` or a JSON key, see
    :mod:`ingest.sources.unwrap`) takes a container runtime's or shipper's
    wrapper off each line first, joining the pieces of a split line.
    """
    for records in read_blocks(path, dataset, max_line_bytes, unwrap):
        yield from records


def read_blocks(
    path: Path, dataset: Dataset, max_line_bytes: int, unwrap: str | None = None, stream: str | None = None
) -> Generator[list[RawRecord], None, None]:
    """The records of :func:`read_lines`, a list of them for each block read from ``path``.

    A list built in one comprehension costs less per line than a generator's
    step per line; :class:`FileSource` hands out slices of it. ``stream``:
    the file's :func:`stream_name`, when the caller has it already.
    """
    stream = stream or stream_name(path)
    unwrapper = compile_unwrap(unwrap)
    with open_log(path) as handle:
        try:
            chunks = _chunks(handle, path)
            if unwrapper is not None:
                # JSON escaping can double a line: keep enough of the wrapper to find the line in it.
                lines = _bounded_lines(chunks, 2 * max_line_bytes + _WRAPPER_BYTES)
                yield from _batched(join_pieces(lines, unwrapper, dataset, stream, max_line_bytes), POLL_RECORDS)
                return
            for starts, block in _without_bom(_bounded_blocks(chunks, max_line_bytes + 1)):
                yield [RawRecord(Origin(dataset, stream, start), line) for start, line in zip(starts, block)]
        except OSError as error:
            raise SourceError(f"error reading {path}: {error}") from None


def _batched(records: Iterator[RawRecord], size: int) -> Iterator[list[RawRecord]]:
    while batch := list(islice(records, size)):
        yield batch


_WRAPPER_BYTES = 4096

POLL_RECORDS = 512
"""Records a :meth:`FileSource.poll` returns when the caller sets no cap."""


class FileSource:
    """One log file as a :class:`~ingest.sources.base.Source`: read once, to its end, in line order.

    Its one partition is the file's stream name (``file:<fingerprint>``, the
    records' ``origin.stream``, see :func:`stream_name`). ``poll`` never
    waits: a file has no more lines later. Positions are not durable (a
    replay starts over): ``commit`` only remembers them, in :attr:`committed`.
    """

    def __init__(
        self, path: Path, dataset: Dataset, max_line_bytes: int, unwrap: str | None = None, stream: str | None = None
    ) -> None:
        """``stream``: a name other than the file's :func:`stream_name` (see ``gatewatch.replay.file_sources``)."""
        self.path = path
        self.stream = stream or stream_name(path)
        self.committed: dict[str, int] = {}
        self._blocks = read_blocks(path, dataset, max_line_bytes, unwrap, self.stream)
        self._block: list[RawRecord] = []  # the block being handed out, from _taken on
        self._taken = 0
        self._at_end = False

    @property
    def at_end(self) -> bool:
        return self._at_end

    def poll(self, timeout_secs: float = 0.0, max_records: int | None = None) -> list[RawRecord]:
        """The next ``max_records`` lines (default :data:`POLL_RECORDS`); ``[]`` at the end. Raises SourceError."""
        if self._at_end:
            return []
        wanted = max_records or POLL_RECORDS
        chunk = self._block[self._taken : self._taken + wanted]
        self._taken += len(chunk)
        while len(chunk) < wanted and (block := next(self._blocks, None)) is not None:
            self._block, self._taken = block, min(wanted - len(chunk), len(block))
            chunk += block[: self._taken]
        if not chunk:
            self._at_end = True  # only after an empty poll: a reader closes the stream on it
        return chunk

    def commit(self, offsets: Mapping[str, int]) -> None:
        self.committed.update(offsets)

    def close(self) -> None:
        self._blocks.close()  # closes the file now, not when the generator is collected
        self._block = []


_BLOCK_BYTES = 1 << 20
_SALVAGE_STEPS_BYTES = (4096, 1)


def _chunks(handle: io.BufferedIOBase, path: Path) -> Iterator[bytes]:
    """The bytes of ``handle`` a block at a time; at damage in a gzip stream, what came before it, then the end.

    ``read1`` reads the gzip stream once per call, so all it decoded before an
    early end or a bad CRC has been handed out when the error comes. Corrupt
    deflate data (``zlib.error``) also loses what the failing call decoded:
    :func:`_salvage` reads that stretch again.
    """
    done = 0
    try:
        while chunk := handle.read1(_BLOCK_BYTES):
            done += len(chunk)
            yield chunk
    except _DAMAGED as error:
        rest = _salvage(path, done) if isinstance(error, zlib.error) else b""
        log.warning(
            "gzip_damaged path=%s bytes_read=%d error=%s", quoted(str(path)), done + len(rest), quoted(str(error))
        )
        if rest:
            yield rest


def _salvage(path: Path, start: int) -> bytes:
    """What of the gzip file ``path`` decodes from byte ``start`` up to its damage.

    A read that meets the damage returns nothing of what it decoded, so the
    stretch is read in small steps, the last of them one byte.
    """
    kept = b""
    for step in _SALVAGE_STEPS_BYTES:
        kept += _read_to_damage(path, start + len(kept), step)
    return kept


def _read_to_damage(path: Path, start: int, step: int) -> bytes:
    pieces = []
    with gzip.open(path, "rb") as handle:
        try:
            handle.seek(start)  # reads up to ``start`` and no further
            while piece := handle.read1(step):
                pieces.append(piece)
        except _DAMAGED:
            pass
    return b"".join(pieces)


def _bounded_lines(chunks: Iterable[bytes], limit: int) -> Iterator[tuple[int, bytes]]:
    """(byte offset, line) of each line, at most ``limit`` bytes of it: a longer line is cut to its head."""
    for starts, lines in _without_bom(_bounded_blocks(chunks, limit)):
        yield from zip(starts, lines)


UTF8_BOM = b"\xef\xbb\xbf"


def without_bom(line: bytes, offset: int) -> bytes:
    """``line`` without the UTF-8 byte order mark that starts the file it begins (``offset`` 0).

    Windows editors and PowerShell's ``Out-File -Encoding utf8`` write one; left in, it made the
    first line of such a file a dead letter. A BOM anywhere else is the line's own bytes.
    """
    return line[len(UTF8_BOM):] if offset == 0 and line.startswith(UTF8_BOM) else line


def _without_bom(blocks: Iterator[tuple[list[int], list[bytes]]]) -> Iterator[tuple[list[int], list[bytes]]]:
    for starts, lines in blocks:
        lines[0] = without_bom(lines[0], starts[0])
        yield starts, lines


_PLUS_ONE = (1).__add__  # a line's length and its newline, in C


def _bounded_blocks(chunks: Iterable[bytes], limit: int) -> Iterator[tuple[list[int], list[bytes]]]:
    """The lines of :func:`_bounded_lines` and their byte offsets, two lists for each block of ``chunks`` (none empty).

    Reads whole blocks and splits them in C: a readline() call per line cost
    more than parsing it. A block with no carriage return and no line past
    ``limit`` (nearly all) is handed over as split, with no step per line.
    """
    head = b""  # start of a line that continues in the next block
    cut = False  # the line in ``head`` is already longer than ``limit``
    head_start = 0  # the byte offset of the line in ``head``
    position = 0  # the byte offset of ``block``
    for block in chunks:
        lines = block.split(b"\n")
        tail = lines.pop()
        if lines:
            starts = list(accumulate(map(_PLUS_ONE, map(len, lines)), initial=position))
            starts[0] = head_start
            head_start = starts.pop()  # the tail's
            first = lines[0]
            lines[0] = head if cut else head + first
            if b"\r" in block or b"\r" in head or max(map(len, lines)) >= limit:
                lines = [
                    line[:limit] if len(line) >= limit else line[:-1] if line.endswith(b"\r") else line
                    for line in lines
                ]
            yield starts, lines
            head, cut = b"", False
        position += len(block)
        if not cut:
            head += tail
            if len(head) >= limit:
                head, cut = head[:limit], True
    if head:
        yield [head_start], [head if cut or not head.endswith(b"\r") else head[:-1]]
