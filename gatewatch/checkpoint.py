"""Durable checkpoints of the detect tasks' event-time state, in a compacted Kafka topic.

A checkpoint pairs a task's ``snapshot()`` (its reorder buffer, open requests,
detector windows, alert book, sequence numbers, ...: :mod:`gatewatch.tasks`)
with the input offset it covers — the Flink / Bytewax shape. Serve's detect
stage (:mod:`gatewatch.serve_detect`) saves one per task, *then* commits the
same offset to its consumer group; whichever process owns the partition next
restores the state and seeks to that offset, so it re-reads only what came
after. Its "assignment" is the task's one partition (``<group_id>-requests/3``,
``<group_id>-findings/0``, ...), so a rebalance never orphans a checkpoint.

Topic ``<group_id>-checkpoints``: one partition, ``cleanup.policy=compact``,
``retention.ms=-1``, ``max.message.bytes`` 64 MiB, ``segment.ms`` 10 minutes (so compaction
reaches the closed segments within minutes, not at 1 GiB). The key is the group id
and a stable hash of the assignment (sorted ``topic/partition`` list), so each
assignment keeps its own latest checkpoint and compaction drops the older ones.

Large snapshots are split into chunks. A checkpoint is written as::

    <key>/<slot>/<i>   chunk i: 16-byte checkpoint id + a slice of the state
    <key>              manifest (JSON): id, slot, chunk count, sha256, offsets, ...

The chunks go to the slot ("a" or "b") the current manifest does *not* name,
and the manifest is written last: a process killed halfway leaves the previous
checkpoint whole. ``load`` reads the topic from the beginning to its end and
returns the whole checkpoints it finds, newest first: the latest manifest's,
and the one before it while its slot is intact (compaction may have removed
its manifest). The caller restores the first that decodes, so a checkpoint
whose state does not decode falls back to the previous one.

The state is typed MessagePack (:mod:`gatewatch.wire`), never pickle, compressed
with zstd (the manifest's ``encoding``; ``zlib``, written before, is still read). Format
history: version 2 held a pickle; such a checkpoint (left by the previous
gatewatch on upgrade) is never read past its manifest: it is logged as
``reason=retired_pickle_format`` and the task rebuilds its state from the
committed offset, as on a first start.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
import zstandard
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError, TopicAlreadyExistsError

from gatewatch.errors import CheckpointError
from ingest.sources.kafka_settings import client_settings

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig, KafkaConfig

__all__ = ["Checkpoint", "CheckpointStore", "assemble", "assignment_key", "config_digest", "ensure_topic"]

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = 64 * 1024 * 1024
SEGMENT_MS = 10 * 60 * 1000
"""The checkpoint topic's ``segment.ms``. Kafka compacts only closed segments, and by default a segment closes at
1 GiB or after 7 days: a flood trial's topic grew to 343 MB in 18 minutes, every interval's state kept. Ten-minute
segments let compaction keep about the last ten minutes of checkpoints and the latest of each key."""
CHUNK_BYTES = 16 * 1024 * 1024  # well under MAX_MESSAGE_BYTES: headroom for key, headers, batch overhead
_ID_BYTES = 16
_FORMAT_VERSION = 3  # 2: pickled state (retired, never read); 3: typed MessagePack state
_PICKLE_FORMAT_VERSION = 2
_TIMEOUT_MS = 30_000
# A state is compressed with zstd at level 1: on a JOIN task's reorder buffer (17 MB of
# MessagePack, 48k events) 24 ms and 3.6 MB, where zlib at its fastest level took 112 ms
# for 4.7 MB; serve's checkpoints were ~13% of its CPU in bench_serve's profile, half of
# it zlib. Checkpoints written as "zlib" by an earlier gatewatch are still read.
_ZSTD_LEVEL = 1
# Bounds what one checkpoint may inflate to (a forged frame could claim any size).
_MAX_STATE_BYTES = 4 * 1024 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A task's state and the offsets it covers, for one assignment (the task's partition)."""

    assignment: tuple[str, ...]  # sorted "topic/partition" streams
    offsets: dict[str, int]  # stream -> next offset to read (last consumed + 1)
    snapshot: bytes  # the state bytes the caller saved (a task's snapshot(), gatewatch.wire)
    created_at: float  # Unix seconds
    config_digest: str = ""  # config_digest() of the pipeline that took it
    slot: str = ""  # where its chunks are (set by load)


def assignment_key(group_id: str, assignment: tuple[str, ...] | list[str]) -> str:
    """``<group_id>/<hash of the sorted assignment>``: the same partitions always give the same key."""
    digest = hashlib.sha256("\n".join(sorted(assignment)).encode()).hexdigest()[:20]
    return f"{group_id}/{digest}"


