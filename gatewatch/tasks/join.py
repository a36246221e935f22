"""The JOIN task (one per requests partition): order, correlate, the rules one record or request proves."""

from __future__ import annotations

from typing import Any

from gatewatch.tasks.base import TaskOutput


class JoinTask:
    """Reads ``<group_id>-requests/<partition>``; writes keyed items and findings."""

    role = "requests"

    def __init__(self, config: Any, partition: int, partitions: int, input_streams: list[str]) -> None:
        raise NotImplementedError

    @classmethod
    def restore(cls, config: Any, partition: int, partitions: int, snapshot: bytes) -> JoinTask:
        raise NotImplementedError

    def apply(self, offset: int, value: bytes) -> None:
        raise NotImplementedError

    def take(self) -> TaskOutput:
        raise NotImplementedError

    def snapshot(self) -> bytes:
        raise NotImplementedError

    def finish(self) -> None:
        raise NotImplementedError
