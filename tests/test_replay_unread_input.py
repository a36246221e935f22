"""A replay that read not one line of an input says so, and exits 1; one whose JSON key no line has names it.

A gateway format that does not fit the files made every gateway line a dead
letter, so every request the app served raised ``gateway_bypass``; the run
exited 0 with the alerts on top and the cause one count among the dead letters.
A json_format key named wrong made no dead letter at all: the rules needing
that field silently saw nothing.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import gatewatch.cli
from gatewatch.cli import main
from gatewatch.demo.files import DemoFiles, write_demo
from gatewatch.config import GatewatchConfig
from gatewatch.unread import SAMPLE, InputWatch
from ingest.records import Dataset, DeadLetter, Event, Origin

SMALL_RUN = {"seed": 5, "duration_secs": 600.0, "requests_per_sec": 3.0}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return write_demo(tmp_path_factory.mktemp("logs"), **SMALL_RUN)


@pytest.fixture(scope="module")
def demo_json(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return write_demo(tmp_path_factory.mktemp("logs"), gateway_format="json", **SMALL_RUN)


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
    assert "not one app line was read" in printed and "app.fields (its ts) and app.unwrap" in printed
    assert "not one gateway line" not in printed


def test_some_dead_letters_among_read_lines_are_no_warning(demo: DemoFiles, tmp_path: Path) -> None:
    gateway = tmp_path / "gateway.log"
    gateway.write_bytes(b"not a gateway line\n" * 3 + demo.gateway_log.read_bytes())
    code, printed = _replay(demo, tmp_path, demo.config_yaml, gateway, demo.app_log)
    assert code == 0
    assert "format_mismatch" in printed and "not one" not in printed


def test_a_json_key_named_wrong_is_named_with_the_rules_it_blinds(demo_json: DemoFiles, tmp_path: Path) -> None:
    """``code`` where the gateway writes ``status``: no dead letter, and both burst rules saw nothing."""
    data = yaml.safe_load(demo_json.config_yaml.read_text())
    data["gateway"]["json_format"]["http"]["code"] = data["gateway"]["json_format"]["http"].pop("status")
    data["tokens"]["revoked"] = str(demo_json.config_yaml.parent / data["tokens"]["revoked"])
    config = tmp_path / "gatewatch.yaml"
    config.write_text(yaml.safe_dump(data))
    code, printed = _replay(demo_json, tmp_path, config, demo_json.gateway_log, demo_json.app_log)
    assert code == 0  # the lines were read
    assert ("gateway.json_format.http.code is in none of the first 1000 gateway lines read: check the key against "
            "a line of the input; until then http_4xx_burst and http_5xx_burst see no gateway status") in printed
    assert "request_id" not in printed.split("Alerts")[0]
    code, printed = _replay(demo_json, tmp_path, demo_json.config_yaml, demo_json.gateway_log, demo_json.app_log)
    assert code == 0 and "is in none of" not in printed


def _letters(dataset: Dataset, n: int) -> list[DeadLetter]:
    return [DeadLetter(Origin(dataset, "s", i), "format_mismatch", "", b"x") for i in range(n)]


def _app_events(n: int, **fields: object) -> list[Event]:
    origin = Origin(Dataset.APP, "s", 0)
    return [Event(f"e{i}", Dataset.APP, 0.0, origin, **fields) for i in range(n)]  # type: ignore[arg-type]


def test_serve_says_an_input_unread_once_and_only_while_none_of_it_was_read() -> None:
    watch = InputWatch(GatewatchConfig(), early=True)
    assert watch.observe([], _letters(Dataset.GATEWAY, SAMPLE - 1)) == []
    notes = watch.observe([], _letters(Dataset.GATEWAY, 1) + _letters(Dataset.APP, 5))
    assert [(n.dataset, n.field) for n in notes] == [(Dataset.GATEWAY, "")]
    assert f"not one of the first {SAMPLE} gateway lines was read: all were dead letters" in notes[0].message
    assert watch.observe([], _letters(Dataset.GATEWAY, SAMPLE)) == []  # said once
    assert watch.observe([], _letters(Dataset.INTERNAL, 2 * SAMPLE)) == []  # not an input
    assert watch.observe(_app_events(1, request_id="r", status=200), _letters(Dataset.APP, 2 * SAMPLE)) == []


def test_a_field_is_missing_only_if_no_event_of_the_sample_had_it() -> None:
    watch = InputWatch(GatewatchConfig(), early=True)
    assert watch.observe(_app_events(SAMPLE - 1, request_id="r"), []) == []
    notes = watch.observe(_app_events(1, request_id="r"), [])
    assert [(n.dataset, n.field) for n in notes] == [(Dataset.APP, "status")]
    assert "app.fields.status (key 'status')" in notes[0].message
    later = InputWatch(GatewatchConfig(), early=True)
    assert later.observe(_app_events(SAMPLE - 1) + _app_events(1, request_id="r", status=500), []) == []
    assert later.finish() == []


def test_app_events_amid_gateway_events_are_counted() -> None:
    # A review: a batch whose first and last events were of an input already sampled was skipped whole, so app
    # events polled between gateway ones went uncounted and serve would say no app line was read.
    watch = InputWatch(GatewatchConfig(), early=True)
    gateway = [Event(f"g{i}", Dataset.GATEWAY, 0.0, Origin(Dataset.GATEWAY, "g", i), status=200, request_id="r")
               for i in range(SAMPLE)]  # fmt: skip
    assert watch.observe(gateway, []) == []
    mixed = gateway[:1] + _app_events(5, request_id="r", status=200) + gateway[:1]
    assert watch.observe(mixed, _letters(Dataset.APP, 2 * SAMPLE)) == []
