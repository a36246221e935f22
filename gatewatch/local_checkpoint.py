"""The checkpoint file of ``gatewatch serve`` without Kafka: detection state, follow positions, batch ids.

Without Kafka there is no input topic to re-read, so what a restart needs is
saved together, in one file replaced atomically (written beside it, fsynced,
renamed over it):

- the pipeline's snapshot (:meth:`gatewatch.topology.Pipeline.snapshot`: reorder
  buffer, open requests, detector windows, alert book, lifecycle);
- the ``--follow`` read positions those records reached (fingerprint -> bytes), so
  state and positions are one consistent pair: a restart neither re-reads a line
  the state has seen nor skips one it has not;
- the ids of the last :data:`REMEMBERED_BATCHES` HTTP batches acknowledged, so a
  shipper's retry of one of them is answered again without being counted twice;
- the sequence number of the last batch of the :class:`BatchLog` it covers.

Saving the snapshot costs time in proportion to the state (~20 MB and ~1 s for
the 48,000 events 120 s of lateness hold at 400 records/s), too much to wait
for before answering every HTTP batch. So a batch is acknowledged once its
records are stored and the batch is appended (fsynced) to the :class:`BatchLog`
beside the checkpoint, a write-ahead log of what the state has taken in since
the last checkpoint; a restart restores the checkpoint and feeds the logged
batches after it again. Each checkpoint empties the log.

Data only, as every checkpoint of gatewatch: a :class:`LocalState` msgspec
Struct in an :mod:`ingest.codec` envelope, never pickle. A file that does not
decode stops the start with one line naming it (it is never silently replaced:
that would lose the windows and re-read or skip lines).

Both files are created readable by their owner only (0600): the batch log holds
the bodies as posted, before redaction (secrets in URLs and headers).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import BinaryIO

import msgspec

from gatewatch.errors import SourceError, WireError
from ingest.codec import decode, encode

__all__ = [
    "LOCAL_STATE_VERSION", "REMEMBERED_BATCHES", "BatchLog", "LocalState", "LoggedBatch", "check_writable",
    "load_local_state", "save_local_state",
]  # fmt: skip

LOCAL_STATE_VERSION = 1
REMEMBERED_BATCHES = 10_000
_KIND = "local_checkpoint"
_LOG_KIND = "local_batch"


class LocalState(msgspec.Struct, array_like=True, gc=False):
    """One checkpoint: the pipeline snapshot and the inputs' positions it covers."""

    snapshot: bytes
    positions: dict[str, int]  # --follow: fingerprint -> bytes consumed
    batches: list[str]  # "<source>:<batch id>" acknowledged, oldest first
    saved_at: float  # wall time, for the logs
    logged_seq: int = 0  # the BatchLog's batches up to this one are in the snapshot


class LoggedBatch(msgspec.Struct, array_like=True, gc=False):
    """One acknowledged HTTP batch as the pipeline took it in: its records' lines, numbered from 1."""

    seq: int
    source: str
    batch_id: str
    values: list[bytes]


class BatchLog:
    """The write-ahead log of acknowledged HTTP batches: length-prefixed :class:`LoggedBatch` envelopes.

    Only the pipeline thread touches it. A last entry cut short (a crash while
    appending: that batch was never acknowledged) is ignored, and the next
    :meth:`reset` drops it.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self, after_seq: int) -> list[LoggedBatch]:
        """The batches logged after ``after_seq``, in order; SourceError when an entry does not decode."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return []
        except OSError as error:
            raise SourceError(f"cannot read the batch log {self.path}: {error.strerror}") from None
        batches: list[LoggedBatch] = []
        at = 0
        while at + 4 <= len(data):
            size = int.from_bytes(data[at : at + 4], "big")
            if at + 4 + size > len(data):
                break  # cut short by a crash: never acknowledged
            try:
                _, batch = decode(data[at + 4 : at + 4 + size], {_LOG_KIND: (LOCAL_STATE_VERSION, LoggedBatch)})
            except WireError as error:
                raise SourceError(
                    f"the batch log {self.path} does not decode at byte {at} ({error}): move it and the checkpoint "
                    "away to start with empty state"
                ) from None
            if batch.seq > after_seq:
                batches.append(batch)
            at += 4 + size
        return batches

    def append(self, batches: list[LoggedBatch]) -> None:
        """Append ``batches`` and fsync: once this returns they survive a crash."""
        with _open_private(self.path, os.O_APPEND) as handle:
            handle.write(_frames(batches))
            handle.flush()
            os.fsync(handle.fileno())

    def keep_after(self, seq: int) -> None:
        """Drop the batches up to ``seq`` (a checkpoint taken then covers them), atomically and durably."""
        tmp = self.path.with_name(self.path.name + ".tmp")
        with _open_private(tmp, os.O_TRUNC) as handle:
            handle.write(_frames(self.read(seq)))
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, self.path)

    def reset(self) -> None:
        """Empty the log (a checkpoint now covers everything in it)."""
        with _open_private(self.path, os.O_TRUNC) as handle:
            os.fsync(handle.fileno())


def _open_private(path: Path, flags: int) -> BinaryIO:
    """``path`` opened for writing, readable by its owner only, also when an earlier release made it 0644."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "wb")


def _frames(batches: list[LoggedBatch]) -> bytes:
    frames = []
    for batch in batches:
        data = encode(_LOG_KIND, LOCAL_STATE_VERSION, batch)
        frames.append(len(data).to_bytes(4, "big") + data)
    return b"".join(frames)


def check_writable(path: Path) -> None:
    """SourceError now when the checkpoint cannot be written there, not at its first save after start."""
    tmp = path.with_name(path.name + ".tmp")
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR))
        with _open_private(tmp, os.O_TRUNC):
            pass
        tmp.unlink()
    except OSError as error:
        raise SourceError(f"cannot write the checkpoint {path}: {error.strerror}") from None


def save_local_state(path: Path, state: LocalState) -> int:
    """Write ``state`` to ``path`` atomically and durably; return its size in bytes."""
    data = encode(_KIND, LOCAL_STATE_VERSION, state)
    tmp = path.with_name(path.name + ".tmp")
    with _open_private(tmp, os.O_TRUNC) as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    return len(data)


def load_local_state(path: Path) -> LocalState | None:
    """The state saved at ``path``, None when there is none yet; SourceError when it does not decode."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as error:
        raise SourceError(f"cannot read the checkpoint {path}: {error.strerror}") from None
    try:
        _, state = decode(data, {_KIND: (LOCAL_STATE_VERSION, LocalState)})
    except WireError as error:
        raise SourceError(
            f"the checkpoint {path} does not decode ({error}): move it away to start with empty state"
        ) from None
    if any(offset < 0 for offset in state.positions.values()):
        raise SourceError(f"the checkpoint {path} holds a negative read position")
    return state
