"""Checkpoints as gatewatch wrote them before state v2: buffered events in EventTables, not Event arrays.

A v2 state made into v1 here holds the same bytes the previous release wrote for
the same state, bar a whole-second tick it wrote as an integer (checked by hand
on a pipeline holding 43,713 events, PYTHONHASHSEED fixed): ``pack_events`` and
``EventTable`` are the previous release's, kept to read v1.
"""

from __future__ import annotations

import msgspec
from msgspec.structs import replace

from gatewatch.topology import PIPELINE_STATES
from gatewatch.wire import JoinState, KeyedState, decode_task_state, encode_task_state
from ingest.codec import decode_event_state, decode_versioned, encode, encode_state, pack_events


def _table(events: msgspec.Raw) -> msgspec.Raw:
    return msgspec.Raw(encode_state(pack_events(decode_event_state(events, packed=False))))


def pipeline_as_v1(snapshot: bytes | msgspec.Raw) -> bytes:
    """A :meth:`Pipeline.snapshot` (v2) as a ``pipeline`` v1 snapshot."""
    _, version, state = decode_versioned(snapshot, PIPELINE_STATES)
    assert version == 2
    order = replace(state.order, events=_table(state.order.events), held=_table(state.order.held))
    correlator = replace(state.correlator, events=_table(state.correlator.events))
    return encode("pipeline", 1, replace(state, order=order, correlator=correlator))


def task_state_as_v1(snapshot: bytes) -> bytes:
    """A task's checkpoint as the previous release wrote it: a JOIN task's pipeline v1, a ``keyed_state`` v1."""
    _, state = decode_task_state(snapshot)
    if isinstance(state, JoinState):
        return encode_task_state(replace(state, pipeline=msgspec.Raw(pipeline_as_v1(state.pipeline))))
    if isinstance(state, KeyedState):
        events, txn_events = _table(state.events), _table(state.txn_events)
        return encode("keyed_state", 1, replace(state, events=events, txn_events=txn_events))
    return snapshot  # the ALERT task's holds no events: unchanged
