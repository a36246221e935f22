"""The ALERT task (one): alert book, lifecycle, and the model half of gathering rules."""

from __future__ import annotations

from typing import Any

from gatewatch.tasks.base import TaskOutput


class AlertTask:
    """Reads ``<group_id>-findings/0``; writes alert upserts and lifecycle events to the store batch."""

    role = "findings"

    def __init__(self, config: Any, partitions: int) -> None:
        raise NotImplementedError

    @classmethod
    def restore(cls, config: Any, partitions: int, snapshot: bytes) -> AlertTask:
        raise NotImplementedError

    def apply(self, offset: int, value: bytes) -> None:
        raise NotImplementedError

    def take(self) -> TaskOutput:
        raise NotImplementedError

    def snapshot(self) -> bytes:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError
