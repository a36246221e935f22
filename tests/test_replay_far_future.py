"""One record from the far future among the demo's traffic moves no clock (ingest/order.py).

Before the guard, one Billing line dated 9999 (or a month ahead) set the app
input's clock: once the gateway log ended, the watermark jumped with it, the
rest of the app log arrived "late", and every request it served looked like a
gateway bypass.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path

import orjson
import pytest

import gatewatch.cli
from gatewatch.cli import main
from gatewatch.demo.files import DemoFiles, write_demo

SMALL_RUN = {"seed": 11, "duration_secs": 600.0, "requests_per_sec": 8.0}


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoFiles:
    return write_demo(tmp_path_factory.mktemp("logs"), **SMALL_RUN)


@pytest.fixture(scope="module")
def reference(demo: DemoFiles, tmp_path_factory: pytest.TempPathFactory) -> tuple[list[dict], int]:
    """The undisturbed run's alerts and late count."""
    out = tmp_path_factory.mktemp("reference")
    alerts, summary = _replay(demo, demo.app_log, out)
    return alerts, _late(summary)


def _replay(files: DemoFiles, app_log: Path, out: Path, config: Path | None = None) -> tuple[list[dict], str]:
    """The alerts and the printed summary of one replay."""
    alerts = out / "alerts.ndjson"
    console = gatewatch.cli.console
    with console.capture() as captured:
        code = main([
            "replay", "--config", str(config or files.config_yaml), "--gateway", str(files.gateway_log),
            "--app", str(app_log), "--alerts-out", str(alerts), "--store", "none",
        ])  # fmt: skip
    assert code == 0
    return [orjson.loads(line) for line in alerts.read_bytes().splitlines()], captured.get()


def _with_line(files: DemoFiles, out: Path, when: str, shift: timedelta | None, year: int | None = None) -> Path:
    """The demo's app log with one of its own lines re-dated, placed first or in the middle."""
    lines = files.app_log.read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    record = orjson.loads(lines[middle])
    moment = datetime.fromisoformat(record["ts"].replace("Z", "+00:00"))
    moment = moment.replace(year=year) if year else moment + (shift or timedelta())
    record["ts"] = moment.isoformat().replace("+00:00", "Z")
    record["request_id"] = "far-future-1"
    bad = orjson.dumps(record) + b"\n"
    lines.insert(0 if when == "first" else middle, bad)
    path = out / f"app-{when}.log"
    path.write_bytes(b"".join(lines))
    return path


def _late(summary: str) -> int:
    return int(summary.split(" late ", 1)[1].split()[0])


@pytest.mark.parametrize("when", ["first", "middle"])
@pytest.mark.parametrize(("shift", "year"), [(timedelta(days=30), None), (None, 9999)], ids=["month-ahead", "9999"])
def test_a_far_future_line_changes_no_alert_and_makes_nothing_late(
    demo: DemoFiles, reference: tuple[list[dict], int], tmp_path: Path,
    when: str, shift: timedelta | None, year: int | None,
) -> None:  # fmt: skip
    alerts, summary = _replay(demo, _with_line(demo, tmp_path, when, shift, year), tmp_path)
    assert alerts == reference[0]
    assert _late(summary) == reference[1]
    if year is None:  # inside 2000..2100: held by the order, stored, counted
        assert "far-future events 1" in summary
    else:  # outside: refused by normalize
        assert "out_of_range 1" in summary


def test_without_the_guard_the_same_line_turns_the_rest_late(demo: DemoFiles, tmp_path: Path) -> None:
    """The check above can fail: with the guard opened wide, the month-ahead line does damage once the gateway
    log has ended and the app log goes on (here the gateway log is cut a quarter short): the watermark jumps to
    it, and the app lines still in the order's lateness window come late. (Before replay read its inputs by
    their median time, not their newest, the whole second half of the app log came late.)"""
    config = tmp_path / "open.yaml"
    text = demo.config_yaml.read_text().replace("revoked: revoked.csv", f"revoked: {demo.revoked_csv}")
    config.write_text(text + "correlate:\n  max_future_secs: 31536000\n")  # a year: wider than the line's month
    lines = demo.gateway_log.read_bytes().splitlines(keepends=True)
    (tmp_path / "gateway.log").write_bytes(b"".join(lines[: len(lines) * 3 // 4]))
    files = replace(demo, gateway_log=tmp_path / "gateway.log")
    app = _with_line(demo, tmp_path, "middle", timedelta(days=30), None)
    (tmp_path / "guarded").mkdir()
    (tmp_path / "open").mkdir()
    guarded_alerts, guarded = _replay(files, app, tmp_path / "guarded")
    opened_alerts, opened = _replay(files, app, tmp_path / "open", config)
    print(f"far-future line without the guard: late {_late(opened)}, alerts {len(opened_alerts)} "
          f"(with it: late {_late(guarded)}, alerts {len(guarded_alerts)})")
    assert _late(opened) > 0 == _late(guarded)
    assert len(opened_alerts) > len(guarded_alerts)


def test_a_gateway_line_dated_minutes_ahead_makes_nothing_late(
    demo: DemoFiles, reference: tuple[list[dict], int], tmp_path: Path
) -> None:
    """Inside the guard's day: a clock step on the gateway host. Replay read the next input by its newest time, so
    the app log was read past the gateway lines still to come, and those came late: a verification trial counted
    1,625 late lines and ~1,240 false no_gateway_record alerts, where serve on the same files had none."""
    lines = demo.gateway_log.read_bytes().splitlines(keepends=True)
    middle = len(lines) // 2
    stamp = lines[middle].split(b"[", 1)[1].split(b"]", 1)[0].decode()
    ahead = datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(minutes=5)
    moved = lines[middle].replace(stamp.encode(), ahead.isoformat(timespec="milliseconds").replace("+00:00", "Z").encode())
    request_id = moved.split(b'" "')[2]  # the default Emissary format: method/path, then XFF, UA, request id
    lines.insert(middle, moved.replace(request_id, b"clock-step-1"))  # a copy of its own: no Billing line for it
    gateway = tmp_path / "gateway.log"
    gateway.write_bytes(b"".join(lines))
    alerts, summary = _replay(replace(demo, gateway_log=gateway), demo.app_log, tmp_path)
    assert _late(summary) == reference[1]
    assert alerts == reference[0]