def config_digest(config: GatewatchConfig) -> str:
    """A hash of every config section the pipeline's state depends on.

    Kept with each checkpoint, so a restore under other settings is logged
    (``state_under_new_config``): the tasks are built from the new config and
    take the old state. Not the revocation list (``tokens``): no state holds it,
    and revoking a token is routine. Only the values set away from their defaults: a release that adds a key
    with a default leaves the digest of an unchanged config as it was (an upgrade trial saw every task log
    ``state_under_new_config`` for a config nobody had touched).
    """
    sections = config.model_dump(mode="json", include={"gateway", "app", "trust", "correlate", "alerts"},
                                 exclude_defaults=True)  # fmt: skip
    sections["detectors"] = config.detectors.model_dump(mode="json", exclude_defaults=True)
    return hashlib.sha256(orjson.dumps(sections, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]


def ensure_topic(kafka: KafkaConfig, topic: str, partitions: int = -1, configs: dict[str, str] | None = None) -> bool:
    """Create ``topic`` unless it exists (-1 partitions: the broker's default); True if it was created."""
    admin = KafkaAdminClient(
        client_id=f"gatewatch-{kafka.group_id}-admin",
        **client_settings(kafka),
    )
    try:
        if topic in admin.list_topics():
            return False
        admin.create_topics(
            {topic: {"num_partitions": partitions, "configs": configs or {}}},
            timeout_ms=_TIMEOUT_MS,
            wait_for_metadata=True,
        )
        log.info("event=topic_created topic=%s partitions=%s", topic, partitions if partitions > 0 else "default")
        return True
    except TopicAlreadyExistsError:
        return False
    finally:
        admin.close()


class CheckpointStore:
    """Saves and loads checkpoints in ``<group_id>-checkpoints``; creates the topic if it is missing."""

    def __init__(self, kafka: KafkaConfig, compress: bool = True) -> None:
        self.group_id: str = kafka.group_id
        self.topic = f"{kafka.group_id}-checkpoints"
        self._kafka = kafka
        self._compress = compress
        self._compressor = zstandard.ZstdCompressor(level=_ZSTD_LEVEL)
        self._slots: dict[str, str] = {}  # key -> slot of its current manifest
        common = client_settings(kafka)
        self._common = common
        try:
            self._ensure_topic()
            self._producer = KafkaProducer(
                client_id=f"gatewatch-{self.group_id}-checkpoints",
                max_request_size=MAX_MESSAGE_BYTES,
                acks="all",
                linger_ms=0,
                **common,
            )
        except KafkaError as error:
            raise CheckpointError(f"cannot open the checkpoint topic {self.topic}: {error}") from None

    def _ensure_topic(self) -> None:
        configs = {"cleanup.policy": "compact", "retention.ms": "-1", "max.message.bytes": str(MAX_MESSAGE_BYTES),
                   "segment.ms": str(SEGMENT_MS)}  # fmt: skip
        ensure_topic(self._kafka, self.topic, partitions=1, configs=configs)

    # -- save -------------------------------------------------------------------

    def save(self, checkpoint: Checkpoint) -> int:
        """Write ``checkpoint`` durably (acks=all); return the bytes of state written. Raises CheckpointError."""
        return self.save_many([checkpoint])

    def save_many(self, checkpoints: list[Checkpoint]) -> int:
        """Write several checkpoints (one per task) with two round trips in all; return the state bytes written.

        Every chunk of every checkpoint is acknowledged before the first
        manifest is sent, so each manifest names whole chunks. Raises CheckpointError (a SourceError).
        """
        manifests: list[tuple[str, str, bytes]] = []
        futures = []
        written = 0
        try:
            for checkpoint in checkpoints:
                key = assignment_key(self.group_id, checkpoint.assignment)
                slot = "b" if self._slots.get(key) == "a" else "a"
                payload = self._compressor.compress(checkpoint.snapshot) if self._compress else checkpoint.snapshot
                checkpoint_id = uuid.uuid4().bytes
                chunks = [payload[i : i + CHUNK_BYTES] for i in range(0, len(payload), CHUNK_BYTES)] or [b""]
                manifest = {
                    "version": _FORMAT_VERSION,
                    "id": checkpoint_id.hex(),
                    "slot": slot,
                    "chunks": len(chunks),
                    "encoding": "zstd" if self._compress else "raw",
                    "bytes": len(payload),
                    "sha256": hashlib.sha256(payload).hexdigest(),
                    "assignment": sorted(checkpoint.assignment),
                    "offsets": checkpoint.offsets,
                    "created_at": checkpoint.created_at,
                    "config_digest": checkpoint.config_digest,
                }
                futures += [
                    self._producer.send(self.topic, key=f"{key}/{slot}/{i}".encode(), value=checkpoint_id + chunk)
                    for i, chunk in enumerate(chunks)
                ]
                manifests.append((key, slot, orjson.dumps(manifest)))
                written += len(payload)
            self._producer.flush(timeout=_TIMEOUT_MS / 1000)
            for future in futures:
                future.get(timeout=0)
            # Only now that every chunk is durable do the manifests point at them.
            sent = [self._producer.send(self.topic, key=key.encode(), value=value) for key, _, value in manifests]
            self._producer.flush(timeout=_TIMEOUT_MS / 1000)
            for future in sent:
                future.get(timeout=0)
        except KafkaError as error:
            raise CheckpointError(f"checkpoint write to {self.topic} failed: {error}") from None
        for key, slot, _ in manifests:
            self._slots[key] = slot
        return written

    # -- load -------------------------------------------------------------------

    def load(self, assignment: tuple[str, ...] | list[str]) -> list[Checkpoint]:
        """The whole checkpoints for ``assignment``, newest first (at most two). Raises CheckpointError."""
        return self.load_many([tuple(assignment)])[tuple(assignment)]

    def load_many(self, assignments: list[tuple[str, ...]]) -> dict[tuple[str, ...], list[Checkpoint]]:
        """:meth:`load` for several assignments, reading the topic once."""
        keys = {assignment_key(self.group_id, list(a)).encode(): tuple(a) for a in assignments}
        values: dict[bytes, bytes] = {}
        manifests: dict[bytes, list[bytes]] = {key: [] for key in keys}  # every manifest value, oldest first
        started = time.monotonic()
        prefix = f"{self.group_id}/".encode()
        consumer = KafkaConsumer(
            group_id=None,
            enable_auto_commit=False,
            client_id=f"gatewatch-{self.group_id}-checkpoint-reader",
            max_partition_fetch_bytes=MAX_MESSAGE_BYTES,
            fetch_max_bytes=MAX_MESSAGE_BYTES,
            check_crcs=False,
            **self._common,
        )
        try:
            partitions = [TopicPartition(self.topic, p) for p in sorted(consumer.partitions_for_topic(self.topic))]
            if not partitions:
                return {a: [] for a in keys.values()}
            consumer.assign(partitions)
            consumer.seek_to_beginning(*partitions)
            end = consumer.end_offsets(partitions, timeout_ms=_TIMEOUT_MS)
            deadline = time.monotonic() + _TIMEOUT_MS / 1000
            while any(consumer.position(tp) < end[tp] for tp in partitions):
                if time.monotonic() > deadline:
                    raise CheckpointError(f"reading {self.topic} did not reach its end in {_TIMEOUT_MS / 1000:.0f}s")
                for messages in consumer.poll(timeout_ms=500).values():
                    for message in messages:
                        if message.key is None or not message.key.startswith(prefix):
                            continue
                        own = manifests.get(message.key)
                        if own is not None:
                            if message.value is None:
                                own.clear()
                            else:
                                own.append(message.value)
                        elif message.value is None:  # tombstone
                            values.pop(message.key, None)
                        elif message.key.rsplit(b"/", 2)[0] in keys:
                            values[message.key] = message.value
        except KafkaError as error:
            raise CheckpointError(f"cannot read checkpoints from {self.topic}: {error}") from None
        finally:
            consumer.close(autocommit=False)
        return {assignment: self._found(key.decode(), manifests[key], values, started)
                for key, assignment in keys.items()}  # fmt: skip

    def _found(self, key: str, manifests: list[bytes], values: dict[bytes, bytes], started: float) -> list[Checkpoint]:
        found = assemble(key, manifests, values)
        if found:
            self._slots[key] = found[0].slot
            checkpoint = found[0]
            log.info(
                "event=checkpoint_loaded key=%s bytes=%d age_secs=%.1f read_secs=%.3f found=%d",
                key, len(checkpoint.snapshot), time.time() - checkpoint.created_at, time.monotonic() - started,
                len(found),
            )  # fmt: skip
        elif manifests:
            # Nothing usable: the next save must not overwrite the slot the latest manifest names.
            try:
                self._slots[key] = orjson.loads(manifests[-1])["slot"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                pass
        return found

    def resumed_from(self, checkpoint: Checkpoint) -> None:
        """The caller restored ``checkpoint`` (not the latest): the next save must leave its slot whole."""
        self._slots[assignment_key(self.group_id, list(checkpoint.assignment))] = checkpoint.slot

    def close(self) -> None:
        try:
            self._producer.close(timeout=5)
        except KafkaError:
            pass


def assemble(key: str, manifests: list[bytes], values: dict[bytes, bytes]) -> list[Checkpoint]:
    """The whole checkpoints among the last two ``manifests`` of ``key``, newest first.

    ``values`` are the latest chunk values by chunk key. A manifest whose
    chunks were overwritten since (a later save into its slot), or that does
    not check out, is skipped with a log line; a manifest of the retired
    pickle format is never followed to its chunks.
    """
    found: list[Checkpoint] = []
    for raw in reversed(manifests[-2:]):
        checkpoint = _assemble_one(key, raw, values)
        if checkpoint is not None:
            found.append(checkpoint)
    return found


def _assemble_one(key: str, raw: bytes, values: dict[bytes, bytes]) -> Checkpoint | None:
    try:
        manifest = orjson.loads(raw)
        version = manifest.get("version")
        if version == _PICKLE_FORMAT_VERSION:
            log.warning("event=checkpoint_ignored key=%s reason=retired_pickle_format "
                        "note=\"never unpickled: state is rebuilt from the committed offset\"", key)  # fmt: skip
            return None
        if version != _FORMAT_VERSION:
            log.warning("event=checkpoint_ignored key=%s reason=unknown_version version=%r", key, str(version)[:20])
            return None
        checkpoint_id = bytes.fromhex(manifest["id"])
        slot = manifest["slot"]
        parts = []
        for i in range(manifest["chunks"]):
            chunk = values.get(f"{key}/{slot}/{i}".encode())
            if chunk is None or chunk[:_ID_BYTES] != checkpoint_id:
                log.warning("event=checkpoint_ignored key=%s reason=missing_chunk chunk=%d", key, i)
                return None
            parts.append(chunk[_ID_BYTES:])
        payload = b"".join(parts)
        if hashlib.sha256(payload).hexdigest() != manifest["sha256"]:
            log.warning("event=checkpoint_ignored key=%s reason=checksum_mismatch", key)
            return None
        snapshot = _decompress(manifest["encoding"], payload)
        if snapshot is None:
            log.warning("event=checkpoint_ignored key=%s reason=unknown_encoding encoding=%r", key,
                        str(manifest["encoding"])[:20])  # fmt: skip
            return None
        return Checkpoint(
            assignment=tuple(manifest["assignment"]),
            offsets={stream: int(offset) for stream, offset in manifest["offsets"].items()},
            snapshot=snapshot,
            created_at=float(manifest["created_at"]),
            config_digest=str(manifest.get("config_digest", "")),
            slot=str(slot),
        )
    except (KeyError, TypeError, ValueError, AttributeError, zlib.error, zstandard.ZstdError) as error:
        log.warning("event=checkpoint_ignored key=%s reason=malformed error=%r", key, str(error)[:200])
        return None


def _decompress(encoding: object, payload: bytes) -> bytes | None:
    """The state of a checkpoint's payload as its manifest's ``encoding`` names it; None for an unknown one."""
    if encoding == "zstd":
        # The frame header names the size, and the buffer is allocated from it: check it first.
        if not 0 <= zstandard.frame_content_size(payload) <= _MAX_STATE_BYTES:
            raise ValueError("zstd frame without a content size, or past the bound")
        return zstandard.ZstdDecompressor().decompress(payload)
    if encoding == "zlib":  # written by gatewatch before zstd
        return zlib.decompress(payload)
    if encoding == "raw":
        return payload
    return None


# A checkpoint may take at most this share of the loop's time: with a big state
# (a long allowed lateness at a high rate) the interval stretches to match.
CHECKPOINT_MAX_TIME_SHARE = 0.05


def checkpoint_interval_secs(configured_secs: float, previous_save_secs: float, last_save_secs: float) -> float:
    """The interval until the next checkpoint: stretched so saving takes at most CHECKPOINT_MAX_TIME_SHARE.

    Stretched on the cheaper of the last two saves: a big state makes every save
    slow, while one slow save alone is a wait (the broker away, a load spike), not
    the state's cost. Stretching on such a wait stopped the checkpoints, and with
    them the detect group's commits, for minutes: a save that waited 24 s through
    a broker restart set the next one 8 minutes later.
    """
    return max(configured_secs, min(previous_save_secs, last_save_secs) / CHECKPOINT_MAX_TIME_SHARE)
