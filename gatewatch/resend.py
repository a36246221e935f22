"""``gatewatch resend``: forwarders' dead-lettered alert events sent again, once the receiver is back.

A forwarder's dead-letter file is only ever appended to (by ``serve``, ``replay`` and this command),
so a run reads the complete lines past the offset the last run reached, kept beside the file in
``<file>.resent`` with the file's inode (a new file is read from its start). Each event goes to
the forwarder its record names, through that forwarder's filter and retries as live; one that
fails again is appended to the forwarder's dead-letter file, for a later run. A receiver still
down (``retries_exhausted``) stops the file at that event: the rest waits for the next run.

The offset is saved after every event, so a run killed part way sends one event again at most:
with its event id, which receivers drop when they hold it (see "Lifecycle" in the README). Two
runs on one file at once are refused (a lock on the file; ``serve`` appends without one).
"""

from __future__ import annotations

import fcntl
import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from detectors.base import Severity
from gatewatch.config import GatewatchConfig
from gatewatch.errors import GatewatchError
from gatewatch.forward import ForwarderRunner, build_forwarders
from ingest.alerts import AlertEvent


@dataclass
class FileResent:
    """What one run did with one dead-letter file: outcome counts by forwarder, and why it stopped."""

    path: Path
    outcomes: dict[str, Counter[str]] = field(default_factory=dict)  # forwarder -> outcome -> events
    problems: list[str] = field(default_factory=list)  # the first unreadable records, by byte offset
    stopped: str | None = None  # a receiver still down: the rest of the file waits for the next run

    def count(self, forwarder: str, outcome: str) -> None:
        self.outcomes.setdefault(forwarder, Counter())[outcome] += 1

    @property
    def complete(self) -> bool:
        """Whether every record read was sent (or filtered out, or a repeat of one sent)."""
        done = {"sent", "filtered", "repeated"}
        return self.stopped is None and all(set(counts) <= done for counts in self.outcomes.values())


_MAX_PROBLEMS = 5


def resend(config: GatewatchConfig, dry_run: bool = False) -> list[FileResent]:
    """Send again what every configured forwarder's dead-letter file holds past the last run's offset.

    ``dry_run``: read and count (outcome ``pending``), send nothing, save nothing.
    """
    forwarders = build_forwarders(config, threaded=False, sending=not dry_run)
    if forwarders is None:
        raise GatewatchError("nothing to resend: the config has no forward section")
    runners = {runner.name: runner for runner in forwarders.runners}
    paths = dict.fromkeys(runner.dead_letter_path for runner in forwarders.runners)  # in config order, once
    try:
        return [_resend_file(path, runners, dry_run) for path in paths]
    finally:
        forwarders.close()


def _resend_file(path: Path, runners: dict[str, ForwarderRunner], dry_run: bool) -> FileResent:
    result = FileResent(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return result
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise GatewatchError(f"{path}: another gatewatch resend is working on it; wait for it to end") from None
        progress = _Progress(path, os.fstat(handle.fileno()).st_ino)
        seen: set[tuple[str, str]] = set()
        for offset, end, line in _lines_from(handle, progress.offset):
            forwarder, event = _read(line, offset, result)  # (name, None): counted unreadable
            outcome = "" if event is None else _send(forwarder, event, runners, seen, dry_run)
            if outcome:
                result.count(forwarder, outcome)
            if not dry_run:
                progress.save(end)  # an event that failed again was appended: the next run reads it there
            if outcome == "retries_exhausted":
                result.stopped = f"forwarder {forwarder}'s receiver is still failing"
                break
    return result


def _send(forwarder: str, event: AlertEvent, runners: dict[str, ForwarderRunner], seen: set[tuple[str, str]],
          dry_run: bool) -> str:  # fmt: skip
    """What became of one dead letter's event: ``sent``, a dead-letter reason, or why it was not sent."""
    runner = runners.get(forwarder)
    if runner is None:
        return "unknown_forwarder"  # left in the file, for a config that names it
    if (forwarder, event.id) in seen:
        return "repeated"
    if not runner.wants(event):
        return "filtered"
    seen.add((forwarder, event.id))
    return "pending" if dry_run else runner.deliver(event)


def _read(line: bytes, offset: int, result: FileResent) -> tuple[str, AlertEvent | None]:
    """The forwarder a dead letter names and its event; (name, None) after noting why a line is unreadable."""
    forwarder = "?"
    try:
        record: Any = orjson.loads(line)
        forwarder = record["forwarder"]
        if not isinstance(forwarder, str):
            raise ValueError("the forwarder is not a name")
        document = record["event"]
        if not isinstance(document, dict):
            raise ValueError("the event is not a JSON object")
        Severity(str(document.get("severity")))  # ValueError for one the filters and formats would not know
        return forwarder, AlertEvent.from_document(document)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as error:
        problem = f"field {error.args[0]!r} missing" if isinstance(error, KeyError) else str(error)
        result.count(forwarder, "unreadable")
        if len(result.problems) < _MAX_PROBLEMS:
            result.problems.append(f"byte {offset}: {problem}")
        return forwarder, None


def _lines_from(handle: IO[bytes], offset: int) -> Iterator[tuple[int, int, bytes]]:
    """``(start, end, line)`` of each complete line from ``offset`` to the end the file has now.

    What is appended meanwhile (an event that failed again) is for the next run, and so is a last
    line without its newline (being written).
    """
    size = os.fstat(handle.fileno()).st_size
    handle.seek(offset)
    for line in handle:
        if offset + len(line) > size or not line.endswith(b"\n"):
            return
        yield offset, offset + len(line), line
        offset += len(line)


class _Progress:
    """The offset a file has been resent to, in ``<file>.resent``: ``{"inode": ..., "offset": ...}``."""

    def __init__(self, path: Path, inode: int) -> None:
        self.state_path = path.with_name(path.name + ".resent")
        self.inode = inode
        self.offset = 0
        try:
            state = orjson.loads(self.state_path.read_bytes())
        except FileNotFoundError:
            return
        except orjson.JSONDecodeError as error:
            raise GatewatchError(f"{self.state_path}: not a resend offset ({error}); delete it to resend the "
                                 f"whole of {path}") from None  # fmt: skip
        if not isinstance(state, dict):
            raise GatewatchError(f"{self.state_path}: not a resend offset; delete it to resend the whole of {path}")
        offset = state.get("offset")
        # Another inode, or a file cut shorter than the offset (copytruncate): a new file, read from its start.
        if state.get("inode") == inode and isinstance(offset, int) and 0 <= offset <= path.stat().st_size:
            self.offset = offset

    def save(self, offset: int) -> None:
        part = self.state_path.with_name(self.state_path.name + ".part")
        part.write_bytes(orjson.dumps({"inode": self.inode, "offset": offset}))
        part.replace(self.state_path)
        self.offset = offset
