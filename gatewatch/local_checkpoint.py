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
  shipper's retry of one of them is answered again without being counted twice.

Data only, as every checkpoint of gatewatch: a :class:`LocalState` msgspec
Struct in an :mod:`ingest.codec` envelope, never pickle. A file that does not
decode stops the start with one line naming it (it is never silently replaced:
that would lose the windows and re-read or skip lines).
"""

from __future__ import annotations

import os
from pathlib import Path

import msgspec

from gatewatch.errors import SourceError, WireError
from ingest.codec import decode, encode

__all__ = ["LOCAL_STATE_VERSION", "REMEMBERED_BATCHES", "LocalState", "load_local_state", "save_local_state"]

LOCAL_STATE_VERSION = 1
REMEMBERED_BATCHES = 10_000
_KIND = "local_checkpoint"


class LocalState(msgspec.Struct, array_like=True, gc=False):
    """One checkpoint: the pipeline snapshot and the inputs' positions it covers."""

    snapshot: bytes
    positions: dict[str, int]  # --follow: fingerprint -> bytes consumed
    batches: list[str]  # "<source>:<batch id>" acknowledged, oldest first
    saved_at: float  # wall time, for the logs


def save_local_state(path: Path, state: LocalState) -> int:
    """Write ``state`` to ``path`` atomically and durably; return its size in bytes."""
    data = encode(_KIND, LOCAL_STATE_VERSION, state)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
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
