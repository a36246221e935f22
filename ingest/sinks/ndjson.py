"""NDJSON files: alerts (one object a line) and dead letters, for replay runs and SIEM pickup."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import IO

import orjson

from ingest.alerts import Alert
from ingest.ecs import dead_letter_document
from ingest.sinks.base import Batch

STDOUT = Path("-")
"""The path that names standard output, as in most Unix tools."""


def write_stdout(data: bytes) -> bool:
    """Write ``data`` to stdout; False when its reader is gone (``| head -1``): stdout then goes to /dev/null,
    so nothing raises again, at the next write or at exit."""
    try:
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return False
    return True


class AlertFile:
    """Collects the latest version of every alert and writes them on close, oldest first.

    A replay's alerts keep growing until the input ends, so the file is written
    once, whole, with alerts ordered by (first_seen, rule, entity).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.alerts: dict[str, Alert] = {}
        self.stdout_closed = False

    def write(self, batch: Batch) -> None:
        self.alerts.update(batch.alerts)

    def close(self) -> None:
        ordered = sorted(self.alerts.values(), key=lambda a: (a.first_seen, a.rule, a.entity_type, a.entity_value))
        lines = b"".join(orjson.dumps(alert.to_document()) + b"\n" for alert in ordered)
        if self.path == STDOUT:
            self.stdout_closed = not write_stdout(lines)
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(lines)


class AlertEventFile:
    """Appends each alert lifecycle event (open, updated, resolved) as it is emitted, in emission order."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("wb")

    def write(self, batch: Batch) -> None:
        for event in batch.alert_events:
            self._handle.write(orjson.dumps(event.to_document()) + b"\n")

    def close(self) -> None:
        self._handle.close()


class DeadLetterFile:
    """Appends each dead letter as it comes: reason, detail, origin and the original line.

    ``files`` (stream -> path) adds the path of the log file a letter's stream was read from.
    """

    def __init__(self, path: Path, files: Mapping[str, str] | None = None) -> None:
        self.path = path
        self.files = files or {}
        self.stdout_closed = False  # its reader ended: the rest are not written (replay says so)
        self._handle: IO[bytes] | None = None
        if path != STDOUT:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = path.open("wb")

    def write(self, batch: Batch) -> None:
        lines = b"".join(orjson.dumps(dead_letter_document(letter, self.files.get(letter.origin.stream))) + b"\n"
                         for letter in batch.dead_letters)  # fmt: skip
        if self._handle is not None:
            self._handle.write(lines)
        elif lines and not self.stdout_closed:
            self.stdout_closed = not write_stdout(lines)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
