"""Fuzzing counts, printed at the end of the run so CI shows how many hostile records were tried."""

from __future__ import annotations

from typing import Any

FUZZ_COUNTS: dict[str, tuple[int, int, int]] = {}
"""Per target: (records, events, dead letters), filled by the fuzz tests."""


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not FUZZ_COUNTS:
        return
    terminalreporter.section("hostile-input fuzzing")
    for target, (records, events, dead_letters) in sorted(FUZZ_COUNTS.items()):
        terminalreporter.write_line(
            f"{target}: {records} hostile records -> {events} events + {dead_letters} dead letters, no exception"
        )
