"""Small builders for the events and transactions in detectors' examples and tests."""

from __future__ import annotations

import itertools
from typing import Any

from ingest.records import Dataset, Event, Origin, Transaction, record_id

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z: examples count seconds from here
_offsets = itertools.count()


def _event(dataset: Dataset, ts: float, fields: dict[str, Any]) -> Event:
    origin = Origin(dataset, f"example-{dataset.name.lower()}", next(_offsets))
    return Event(id=record_id(origin), dataset=dataset, ts=T0 + ts, origin=origin, **fields)


def gateway_event(ts: float, **fields: Any) -> Event:
    """A gateway access-log event ``ts`` seconds after :data:`T0`."""
    return _event(Dataset.GATEWAY, ts, fields)


def app_event(ts: float, **fields: Any) -> Event:
    """A Billing app-log event ``ts`` seconds after :data:`T0`."""
    return _event(Dataset.APP, ts, fields)


def transaction(request_id: str, gateway: tuple[Event, ...] = (), app: tuple[Event, ...] = ()) -> Transaction:
    return Transaction(request_id=request_id, gateway=tuple(gateway), app=tuple(app))
