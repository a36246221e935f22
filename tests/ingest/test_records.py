"""The record types' contracts that the hot path leans on: origins as dict keys, records the collector skips."""

from __future__ import annotations

import gc
from pathlib import Path

import msgspec
import pytest

from detectors.sample import app_event, gateway_event
from gatewatch.config import load_config
from gatewatch.demo.files import write_demo
from gatewatch.topology import build_parsers, parse_records
from ingest.records import Dataset, Origin, RawRecord
from ingest.sources.files import read_lines


def test_an_origin_is_a_value_usable_as_a_dict_key() -> None:
    first, again = Origin(Dataset.GATEWAY, "gw/0", 7), Origin(Dataset.GATEWAY, "gw/0", 7)
    assert first == again and hash(first) == hash(again)
    assert {first: "x"}[again] == "x"
    assert Origin(Dataset.GATEWAY, "gw/0", 8) not in {first: "x"}
    with pytest.raises(AttributeError):
        first.offset = 8  # type: ignore[misc]


def test_records_and_parsed_events_are_not_tracked_by_the_collector(tmp_path: Path) -> None:
    """The reorder buffer and the join hold hundreds of thousands of events: the collector must not rescan them."""
    demo = write_demo(tmp_path, seed=3, duration_secs=20.0, gateway_format="json", attacks=False)
    parsers = build_parsers(load_config(demo.config_yaml))
    events = []
    for dataset, path in ((Dataset.GATEWAY, demo.gateway_log), (Dataset.APP, demo.app_log)):
        records = list(read_lines(path, dataset, 1 << 20))
        assert records and not any(gc.is_tracked(r) or gc.is_tracked(r.origin) for r in records)
        events += parse_records(parsers, records)[0]
    assert {e.dataset for e in events} == {Dataset.GATEWAY, Dataset.APP}
    assert not any(gc.is_tracked(e) for e in events)
    assert not gc.is_tracked(RawRecord(Origin(Dataset.APP, "app/0", 1), b"{}"))


def test_a_copied_event_changes_only_what_it_names() -> None:
    event = gateway_event(3, request_id="req-3", status=200)
    forged = msgspec.structs.replace(event, status=403)
    assert forged.status == 403 and event.status == 200
    assert msgspec.structs.replace(forged, status=200) == event
    with pytest.raises(AttributeError):
        event.status = 500  # type: ignore[misc]
    assert app_event(3) != event
