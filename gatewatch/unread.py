"""Inputs, or the fields rules need of them, that no line gave: a format or unwrap that does not fit.

Each record that does not parse is a dead letter with its reason, but a run in
which not one gateway line was read also raises a ``gateway_bypass`` alert for
every request the app served, and a JSON key named wrong (``code`` where the
gateway writes ``status``) is no dead letter at all: the status-based rules
just see nothing. :class:`InputWatch` notices both from the first lines, once
per input and field: ``replay`` prints its notes after the summary (and exits
1 when an input was not read at all), ``serve`` logs them as soon as the first
:data:`SAMPLE` lines show it (``input_unread``, ``field_unread``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ingest.records import Dataset, DeadLetter, Event

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig

SAMPLE = 1000
"""Dead letters of an input with no event yet, or events of it lacking a field, before serve says so."""

_INPUTS = {Dataset.GATEWAY: "gateway", Dataset.APP: "app"}
_RESPONSE_CODE = re.compile(r"%RESPONSE_CODE%")
_REQUEST_ID = re.compile(r"%(?:REQ|REQUEST_HEADER)\(X-REQUEST-ID[):?]", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class InputNote:
    """What to tell the user about one input (``field`` empty: not one of its lines was read)."""

    dataset: Dataset
    field: str
    message: str


@dataclass(frozen=True, slots=True)
class _Field:
    name: str  # the Event attribute
    key: str  # where the config says it is read, as the user wrote it
    consequence: str


def watched_fields(config: GatewatchConfig) -> dict[Dataset, tuple[_Field, ...]]:
    """The fields rules cannot do without, where the config reads them from JSON (a text format that fits has them)."""
    gateway: list[_Field] = []
    for path, value in _leaves(config.gateway.json_format or {}, "gateway.json_format"):
        if _RESPONSE_CODE.search(value):
            gateway.append(_Field("status", path, "http_4xx_burst and http_5xx_burst see no gateway status"))
        if _REQUEST_ID.search(value):
            gateway.append(_Field("request_id", path, "no gateway record joins an app line: every request the "
                                                      "app served is a gateway_bypass"))  # fmt: skip
    app: list[_Field] = []
    for name, consequence in (
        ("request_id", "no app line joins its gateway record: gateway_bypass cannot see a request the gateway "
                       "never logged (no_gateway_record)"),
        ("status", "the rules that need Billing's answer (token_expired_accepted, token_cross_org, "
                   "token_revoked_used) see none"),
    ):  # fmt: skip
        key = config.app.fields.get(name, name)
        if key:
            app.append(_Field(name, f"app.fields.{name} (key {key!r})", consequence))
    return {Dataset.GATEWAY: tuple(gateway), Dataset.APP: tuple(app)}


def _leaves(mapping: Mapping[str, Any], prefix: str) -> Iterator[tuple[str, str]]:
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            yield from _leaves(value, f"{prefix}.{key}")
        elif isinstance(value, str):
            yield f"{prefix}.{key}", value


class InputWatch:
    """Counts the first lines of each input: which inputs gave no event, which fields no event had."""

    def __init__(self, config: GatewatchConfig, early: bool = False, unwrap_key: str = "{side}.unwrap") -> None:
        """``early`` (serve): say what the first :data:`SAMPLE` lines show as soon as they did, else at
        :meth:`finish`; ``unwrap_key``: the key that unwraps the input's lines (serve over Kafka: its own)."""
        self._early = early
        self._unwrap_key = unwrap_key
        self._fields = watched_fields(config)
        self._events: dict[Dataset, int] = {}
        self._sampled = set(_INPUTS)  # the inputs whose first SAMPLE events are still being counted
        self._dead_letters: dict[Dataset, int] = {}
        self._missing = {dataset: {f.name for f in fields} for dataset, fields in self._fields.items()}
        self._said: set[tuple[Dataset, str]] = set()

    def observe(self, events: Sequence[Event], dead_letters: Iterable[DeadLetter]) -> list[InputNote]:
        """Count one batch; the notes due now (each said once)."""
        counts = self._events
        missing = self._missing
        sampled = self._sampled
        if sampled:  # past the sample of both inputs, nothing per event
            for event in events:
                dataset = event.dataset
                if dataset not in sampled:
                    continue
                seen = counts[dataset] = counts.get(dataset, 0) + 1
                names = missing.get(dataset)
                if names:
                    names.difference_update([n for n in names if getattr(event, n) is not None])
                if seen >= SAMPLE:
                    sampled.discard(dataset)
                    if not sampled:
                        break
        for letter in dead_letters:
            dataset = letter.origin.dataset
            if dataset in _INPUTS and not counts.get(dataset):
                self._dead_letters[dataset] = self._dead_letters.get(dataset, 0) + 1
        return self._due(final=False) if self._early else []

    def finish(self) -> list[InputNote]:
        """At the end of a run: what fewer lines than the sample already show."""
        return self._due(final=True)

    def _due(self, final: bool) -> list[InputNote]:
        notes: list[InputNote] = []
        for dataset, side in _INPUTS.items():
            events = self._events.get(dataset, 0)
            dead_letters = self._dead_letters.get(dataset, 0)
            if not events and dead_letters and (final or dead_letters >= SAMPLE):
                notes += self._note(dataset, "", self._unread_message(dataset, side, dead_letters, final))
            if events and (final or events >= SAMPLE):
                lines = f"the first {events}" if events >= SAMPLE else f"the {events}"
                for field in self._fields[dataset]:
                    if field.name in self._missing[dataset]:
                        message = (f"{field.key} is in none of {lines} {side} lines read: check the key "
                                   f"against a line of the input; until then {field.consequence}")  # fmt: skip
                        notes += self._note(dataset, field.name, message)
        return notes

    def _note(self, dataset: Dataset, field: str, message: str) -> list[InputNote]:
        if (dataset, field) in self._said:
            return []
        self._said.add((dataset, field))
        return [InputNote(dataset, field, message)]

    def _unread_message(self, dataset: Dataset, side: str, dead_letters: int, final: bool) -> str:
        keys = "gateway.format (or gateway.json_format)" if dataset is Dataset.GATEWAY else "app.fields (its ts)"
        consequence = ("gateway_bypass alerts (no_gateway_record) for every request the app served are false"
                       if dataset is Dataset.GATEWAY else "no token or bypass rule sees the app's side")  # fmt: skip
        lines = f"{side} line was read: all {dead_letters} are" if final else \
            f"of the first {dead_letters} {side} lines was read: all were"
        return (f"not one {lines} dead letters. Check {keys} and "
                f"{self._unwrap_key.format(side=side)} against a line of the input (each dead letter's detail "
                f"says why its line does not fit); until then {consequence}")
