"""The messages of serve's internal topic ``<group_id>-detect`` and the detect stage's checkpoint body.

Each is an :mod:`ingest.codec` envelope ``[version, kind, body]``:

==================  =======  ==========================================================
kind                version  body
==================  =======  ==========================================================
``events``          1        :class:`EventsMessage`: wall time, input stream, event rows
``progress``        1        :class:`ProgressMessage`: wall time, position and end of
                             every assigned input partition
``detect_state``    1        :class:`DetectState`: a checkpoint (pipeline snapshot and
                             the detect stage's per-input times)
``pipeline``        1        :class:`gatewatch.topology.PipelineState`
==================  =======  ==========================================================

Partitioned detection (issue 14) will add a partition and key to ``events``:
a new version, which a reader of version 1 dead-letters as ``unknown_version``
rather than misreads.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from ingest.codec import EventRow, decode, encode

__all__ = [
    "DetectState", "EventsMessage", "PartitionProgress", "ProgressMessage", "decode_detect_message",
    "decode_detect_state", "encode_detect_state", "encode_events", "encode_progress",
]  # fmt: skip

EVENTS_VERSION = 1
PROGRESS_VERSION = 1
DETECT_STATE_VERSION = 1

# Wall-clock seconds written by an ingest stage; finite, as the idle rules subtract them.
WallSecs = Annotated[float, msgspec.Meta(ge=0.0, le=1e12)]


class EventsMessage(msgspec.Struct, array_like=True, gc=False):
    """Events of one input partition, in offset order; one per partition and poll (split past 5,000)."""

    wall_secs: WallSecs  # when the ingest stage produced it
    stream: str  # the input partition, "topic/partition"
    events: list[EventRow]


class PartitionProgress(msgspec.Struct, array_like=True, gc=False):
    """How far an ingest stage has read one input partition: ``position == end_offset`` is caught up."""

    position: Annotated[int, msgspec.Meta(ge=0)]
    end_offset: Annotated[int, msgspec.Meta(ge=0)]


class ProgressMessage(msgspec.Struct, array_like=True, gc=False):
    """Every assigned input partition whose end is known, after each poll and every second when idle."""

    wall_secs: WallSecs
    partitions: dict[str, PartitionProgress]


_MESSAGES: dict[str, tuple[int, type]] = {"events": (EVENTS_VERSION, EventsMessage),
                                          "progress": (PROGRESS_VERSION, ProgressMessage)}  # fmt: skip


def encode_events(wall_secs: float, stream: str, rows: msgspec.Raw) -> bytes:
    """One ``events`` message: events of one input in offset order, as :func:`~ingest.codec.encode_rows` encoded them.

    The rows are encoded once, when the poll is handled (an event that cannot
    be encoded becomes a dead letter before anything is stored); the message
    around them is made at each send attempt, with that attempt's wall time.
    """
    return encode("events", EVENTS_VERSION, (wall_secs, stream, rows))


def encode_progress(wall_secs: float, partitions: dict[str, tuple[int, int]]) -> bytes:
    """One ``progress`` message: ``{stream: (position, end_offset)}``."""
    return encode("progress", PROGRESS_VERSION, (wall_secs, partitions))


def decode_detect_message(data: bytes) -> EventsMessage | ProgressMessage:
    """A detect-topic message. Raises WireError (``undecodable``, ``unknown_version``, ``unknown_kind``)."""
    return decode(data, _MESSAGES)[1]


class DetectState(msgspec.Struct, array_like=True, gc=False):
    """What the detect stage checkpoints: the pipeline's snapshot and the inputs' wall and event times."""

    pipeline: msgspec.Raw  # Pipeline.snapshot(), itself an envelope
    last_wall: dict[str, float]  # input stream -> ingest wall time of its last events message
    last_ts: dict[str, float]  # input stream -> newest event time it delivered
    caught_up_since: dict[str, float]  # never-delivered stream -> wall time first seen caught up


def encode_detect_state(pipeline_snapshot: bytes, last_wall: dict[str, float], last_ts: dict[str, float],
                        caught_up_since: dict[str, float]) -> bytes:  # fmt: skip
    """A checkpoint's state bytes."""
    body = (msgspec.Raw(pipeline_snapshot), last_wall, last_ts, caught_up_since)
    return encode("detect_state", DETECT_STATE_VERSION, body)


def decode_detect_state(data: bytes) -> DetectState:
    """The inverse of :func:`encode_detect_state`. Raises WireError."""
    return decode(data, {"detect_state": (DETECT_STATE_VERSION, DetectState)})[1]
