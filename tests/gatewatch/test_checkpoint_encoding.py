"""Checkpoint payload encodings: zstd as written today, zlib as written before (still read), others refused."""

from __future__ import annotations

import hashlib
import logging
import uuid
import zlib

import orjson
import pytest
import zstandard

from gatewatch.checkpoint import assemble

KEY = "gw/abc"


def _write(values: dict[bytes, bytes], manifests: list[bytes], payload: bytes, encoding: str, slot: str) -> None:
    checkpoint_id = uuid.uuid4().bytes
    values[f"{KEY}/{slot}/0".encode()] = checkpoint_id + payload
    manifests.append(orjson.dumps({
        "version": 3, "id": checkpoint_id.hex(), "slot": slot, "chunks": 1, "encoding": encoding,
        "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(), "assignment": ["gw-detect/0"],
        "offsets": {"gw-detect/0": 100}, "created_at": 1.0, "config_digest": "d",
    }))  # fmt: skip


STATE = b"\x93\x01\xa4join" + bytes(range(256)) * 64


@pytest.mark.parametrize(("encoding", "payload"), [
    ("zstd", zstandard.ZstdCompressor(level=1).compress(STATE)),  # as CheckpointStore.save_many writes it
    ("zlib", zlib.compress(STATE, 1)),  # as gatewatch wrote it before
    ("raw", STATE),
])  # fmt: skip
def test_every_encoding_written_is_read_back(encoding: str, payload: bytes) -> None:
    values: dict[bytes, bytes] = {}
    manifests: list[bytes] = []
    _write(values, manifests, payload, encoding, "a")
    assert [c.snapshot for c in assemble(KEY, manifests, values)] == [STATE]


def test_an_unknown_encoding_is_skipped_not_misread(caplog: pytest.LogCaptureFixture) -> None:
    values: dict[bytes, bytes] = {}
    manifests: list[bytes] = []
    _write(values, manifests, zstandard.ZstdCompressor().compress(b"older"), "zstd", "a")
    _write(values, manifests, STATE, "brotli", "b")
    with caplog.at_level(logging.WARNING, logger="gatewatch.checkpoint"):
        assert [c.snapshot for c in assemble(KEY, manifests, values)] == [b"older"]
    assert "reason=unknown_encoding" in caplog.text


def test_a_zstd_frame_claiming_a_huge_state_is_refused_before_allocating() -> None:
    values: dict[bytes, bytes] = {}
    manifests: list[bytes] = []
    _write(values, manifests, zstandard.ZstdCompressor().compress(b"older"), "zstd", "a")
    # A frame whose header declares 2**40 bytes of content: never allocated.
    forged = b"\x28\xb5\x2f\xfd" + b"\xe0" + (2**40).to_bytes(8, "little") + b"\x01\x00\x00"
    assert zstandard.frame_content_size(forged) == 2**40
    _write(values, manifests, forged, "zstd", "b")
    assert [c.snapshot for c in assemble(KEY, manifests, values)] == [b"older"]
