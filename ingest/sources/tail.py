"""Follow log files as they grow: appends, rotation by rename or copytruncate, ``.gz`` rotations, restarts.

A file is known by the *fingerprint* of its first line (up to FINGERPRINT_BYTES),
as Vector's ``file`` source does, not by its name or inode: a file renamed by
logrotate keeps its fingerprint, so it is read on to its end and the new file at
the old name starts at 0; a rotated file compressed later (``access.log.1.gz``)
gunzips to the same first line, so only what was not read yet is read; a file
truncated in place (copytruncate) gets a new first line, so it is a new file,
while its copy (``access.log.1``, if the globs match it) carries the old
fingerprint and yields only its unread tail. A file with no complete line yet
waits.

Read positions (fingerprint -> bytes consumed) live in a JSON file written
atomically by :meth:`Follower.commit`, which the caller calls only once the
records handed out so far are durable: a restart then neither re-reads nor skips
a line. A record's origin is ``file:<fingerprint>`` and the byte offset of its
line, so ids stay the same whatever the file is called now.

Wrappers are taken off as ``gateway.unwrap`` / ``app.unwrap`` say, with replay's
unwrappers (:func:`ingest.sources.unwrap.compile_unwrap`: ``docker``, ``cri``, or
the JSON key of a shipper's record), split pieces joined. With ``none`` (the
default) container runtimes' wrappers are still removed where a line has one:
CRI (``<time> <stream> P|F <text>``, partial ``P`` pieces joined up to their
``F``) and Docker's json-file (``{"log": "...\\n", ...}``, pieces without the
final newline joined).
"""

from __future__ import annotations

import errno
import glob
import gzip
import logging
import math
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG
from typing import BinaryIO

import orjson

from ingest.errors import SourceError
from ingest.records import Dataset, Origin, RawRecord
from ingest.sources.fingerprint import FINGERPRINT_BYTES, GZIP_MAGIC, head_fingerprint, read_head
from ingest.sources.files import without_bom
from ingest.sources.unwrap import compile_unwrap

__all__ = ["Follower", "LineUnwrap", "check_positions_path", "line_unwrap", "unwrap_container_line"]

log = logging.getLogger(__name__)

_READ_BYTES = 1 << 20
ROTATE_WAIT_SECS = 10.0
NO_FILE_WARNING_SECS = 3600.0
"""How long a file renamed by rotation may keep an unfinished last line: Envoy flushes whole lines every
second and writes on to the renamed file only until it reopens its log."""
_CRI = re.compile(rb"^\S+ (?:stdout|stderr) ([PF])(?:\S*) ?(.*)$", re.S)
_WRAPPER_BYTES = 4096  # as replay's reader (ingest.sources.files): JSON escaping can double a line, plus its wrapper

LineUnwrap = Callable[[bytes], tuple[bytes, bool, float | None]]
"""One line of a followed file in; its text, whether it is complete (not a piece), and the runtime's time out."""


def line_unwrap(mode: str | None) -> LineUnwrap:
    """How the lines of a followed file are unwrapped, for an ``unwrap`` setting.

    ``none``: container runtimes' wrappers where a line has one (:func:`unwrap_container_line`).
    Any other: as replay applies it; a line not wrapped so is handed over as it is, for the parser
    to make a dead letter that shows it.
    """
    unwrap = compile_unwrap(mode)
    if unwrap is None:
        return _detected_container

    def configured(line: bytes) -> tuple[bytes, bool, float | None]:
        found = unwrap(line)
        if found is None:
            return line, True, None
        return found.line, not found.partial, found.created

    return configured


def _detected_container(line: bytes) -> tuple[bytes, bool, float | None]:
    text, complete = unwrap_container_line(line)
    return text, complete, None


