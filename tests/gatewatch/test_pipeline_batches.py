"""The pipeline hands its stages batches (a release a second at a time, a tick's transactions,
a chunk's arrivals); the outputs must be exactly those of one event at a time, in the same order."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import Any

import pytest

from detectors.alerts import Alert
from gatewatch.config import load_config
from gatewatch.demo.files import DemoFiles, write_demo
from gatewatch.topology import Pipeline
from ingest.records import Dataset, Event, Transaction
from ingest.sources.files import read_lines


class _OneByOne(Pipeline):
    """The pipeline as it was: each arrival, released event and closed transaction offered alone."""

    def _process_event(self, event: Event) -> None:  # overridden: the pipeline then releases one by one
        super()._process_event(event)

    def _arrive(self, arrived: list[Event]) -> None:
        for event in arrived:
            alerts = self.detectors.observe_arrival(event)
            if alerts:
                self._collect(alerts)
        arrived.clear()

    def _emit_transactions(self, transactions: Iterable[Transaction]) -> None:
        for txn in transactions:
            self._batch.transactions.append(txn)
            alerts = self.detectors.observe_transaction(txn)
            if alerts:
                self._collect(alerts)


class _Recording:
    """Wraps a DetectorSet: every call and every alert it returns, in order, batches spelled out item by item."""

    def __init__(self, pipeline: Pipeline, calls: list[Any]) -> None:
        detectors = pipeline.detectors
        for name, single in (("observe_arrival", None), ("observe_event", None), ("observe_transaction", None),
                             ("observe_arrivals", "observe_arrival"), ("observe_events", "observe_event"),
                             ("observe_transactions", "observe_transaction"), ("advance", None)):  # fmt: skip
            setattr(detectors, name, self._wrap(getattr(detectors, name), single or name, single is not None, calls))

    @staticmethod
    def _wrap(hook: Any, name: str, batch: bool, calls: list[Any]) -> Any:
        def recorded(argument: Any) -> list[Alert]:
            items = list(argument) if batch else [argument]
            alerts = hook(argument)
            for item in items:
                calls.append((name, item.id if hasattr(item, "request_id") and name != "advance" else item))
            calls.append(("alerts", [repr(a) for a in alerts]))
            return alerts
        return recorded


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return write_demo(tmp_path_factory.mktemp("demo"), seed=11, duration_secs=600.0, requests_per_sec=8.0)


def _run(pipeline: Pipeline, demo: DemoFiles, chunk: int) -> tuple[list[Any], list[str], list[str], list[str]]:
    calls: list[Any] = []
    _Recording(pipeline, calls)
    streams = {
        str(demo.gateway_log): iter(list(read_lines(demo.gateway_log, Dataset.GATEWAY, 65536))),
        str(demo.app_log): iter(list(read_lines(demo.app_log, Dataset.APP, 65536))),
    }
    for stream in streams:
        pipeline.open_stream(stream)
    events: list[str] = []
    transactions: list[str] = []
    alerts: list[str] = []

    def drain() -> None:
        batch = pipeline.drain()
        events.extend(e.id for e in batch.events)
        transactions.extend(t.id for t in batch.transactions)
        alerts.extend(repr(a) for a in batch.alerts.values())
        alerts.extend(repr(e) for e in batch.alert_events)

    while streams:
        stream = min(streams, key=pipeline.stream_clock)
        records = list(islice(streams[stream], chunk))
        if not records:
            del streams[stream]
            pipeline.close_stream(stream)
        pipeline.feed(records)
        pipeline.process()
        drain()
    pipeline.finish()
    drain()
    return calls, events, transactions, alerts


@pytest.mark.parametrize("chunk", [1, 7, 512])
def test_batches_give_what_one_event_at_a_time_gives(demo: DemoFiles, chunk: int) -> None:
    config = load_config(demo.config_yaml)
    one_by_one = _run(_OneByOne(config), demo, chunk)
    batched = _run(Pipeline(config), demo, chunk)
    # The rules were offered the same items, in the same order (a batch spelled out item by item)...
    hooks = [(name, item) for name, item in one_by_one[0] if name != "alerts"]
    assert hooks == [(name, item) for name, item in batched[0] if name != "alerts"]
    # ...and every alert and output came out the same, in the same order.
    alerts_of = lambda calls: [a for name, found in calls if name == "alerts" for a in found]  # noqa: E731
    assert alerts_of(batched[0]) == alerts_of(one_by_one[0])
    assert alerts_of(batched[0]), "the demo raises alerts"
    assert batched[1:] == one_by_one[1:]
