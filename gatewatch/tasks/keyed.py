"""The KEYED task (one per keyed partition): the rules keyed by an entity, in event-time order per key."""

from __future__ import annotations

from typing import Any

from gatewatch.tasks.base import TaskOutput


class KeyedTask:
    """Reads ``<group_id>-keyed/<partition>``; writes findings and gathered rows."""

    role = "keyed"

    def __init__(self, config: Any, partition: int, partitions: int) -> None:
        raise NotImplementedError

    @classmethod
    def restore(cls, config: Any, partition: int, partitions: int, snapshot: bytes) -> KeyedTask:
        raise NotImplementedError

    def apply(self, offset: int, value: bytes) -> None:
        raise NotImplementedError

    def take(self) -> TaskOutput:
        raise NotImplementedError

    def snapshot(self) -> bytes:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError
