"""Feeding one line to a parser, as the parser tests all do."""

from __future__ import annotations

from collections.abc import Callable

from ingest.parsers import Parser
from ingest.records import DeadLetter, Event, Origin, RawRecord


class LineHelpers:
    """``record``, ``event`` and ``dead`` for lines read at ``origin``."""

    def __init__(self, origin: Origin) -> None:
        self.origin = origin

    def record(self, line: bytes | str) -> RawRecord:
        return RawRecord(self.origin, line.encode() if isinstance(line, str) else line)

    def event(self, parser: Parser, line: bytes | str) -> Event:
        result = parser(self.record(line))
        assert isinstance(result, Event), result
        return result

    def dead(self, parser: Parser, line: bytes | str) -> DeadLetter:
        result = parser(self.record(line))
        assert isinstance(result, DeadLetter), result
        return result


def line_helpers(origin: Origin) -> tuple[
    Callable[[bytes | str], RawRecord], Callable[[Parser, bytes | str], Event], Callable[[Parser, bytes | str], DeadLetter]
]:
    helpers = LineHelpers(origin)
    return helpers.record, helpers.event, helpers.dead
