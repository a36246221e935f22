"""serve's detect-topic messages and checkpoints: typed round trips, poison refused, the upgrade path."""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import uuid
import zlib
from pathlib import Path

import orjson
import pytest

from detectors.sample import app_event, gateway_event
from gatewatch.checkpoint import assemble
from gatewatch.config import parse_config
from gatewatch.errors import WireError
from gatewatch.serve_ingest import EVENTS_PER_MESSAGE, _encode_chunks, _reject_unencodable
from gatewatch.topology import Pipeline
from gatewatch.wire import (
    EventsMessage, IngestProgress, decode_requests_message, encode_events, encode_ingest_progress, encode_poll_events,
)  # fmt: skip
from ingest.codec import encode, encode_rows, events_from_rows
from ingest.records import Dataset, Event, Origin, RawRecord, record_id


class _Marker:
    """A pickle that makes a directory when unpickled: what an attacker would write instead."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def test_events_and_progress_messages_round_trip() -> None:
    events = [gateway_event(i, request_id=f"r-{i}", status=200, response_flags=("UF",)) for i in range(5)]
    stream = events[0].origin.stream
    message = decode_requests_message(encode_events(1_700_000_000.5, stream, encode_rows(events)))
    assert isinstance(message, EventsMessage)
    assert (message.wall_secs, message.stream) == (1_700_000_000.5, stream)
    assert events_from_rows(message.stream, message.events) == events
    progress = decode_requests_message(encode_ingest_progress(1_700_000_001.0, {"gw-gateway/0": (10, 12, 5.5, None)}))
    assert isinstance(progress, IngestProgress)
    assert {s: (p.position, p.end_offset, p.clock, p.last_wall) for s, p in progress.streams.items()} == {
        "gw-gateway/0": (10, 12, 5.5, None)
    }


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (lambda tmp: pickle.dumps(("events", 0.0, "gw/0", [_Marker(tmp / "ran")])), "undecodable"),
        (lambda tmp: bytes(range(256)), "undecodable"),
        (lambda tmp: b"", "undecodable"),
        (lambda tmp: encode("events", 2, (0.0, "gw/0", [])), "unknown_version"),
        (lambda tmp: encode("command", 1, ["rm -rf /"]), "unknown_kind"),
        (lambda tmp: encode("progress", 2, (float("inf"), {})), "undecodable"),
        (lambda tmp: encode("progress", 2, (0.0, {"gw/0": (-1, 3, None, None)})), "undecodable"),
        (lambda tmp: encode("progress", 1, (0.0, {"gw/0": (1, 3)})), "unknown_version"),
    ],
    ids=["pickle", "random", "empty", "version", "kind", "infinite-wall", "negative-offset", "retired-progress-v1"],
)
def test_poison_raises_wire_error_and_runs_nothing(tmp_path: Path, payload: object, reason: str) -> None:
    with pytest.raises(WireError) as caught:
        decode_requests_message(payload(tmp_path))  # type: ignore[operator]
    assert caught.value.reason == reason
    assert not (tmp_path / "ran").exists()


def _pipeline_with_state() -> tuple[Pipeline, bytes]:
    config = parse_config({"trust": {"gateway_networks": ["10.0.0.0/24"]}})
    pipeline = Pipeline(config)
    pipeline.open_stream("example-gateway")
    pipeline.open_stream("example-app")
    events = [gateway_event(i, request_id=f"r-{i}", status=503, route_name="b", source_ip="203.0.113.9")
              for i in range(40)]  # fmt: skip
    events += [app_event(i + 0.2, request_id=f"r-{i}", status=503) for i in range(40)]
    pipeline.order_events(events)
    pipeline.process()
    pipeline.drain()
    return pipeline, pipeline.snapshot()


def test_a_pipeline_snapshot_restores_the_same_state() -> None:
    pipeline, snapshot = _pipeline_with_state()
    restored = Pipeline(pipeline.config)
    restored.restore(snapshot)
    assert restored.snapshot() == snapshot
    assert len(restored.order) == len(pipeline.order) > 0


@pytest.mark.parametrize("damage", ["pickle", "truncated", "version"])
def test_a_snapshot_that_does_not_decode_leaves_the_pipeline_as_it_was(tmp_path: Path, damage: str) -> None:
    pipeline, snapshot = _pipeline_with_state()
    bad = {
        "pickle": pickle.dumps(_Marker(tmp_path / "ran")),
        "truncated": snapshot[: len(snapshot) // 2],
        "version": encode("pipeline", 99, ()),
    }[damage]
    with pytest.raises(WireError):
        pipeline.restore(bad)
    assert pipeline.snapshot() == snapshot
    assert not (tmp_path / "ran").exists()


# -- checkpoints ------------------------------------------------------------------------


KEY = "gw/abc"


def _write(values: dict[bytes, bytes], manifests: list[bytes], state: bytes, slot: str, version: int = 3) -> bytes:
    """Chunks and manifest as CheckpointStore.save writes them; returns the checkpoint id."""
    checkpoint_id = uuid.uuid4().bytes
    payload = zlib.compress(state, 1)
    values[f"{KEY}/{slot}/0".encode()] = checkpoint_id + payload
    manifests.append(orjson.dumps({
        "version": version, "id": checkpoint_id.hex(), "slot": slot, "chunks": 1, "encoding": "zlib",
        "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "assignment": ["gw-detect/0"],
        "offsets": {"gw-detect/0": len(manifests) * 100}, "created_at": 1.0, "config_digest": "d",
    }))  # fmt: skip
    return checkpoint_id


def test_the_latest_checkpoint_comes_first_and_the_previous_one_is_kept_to_fall_back_on() -> None:
    values: dict[bytes, bytes] = {}
    manifests: list[bytes] = []
    _write(values, manifests, b"first", "a")
    _write(values, manifests, b"second", "b")
    _write(values, manifests, b"third", "a")  # overwrites the first's chunk
    found = assemble(KEY, manifests, values)
    assert [(c.snapshot, c.slot, c.offsets["gw-detect/0"]) for c in found] == [(b"third", "a", 200),
                                                                               (b"second", "b", 100)]  # fmt: skip


def test_a_checkpoint_whose_slot_was_overwritten_since_is_skipped() -> None:
    values: dict[bytes, bytes] = {}
    manifests: list[bytes] = []
    _write(values, manifests, b"first", "a")
    _write(values, manifests, b"second", "b")
    values[f"{KEY}/a/0".encode()] = uuid.uuid4().bytes + b"a save killed before its manifest"
    assert [c.snapshot for c in assemble(KEY, manifests, values)] == [b"second"]


def test_a_pickle_checkpoint_of_the_previous_release_is_never_unpickled(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    values: dict[bytes, bytes] = {}
    manifests: list[bytes] = []
    _write(values, manifests, pickle.dumps(_Marker(tmp_path / "ran")), "a", version=2)
    with caplog.at_level(logging.WARNING, logger="gatewatch.checkpoint"):
        assert assemble(KEY, manifests, values) == []
    assert "reason=retired_pickle_format" in caplog.text
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize("manifest", [b"not json", b"[1, 2]", b'{"version": 3}', b'{"version": 3, "id": "zz"}'])
def test_a_malformed_manifest_is_skipped(manifest: bytes) -> None:
    values: dict[bytes, bytes] = {}
    manifests: list[bytes] = []
    _write(values, manifests, b"good", "a")
    assert [c.snapshot for c in assemble(KEY, [*manifests, manifest], values)] == [b"good"]


# -- ingest: what cannot be encoded is a dead letter, with its line ------------------


def test_events_that_cannot_be_encoded_become_dead_letters_before_the_store() -> None:
    def event(offset: int, **values: object) -> Event:
        origin = Origin(Dataset.GATEWAY, "gw/0", offset)
        return Event(record_id(origin), Dataset.GATEWAY, 1e9 + offset, origin, **values)  # type: ignore[arg-type]

    events = [event(i, status=200) for i in range(EVENTS_PER_MESSAGE + 3)]
    events[7] = event(7, bytes_sent=2**70)
    records = [RawRecord(e.origin, f"line {e.origin.offset}".encode()) for e in events]
    chunks, rejected = _encode_chunks({("gw/0", 1): events})
    assert {(stream, partition) for stream, partition, _ in chunks} == {("gw/0", 1)}
    assert [e.origin.offset for e, _ in rejected] == [7]
    messages = [decode_requests_message(encode_poll_events(0.0, [(s, events)])) for s, _, events in chunks]
    decoded = [e for message in messages for part in message.parts for e in part.events]  # type: ignore[union-attr]
    assert decoded == events[:7] + events[8:]
    kept, letters = _reject_unencodable(records, events, [], rejected)
    assert kept == decoded
    assert [(d.reason, d.origin.offset, d.line) for d in letters] == [("invalid_value", 7, b"line 7")]
