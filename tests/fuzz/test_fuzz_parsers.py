"""Every parser over 100k hostile records each: no exception, every record an event or a dead letter,
and no event carries a value outside its field's range (the table in ingest.normalize)."""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import pytest
from conftest import FUZZ_COUNTS
from hostile_records import hostile_records

from gatewatch.config import load_config
from gatewatch.demo.files import write_demo
from gatewatch.topology import build_parsers
from ingest.normalize import MAX_DURATION_MS, MAX_INT64, MAX_TS, MIN_TS
from ingest.parsers import Parser
from ingest.records import Dataset, DeadLetter, Event
from ingest.redact import MARKER_PREFIX

RECORDS_PER_FORMAT = int(os.environ.get("GATEWATCH_FUZZ_RECORDS", "100000"))
REASONS = {
    "invalid_utf8", "truncated", "oversized", "format_mismatch", "invalid_json", "invalid_value",
    "not_an_object", "missing_timestamp", "out_of_range",
}  # fmt: skip
# target -> (demo gateway format, which log, JSON or not)
TARGETS = {
    "envoy_text_default": ("default", "gateway", False),
    "envoy_text_custom": ("text", "gateway", False),
    "envoy_json": ("json", "gateway", True),
    "app_json": ("text", "app", True),
}


def assert_bounded(event: Event) -> None:
    """What no sink, detector or alert writer may ever see."""
    assert MIN_TS <= event.ts < MAX_TS, event
    assert event.status is None or 100 <= event.status <= 599 or event.status == 0, event
    for count in (event.bytes_received, event.bytes_sent):
        assert count is None or 0 <= count <= MAX_INT64, event
    for duration in (event.duration_ms, event.upstream_service_time_ms):
        assert duration is None or (math.isfinite(duration) and 0 <= duration <= MAX_DURATION_MS), event
    for moment in (event.token_exp, event.token_iat):
        assert moment is None or (math.isfinite(moment) and 0 <= moment < MAX_TS), event
    for key, value in event.labels:
        assert isinstance(key, str) and isinstance(value, str), event


@pytest.fixture(scope="module")
def seeds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Parser, list[bytes]]]:
    """Per target: its parser, built from the demo's config, and the demo's real lines to mutate."""
    found: dict[str, tuple[Parser, list[bytes]]] = {}
    for target, (gateway_format, side, _) in TARGETS.items():
        files = write_demo(tmp_path_factory.mktemp(target), seed=5, duration_secs=600.0, requests_per_sec=2.0,
                           gateway_format=gateway_format)  # fmt: skip
        parsers = build_parsers(load_config(files.config_yaml))
        dataset = Dataset.GATEWAY if side == "gateway" else Dataset.APP
        path: Path = files.gateway_log if side == "gateway" else files.app_log
        found[target] = (parsers[dataset], path.read_bytes().splitlines(keepends=True))
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_no_hostile_record_escapes_its_parser(target: str, seeds: dict[str, tuple[Parser, list[bytes]]]) -> None:
    parse, lines = seeds[target]
    dataset = Dataset.GATEWAY if TARGETS[target][1] == "gateway" else Dataset.APP
    events = dead_letters = 0
    escaped: list[tuple[bytes, str]] = []
    started = time.perf_counter()
    for record in hostile_records(lines, dataset, RECORDS_PER_FORMAT, seed=sorted(TARGETS).index(target), is_json=TARGETS[target][2],
                                  stream=f"fuzz-{target}"):  # fmt: skip
        try:
            result = parse(record)
        except Exception as error:  # noqa: BLE001 - the point: collect what escapes, then fail with examples
            escaped.append((record.line[:300], repr(error)))
            continue
        if type(result) is Event:
            events += 1
            assert_bounded(result)
        else:
            assert isinstance(result, DeadLetter) and result.reason in REASONS, result
            # The raw line is kept, but a secret in it (a digit run passing Luhn, say) is redacted first.
            assert result.line == record.line or MARKER_PREFIX.encode() in result.line, result
            assert result.origin == record.origin
            dead_letters += 1
    assert escaped[:5] == []
    assert events + dead_letters == RECORDS_PER_FORMAT
    assert events > RECORDS_PER_FORMAT // 20 and dead_letters > RECORDS_PER_FORMAT // 5  # both paths exercised
    FUZZ_COUNTS[f"parser {target}"] = (RECORDS_PER_FORMAT, events, dead_letters)
    print(f"{target}: {RECORDS_PER_FORMAT} records in {time.perf_counter() - started:.1f} s")