def unwrap_container_line(line: bytes) -> tuple[bytes, bool]:
    """(text, complete) of one line as a container runtime wrote it; other lines are returned as they are.

    ``complete`` is False for a piece of a longer line (CRI ``P``, a Docker ``log`` without its newline).
    """
    if line[:8] == b'{"log":"':
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            return line, True
        text = record.get("log") if isinstance(record, dict) else None
        if isinstance(text, str):
            encoded = text.encode()
            return (encoded[:-1], True) if encoded.endswith(b"\n") else (encoded, False)
        return line, True
    match = _CRI.match(line)
    if match is not None:
        return match.group(2), match.group(1) == b"F"
    return line, True


def check_positions_path(path: Path) -> None:
    """SourceError now when the positions file cannot be written there, not at the first commit after start."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        with open(tmp, "wb"):
            pass
        tmp.unlink()
    except OSError as error:
        raise SourceError(f"cannot write the follow positions {path}: {error.strerror}") from None


@dataclass(slots=True)
class _Open:
    """A file being followed: where its next unread byte is, and the pieces of a line being joined."""

    path: str
    dataset: Dataset
    fingerprint: str
    inode: int
    handle: BinaryIO
    offset: int  # bytes consumed (complete lines handed out)
    compressed: bool
    unwrap: LineUnwrap
    raw_limit: int  # the most of one wrapped line kept: longer, its head is handed out (oversized)
    buffer: bytes = b""  # read after ``offset`` but not a complete line yet
    partial: list[bytes] = field(default_factory=list)
    partial_offset: int = -1
    partial_created: float | None = None
    skipping: bool = False  # inside an oversized line whose head was handed out
    done: bool = False  # a .gz file read to its end
    renamed: bool = False  # rotated by rename: its writer moves on to the new file
    idle_since: float | None = None  # when reads began to find nothing new


class Follower:
    """Files matched by globs per dataset, read incrementally; :meth:`poll` then :meth:`commit`."""

    def __init__(
        self,
        patterns: dict[Dataset, list[str]],
        positions_path: Path,
        max_line_bytes: int = 65536,
        positions: dict[str, int] | None = None,
        unwraps: Mapping[Dataset, str | None] | None = None,
    ) -> None:
        """``positions``: start from these instead of the file's (serve without Kafka keeps them in its checkpoint).

        ``unwraps``: each dataset's ``unwrap`` setting (``gateway.unwrap``, ``app.unwrap``; default ``none``).
        """
        self.patterns = patterns
        self.positions_path = positions_path
        self.max_line_bytes = max_line_bytes
        modes = unwraps or {}
        self._unwraps = {dataset: line_unwrap(modes.get(dataset)) for dataset in patterns}
        self._raw_limits = {
            dataset: max_line_bytes + 1 if modes.get(dataset) in (None, "none") else 2 * max_line_bytes + _WRAPPER_BYTES
            for dataset in patterns
        }
        check_positions_path(positions_path)
        self._positions: dict[str, int] = dict(positions) if positions is not None else self._load_positions()
        self._pending: dict[str, int] = {}  # handed out but not committed
        self._open: dict[str, _Open] = {}  # by fingerprint
        self._skipped: set[str] = set()  # matched paths that are no regular file (warned once)
        self._unmatched: dict[str, float] = {}  # pattern -> when it was last said to match no file

    def _load_positions(self) -> dict[str, int]:
        try:
            data = orjson.loads(self.positions_path.read_bytes())
        except FileNotFoundError:
            return {}
        except (OSError, orjson.JSONDecodeError) as error:
            raise SourceError(f"cannot read the follow positions {self.positions_path}: {error}") from None
        if not isinstance(data, dict) or not all(isinstance(v, int) and v >= 0 for v in data.values()):
            raise SourceError(f"{self.positions_path}: not a map of fingerprint -> byte offset")
        return data

    def positions(self) -> dict[str, int]:
        """Fingerprint -> bytes consumed, everything :meth:`poll` handed out included: what :meth:`commit` saves."""
        return {**self._positions, **self._pending}

    def commit(self) -> None:
        """Save the positions of everything :meth:`poll` handed out (call once those records are durable)."""
        if not self._pending:
            return
        self._positions.update(self._pending)
        self._pending = {}
        tmp = self.positions_path.with_name(self.positions_path.name + ".tmp")
        tmp.write_bytes(orjson.dumps(self._positions, option=orjson.OPT_SORT_KEYS))
        os.replace(tmp, self.positions_path)

    def close(self) -> None:
        for opened in self._open.values():
            opened.handle.close()
        self._open = {}

    def poll(self, max_records: int = 10_000) -> list[RawRecord]:
        """The complete lines appended since the last poll, from every matched file (at most about ``max_records``)."""
        self._discover()
        records: list[RawRecord] = []
        for opened in list(self._open.values()):
            if len(records) >= max_records:
                break
            self._read(opened, records, max_records)
        return records

    # -- files ------------------------------------------------------------------

    def _discover(self) -> None:
        seen_inodes = {o.inode: o for o in self._open.values()}
        for dataset, patterns in self.patterns.items():
            for pattern in patterns:
                paths = sorted(glob.glob(pattern))
                if not paths:
                    self._no_file(dataset, pattern)
                for path in paths:
                    try:
                        stat = os.stat(path)
                    except OSError:
                        continue
                    if not S_ISREG(stat.st_mode):
                        self._skip_special(path)  # a FIFO blocks the open, a device never ends
                        continue
                    known = seen_inodes.get(stat.st_ino)
                    if known is not None and not known.compressed:
                        if stat.st_size < known.offset or _fingerprint(path) not in (known.fingerprint, None):
                            self._close(known)  # truncated in place (copytruncate): the content is new
                        else:
                            known.renamed |= known.path != path
                            known.path = path  # the same file, perhaps renamed: read on
                            continue
                    self._try_open(path, dataset, stat.st_ino)

    def _no_file(self, dataset: Dataset, pattern: str) -> None:
        # A misspelt glob read nothing, without a word, while serve said it was ready. Said at the first
        # look and then hourly: a log file may also just not be there yet.
        now = time.monotonic()
        if now - self._unmatched.get(pattern, -math.inf) >= NO_FILE_WARNING_SECS:
            self._unmatched[pattern] = now
            log.warning("follow_no_file dataset=%s pattern=%r hint=\"no file matches it (yet): check the path; a "
                        "relative one is read from serve's working directory\"", dataset.value, pattern)

    def _skip_special(self, path: str) -> None:
        if path not in self._skipped:
            self._skipped.add(path)
            log.warning("follow_skipped path=%s reason=not_a_regular_file", path)

    def _try_open(self, path: str, dataset: Dataset, inode: int) -> None:
        try:
            handle: BinaryIO = open(path, "rb")  # noqa: SIM115 (kept open while followed)
        except OSError:
            return
        compressed = handle.read(2) == GZIP_MAGIC
        handle.seek(0)
        if compressed:
            handle.close()
            try:
                handle = gzip.open(path, "rb")  # type: ignore[assignment]
            except OSError:
                return
        try:
            head = handle.read(FINGERPRINT_BYTES)
        except (OSError, EOFError, gzip.BadGzipFile):
            handle.close()
            return
        fingerprint = head_fingerprint(head)
        if fingerprint is None:
            handle.close()  # no complete first line yet: try again at the next poll
            return
        if fingerprint in self._open:
            handle.close()  # the same content under another name (a rotated copy): one reader is enough
            return
        offset = self._pending.get(fingerprint, self._positions.get(fingerprint, 0))
        try:
            handle.seek(offset)
        except (OSError, EOFError):
            handle.close()
            return
        self._open[fingerprint] = _Open(path, dataset, fingerprint, inode, handle, offset, compressed,
                                        self._unwraps[dataset], self._raw_limits[dataset])  # fmt: skip
        log.info("follow_opened path=%s fingerprint=%s offset=%d compressed=%s", path, fingerprint, offset, compressed)

    def _close(self, opened: _Open) -> None:
        opened.handle.close()
        self._open.pop(opened.fingerprint, None)

    def _read(self, opened: _Open, records: list[RawRecord], max_records: int) -> None:
        if opened.done:
            return
        try:
            chunk = opened.handle.read(_READ_BYTES)
        except (OSError, EOFError, gzip.BadGzipFile) as error:
            log.warning("follow_read_failed path=%s error=%r", opened.path, str(error))
            self._close(opened)
            return
        if not chunk:
            # A rotated .gz does not grow; a file deleted or replaced was read to its end; a renamed one
            # idle for ROTATE_WAIT_SECS has been left by its writer. Either way a last line without its
            # newline will get none: it is handed out as it is (replay does the same).
            if not opened.compressed and _exists_same(opened) and not self._left_by_writer(opened):
                return  # it may grow yet
            if opened.buffer and not opened.skipping:
                stream = f"file:{opened.fingerprint}"
                line = without_bom(opened.buffer, opened.offset)
                text, _, created = opened.unwrap(line.rstrip(b"\r"))
                records.append(RawRecord(Origin(opened.dataset, stream, opened.offset),
                                         text[: opened.raw_limit], created))  # fmt: skip
                opened.offset += len(opened.buffer)
                opened.buffer = b""
                self._pending[opened.fingerprint] = opened.offset
            if opened.compressed:
                opened.done = True
            else:
                self._close(opened)  # its descriptor too: a deleted file's space is freed
            return
        opened.idle_since = None
        data = opened.buffer + chunk
        start = 0
        stream = f"file:{opened.fingerprint}"
        limit = self.max_line_bytes + 1
        raw_limit = opened.raw_limit
        if opened.skipping:  # the rest of an oversized line, already handed out cut
            end = data.find(b"\n")
            if end < 0:
                opened.offset += len(data)
                opened.buffer = b""
                self._pending[opened.fingerprint] = opened.offset
                return
            opened.offset += end + 1
            start, opened.skipping = end + 1, False
        while len(records) < max_records:
            end = data.find(b"\n", start)
            if end < 0:
                break
            line_offset = opened.offset
            raw = without_bom(data[start:end], line_offset)
            opened.offset += end + 1 - start
            start = end + 1
            text, complete, created = opened.unwrap(raw.rstrip(b"\r"))
            if opened.partial or not complete:
                if not opened.partial:
                    opened.partial_offset, opened.partial_created = line_offset, created
                opened.partial.append(text)
                if not complete and sum(len(p) for p in opened.partial) < limit:
                    continue
                text, line_offset, created = b"".join(opened.partial), opened.partial_offset, opened.partial_created
                opened.partial = []
            # Unwrapped, a line is at most its wrapper's length: replay hands it to the parser so (oversized
            # past max_line_bytes, with its size).
            records.append(RawRecord(Origin(opened.dataset, stream, line_offset), text[:raw_limit], created))
        opened.buffer = data[start:]
        if len(opened.buffer) >= raw_limit and len(records) < max_records:
            # A line longer than max_line_bytes (with its wrapper) and no end yet: hand out its head (an
            # "oversized" dead letter), skip the rest up to its newline, never hold it all in memory.
            records.append(RawRecord(Origin(opened.dataset, stream, opened.offset), opened.buffer[:raw_limit]))
            opened.offset += len(opened.buffer)
            opened.buffer, opened.skipping = b"", True
        # Only whole records count as read: a piece being joined is read again after a restart.
        self._pending[opened.fingerprint] = opened.partial_offset if opened.partial else opened.offset


    @staticmethod
    def _left_by_writer(opened: _Open) -> bool:
        """A renamed file with an unfinished last line that has not grown for ROTATE_WAIT_SECS."""
        if not (opened.renamed and opened.buffer):
            return False
        now = time.monotonic()
        if opened.idle_since is None:
            opened.idle_since = now
        return now - opened.idle_since >= ROTATE_WAIT_SECS


def _fingerprint(path: str) -> str | None:
    try:
        return head_fingerprint(read_head(path))
    except OSError:
        return None


def _exists_same(opened: _Open) -> bool:
    try:
        return os.stat(opened.path).st_ino == opened.inode
    except OSError:
        return False
