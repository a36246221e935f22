"""An in-memory checkpoint store that keeps :class:`gatewatch.checkpoint.CheckpointStore`'s contract.

:class:`MemoryProducer` stands in for kafka-python's ``KafkaProducer`` where
serve produces to its internal topics. The source and sink doubles (and a
``KafkaConsumer`` double) are in :mod:`ingest.testing`. This one lives
here because a checkpoint (:class:`~gatewatch.checkpoint.Checkpoint`) is
serve's own value. It keeps what the real store promises, without Kafka:

- ``save`` writes into the slot the current manifest does not name, then the
  manifest; :meth:`MemoryCheckpointStore.tear_next_save` makes the next save
  die between the two (a process killed halfway): it raises
  :class:`~ingest.errors.CheckpointError` and the previous checkpoint stays whole;
- ``load`` returns the whole checkpoints among the last two manifests, newest
  first (the previous one only while its slot was not written over since);
- ``resumed_from`` protects the slot of an older checkpoint a caller restored.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import replace

from kafka import TopicPartition
from kafka.errors import KafkaTimeoutError

from gatewatch.checkpoint import Checkpoint, assignment_key
from gatewatch.errors import CheckpointError

__all__ = ["MemoryCheckpointStore", "MemoryProducer"]


class MemoryCheckpointStore:
    """Checkpoints of a consumer group, per assignment, in memory; see the module docstring."""

    def __init__(self, group_id: str = "gatewatch") -> None:
        self.group_id = group_id
        self.topic = f"{group_id}-checkpoints"
        self.saves = 0  # saves that completed
        self.closed = False
        self._manifests: dict[str, list[tuple[int, Checkpoint]]] = {}  # key -> (serial, checkpoint), oldest first
        self._slot_holds: dict[tuple[str, str], int] = {}  # (key, slot) -> serial of the chunks written there
        self._slots: dict[str, str] = {}  # key -> the slot the next save must leave alone
        self._serials = itertools.count(1)
        self._failures: deque[Exception] = deque()
        self._tear = False

    def fail_next(self, *errors: Exception) -> None:
        """Make the next ``save`` or ``load`` calls raise ``errors``, one each, in order (nothing is written)."""
        self._failures.extend(errors)

    def tear_next_save(self) -> None:
        """The next ``save`` writes its chunks, then dies before its manifest."""
        self._tear = True

    def save(self, checkpoint: Checkpoint) -> int:
        """Store ``checkpoint``; return the bytes of state written. Raises CheckpointError."""
        self._check_open()
        if self._failures:
            raise self._failures.popleft()
        key = assignment_key(self.group_id, checkpoint.assignment)
        slot = "b" if self._slots.get(key) == "a" else "a"
        serial = next(self._serials)
        self._slot_holds[(key, slot)] = serial  # the chunks: whatever was in this slot is gone
        if self._tear:
            self._tear = False
            raise CheckpointError(f"checkpoint write to {self.topic} failed: killed before the manifest")
        self._manifests.setdefault(key, []).append((serial, replace(checkpoint, slot=slot)))
        self._slots[key] = slot
        self.saves += 1
        return len(checkpoint.snapshot)

    def load(self, assignment: tuple[str, ...] | list[str]) -> list[Checkpoint]:
        """The whole checkpoints for ``assignment``, newest first (at most two). Raises CheckpointError."""
        self._check_open()
        if self._failures:
            raise self._failures.popleft()
        key = assignment_key(self.group_id, list(assignment))
        manifests = self._manifests.get(key, [])
        found = [cp for serial, cp in reversed(manifests[-2:]) if self._slot_holds.get((key, cp.slot)) == serial]
        if found:
            self._slots[key] = found[0].slot
        elif manifests:
            self._slots[key] = manifests[-1][1].slot
        return found

    def resumed_from(self, checkpoint: Checkpoint) -> None:
        """The caller restored ``checkpoint`` (not the latest): the next save must leave its slot whole."""
        self._slots[assignment_key(self.group_id, list(checkpoint.assignment))] = checkpoint.slot

    def close(self) -> None:
        self.closed = True

    def _check_open(self) -> None:
        if self.closed:
            raise AssertionError("checkpoint store used after close")


class MemoryProducer:
    """kafka-python's ``KafkaProducer`` as serve's stages use it: ``send`` then ``flush``, in memory.

    ``sent`` lists ``(topic, partition, value)`` as acknowledged, in send order;
    ``appended_to`` (a ``MemoryKafkaConsumer``'s ``logs``, optional) receives
    them too, so a stage can read what another produced. ``fail_next(n)``
    makes the next ``n`` sends raise ``KafkaTimeoutError`` (nothing is sent).
    """

    def __init__(self, appended_to: dict[TopicPartition, list[bytes]] | None = None) -> None:
        self.sent: list[tuple[str, int | None, bytes]] = []
        self.flushes = 0
        self.closed = False
        self._logs = appended_to
        self._failures = 0

    def fail_next(self, sends: int = 1) -> None:
        self._failures += sends

    def send(
        self, topic: str, value: bytes, partition: int | None = None, key: bytes | None = None
    ) -> _Acknowledged:
        if self.closed:
            raise AssertionError("send after close")
        if self._failures:
            self._failures -= 1
            raise KafkaTimeoutError("broker away")
        self.sent.append((topic, partition, value))
        if self._logs is not None:
            self._logs.setdefault(TopicPartition(topic, partition or 0), []).append(value)
        return _Acknowledged()

    def flush(self, timeout: float | None = None) -> None:
        self.flushes += 1

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


class _Acknowledged:
    def get(self, timeout: float | None = None) -> None:
        return None
