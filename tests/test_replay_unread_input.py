"""A replay that read not one line of an input says so, and exits 1.

A gateway format that does not fit the files made every gateway line a dead
letter, so every request the app served raised ``gateway_bypass``; the run
exited 0 with the alerts on top and the cause one count among the dead letters.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import gatewatch.cli
from gatewatch.cli import main
from gatewatch.demo.files import DemoFiles, write_demo
from gatewatch.unread import UNREAD_WARNING_AFTER, UnreadWatch
from ingest.records import Dataset, DeadLetter, Origin

SMALL_RUN = {"seed": 5, "duration_secs": 600.0, "requests_per_sec": 3.0}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return write_demo(tmp_path_factory.mktemp("logs"), **SMALL_RUN)


def _replay(files: DemoFiles, out: Path, config: Path, gateway: Path, app: Path) -> tuple[int, str]:
    with gatewatch.cli.console.capture() as captured:
        code = main(["replay", "--config", str(config), "--gateway", str(gateway), "--app", str(app),
                     "--alerts-out", str(out / "alerts.ndjson"), "--store", "none"])  # fmt: skip
    return code, " ".join(captured.get().split())


def _json_format_config(files: DemoFiles, out: Path) -> Path:
    """The demo's config, its text format swapped for a JSON one (as if the gateway were said to log JSON)."""
    data = yaml.safe_load(files.config_yaml.read_text())
    del data["gateway"]["format"]
    data["gateway"]["json_format"] = {"time": "%START_TIME%", "rid": "%REQ(X-REQUEST-ID)%"}
    data["tokens"]["revoked"] = str(files.config_yaml.parent / data["tokens"]["revoked"])
    path = out / "gatewatch.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_gateway_format_that_fits_no_line_is_named_and_the_run_exits_1(demo: DemoFiles, tmp_path: Path) -> None:
    code, printed = _replay(demo, tmp_path, _json_format_config(demo, tmp_path), demo.gateway_log, demo.app_log)
    lines = len(demo.gateway_log.read_bytes().splitlines())
    assert code == 1
    assert f"not one gateway line was read: all {lines} are dead letters" in printed
    assert "Check gateway.format (or gateway.json_format) and gateway.unwrap" in printed
    assert "not one app line" not in printed


def test_app_lines_that_are_not_the_apps_are_named(demo: DemoFiles, tmp_path: Path) -> None:
    app = tmp_path / "app.log"  # gateway lines (the first left out, or replay takes it for the same file)
    app.write_bytes(b"".join(demo.gateway_log.read_bytes().splitlines(keepends=True)[1:]))
    code, printed = _replay(demo, tmp_path, demo.config_yaml, demo.gateway_log, app)
    assert code == 1
    assert "not one app line was read" in printed and "app.fields (its ts above all) and app.unwrap" in printed
    assert "not one gateway line" not in printed


def test_some_dead_letters_among_read_lines_are_no_warning(demo: DemoFiles, tmp_path: Path) -> None:
    gateway = tmp_path / "gateway.log"
    gateway.write_bytes(b"not a gateway line\n" * 3 + demo.gateway_log.read_bytes())
    code, printed = _replay(demo, tmp_path, demo.config_yaml, gateway, demo.app_log)
    assert code == 0
    assert "format_mismatch" in printed and "not one" not in printed


def _letters(dataset: Dataset, n: int) -> list[DeadLetter]:
    return [DeadLetter(Origin(dataset, "s", i), "format_mismatch", "", b"x") for i in range(n)]


def test_serve_warns_once_per_input_and_only_while_none_of_it_was_read() -> None:
    watch = UnreadWatch()
    assert watch.observe([], _letters(Dataset.GATEWAY, UNREAD_WARNING_AFTER - 1)) == []
    assert watch.observe([], _letters(Dataset.GATEWAY, 1) + _letters(Dataset.APP, 5)) == [
        (Dataset.GATEWAY, UNREAD_WARNING_AFTER)
    ]
    assert watch.observe([], _letters(Dataset.GATEWAY, UNREAD_WARNING_AFTER)) == []  # said once
    assert watch.observe([], _letters(Dataset.INTERNAL, 2 * UNREAD_WARNING_AFTER)) == []  # not an input


def test_serve_says_nothing_of_an_input_that_was_read() -> None:
    from gatewatch.config import GatewatchConfig
    from gatewatch.topology import build_parsers, parse_records
    from ingest.records import RawRecord

    line = (b'{"ts": "2026-03-02T09:00:00Z", "request_id": "r1", "method": "GET", "path": "/", "status": 200}')
    events, _ = parse_records(build_parsers(GatewatchConfig()), [RawRecord(Origin(Dataset.APP, "s", 0), line)])
    assert len(events) == 1
    watch = UnreadWatch()
    assert watch.observe(events, []) == []
    assert watch.observe([], _letters(Dataset.APP, 2 * UNREAD_WARNING_AFTER)) == []
