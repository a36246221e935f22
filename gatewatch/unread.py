"""An input of which every record is a dead letter: a format or unwrap that does not fit it.

Each such record is a dead letter with its reason, but a run where not one
gateway line was read also raises a ``gateway_bypass`` alert for every request
the app served, and a new user sees those first. ``replay`` says so after its
summary and exits 1; ``serve`` logs ``input_unread`` once per input, after
:data:`UNREAD_WARNING_AFTER` dead letters of it with no event.
"""

from __future__ import annotations

from collections.abc import Iterable

from gatewatch.topology import RunStats
from ingest.records import Dataset, DeadLetter, Event

UNREAD_WARNING_AFTER = 1000

_INPUTS = {
    Dataset.GATEWAY: ("gateway", "gateway.format (or gateway.json_format)"),
    Dataset.APP: ("app", "app.fields (its ts above all)"),
}


def unread_inputs(stats: RunStats) -> list[Dataset]:
    """The inputs of a run with dead letters and not one event."""
    return [d for d in _INPUTS if stats.dead_letters_by_dataset.get(d) and d not in stats.datasets_read]


def unread_message(dataset: Dataset, dead_letters: int, unwrap_key: str) -> str:
    """What to tell the user: which input, what to check, and what it does to the alerts meanwhile."""
    name, keys = _INPUTS[dataset]
    unwrap = unwrap_key.format(side=name)
    consequence = ("gateway_bypass alerts (no_gateway_record) for every request the app served are false"
                   if dataset is Dataset.GATEWAY else "no token or bypass rule sees the app's side")  # fmt: skip
    return (f"not one {name} line was read: all {dead_letters} are dead letters. Check {keys} and {unwrap} "
            f"against a line of the input (each dead letter's detail says why its line does not fit); "
            f"until then {consequence}")


class UnreadWatch:
    """Serve's running check: the inputs that crossed :data:`UNREAD_WARNING_AFTER` dead letters with no event."""

    def __init__(self) -> None:
        self._read: set[str] = set()
        self._dead_letters: dict[str, int] = {}
        self._warned: set[str] = set()

    def observe(self, events: Iterable[Event], dead_letters: Iterable[DeadLetter]) -> list[tuple[Dataset, int]]:
        """Count one batch; the inputs to warn about now (each once), with their dead letters so far."""
        if len(self._read) < len(_INPUTS):
            self._read.update({event.dataset for event in events})
        due: list[tuple[Dataset, int]] = []
        for letter in dead_letters:
            dataset = letter.origin.dataset
            if dataset in self._read or dataset in self._warned or dataset not in _INPUTS:
                continue
            count = self._dead_letters[dataset] = self._dead_letters.get(dataset, 0) + 1
            if count >= UNREAD_WARNING_AFTER:
                self._warned.add(dataset)
                due.append((dataset, count))
        return due
