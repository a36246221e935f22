"""``gatewatch replay`` end to end: generated attacks in custom Envoy formats, found with default settings."""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb
import orjson
import pytest

from gatewatch.cli import main
from gatewatch.demo.files import DemoFiles, write_demo

# Ten minutes at 8 req/s holds every incident at full size and replays in seconds.
SMALL_RUN = {"seed": 11, "duration_secs": 600.0, "requests_per_sec": 8.0}


def run_replay(files: DemoFiles, out: Path, store: str) -> list[dict]:
    alerts_path = out / "alerts.ndjson"
    code = main([
        "replay", "--config", str(files.config_yaml), "--gateway", str(files.gateway_log),
        "--app", str(files.app_log), "--alerts-out", str(alerts_path), "--store", store,
    ])  # fmt: skip
    assert code == 0
    return [orjson.loads(line) for line in alerts_path.read_bytes().splitlines()]


def verdict(files: DemoFiles, alerts: list[dict]) -> tuple[list, list, list]:
    plan = files.expected.scenario
    raised = [(a["rule"], a["entity"]["type"], a["entity"]["value"]) for a in alerts]
    return plan.missing(raised), plan.false_positives(raised), plan.unexpected(raised)


@pytest.mark.parametrize("gateway_format", ["text", "json", "json_strings", "default"])
def test_replay_finds_every_injected_incident_and_nothing_benign(tmp_path: Path, gateway_format: str) -> None:
    files = write_demo(tmp_path / "logs", gateway_format=gateway_format, **SMALL_RUN)
    alerts = run_replay(files, tmp_path, "none")
    missing, false_positives, unexplained = verdict(files, alerts)
    assert missing == [] and false_positives == [] and unexplained == []
    rules = {a["rule"] for a in alerts}
    expected_rules = {i.rule for i in files.expected.scenario.expected()}
    assert expected_rules <= rules
    assert {"gateway_bypass", "token_replay", "http_5xx_burst"} <= expected_rules


def test_replay_stores_everything_once_and_dead_letters_bad_lines(tmp_path: Path) -> None:
    files = write_demo(tmp_path / "logs", gzip=True, **SMALL_RUN)
    store = tmp_path / "store.duckdb"
    alerts = run_replay(files, tmp_path, f"duckdb:{store}")
    with gzip.open(files.gateway_log) as g, gzip.open(files.app_log) as a:
        lines = sum(1 for _ in g) + sum(1 for _ in a)
    con = duckdb.connect(str(store), read_only=True)
    events = con.execute("select count(*), count(distinct id) from events").fetchone()
    dead = con.execute("select reason, count(*) from dead_letters group by reason order by reason").fetchall()
    stored_alerts = con.execute("select id, rule, count from alerts order by id").fetchall()
    dead_files = {row[0] for row in con.execute("select distinct path from dead_letters join files using (stream)")
                  .fetchall()}  # fmt: skip
    con.close()
    # An upgrade trial: the stored dead letters named a file:<fingerprint> stream only, not the file to look in.
    assert dead_files == {str(files.gateway_log), str(files.app_log)}
    assert events[0] == events[1]
    assert events[0] + sum(n for _, n in dead) == lines
    assert dict(dead) == {"invalid_json": 1, "invalid_utf8": 2, "oversized": 2, "truncated": 1}
    assert sorted((a["id"], a["rule"], a["count"]) for a in alerts) == stored_alerts
    dead_letter_file = tmp_path / "alerts.dead-letters.ndjson"
    letters = [orjson.loads(line) for line in dead_letter_file.read_bytes().splitlines()]
    assert len(letters) == 6 and all(letter["stream"] and letter["offset"] > 0 for letter in letters)


def test_replay_twice_into_one_store_does_not_duplicate(tmp_path: Path) -> None:
    files = write_demo(tmp_path / "logs", **SMALL_RUN)
    store = tmp_path / "store.duckdb"
    first = run_replay(files, tmp_path, f"duckdb:{store}")
    second = run_replay(files, tmp_path, f"duckdb:{store}")
    assert first == second
    con = duckdb.connect(str(store), read_only=True)
    counts = con.execute(
        "select (select count(*) from events), (select count(*) from transactions), (select count(*) from alerts)"
    ).fetchone()
    con.close()
    assert counts[2] == len(first)
    assert counts[0] == sum(files.expected.records.values())


def test_input_order_does_not_change_the_alerts(tmp_path: Path) -> None:
    files = write_demo(tmp_path / "logs", **SMALL_RUN)
    forward = run_replay(files, tmp_path, "none")
    code = main([
        "replay", "--config", str(files.config_yaml), "--app", str(files.app_log),
        "--gateway", str(files.gateway_log), "--alerts-out", str(tmp_path / "swapped.ndjson"), "--store", "none",
    ])  # fmt: skip
    assert code == 0
    swapped = [orjson.loads(line) for line in (tmp_path / "swapped.ndjson").read_bytes().splitlines()]
    assert swapped == forward


def test_bad_config_is_refused_with_the_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("detectors:\n  http_4xx_burst:\n    min_errors: many\n")
    log = tmp_path / "g.log"
    log.write_text("")
    code = main(["replay", "--config", str(config), "--gateway", str(log), "--alerts-out", str(tmp_path / "a")])
    assert code == 2
    assert "detectors.http_4xx_burst.min_errors" in capsys.readouterr().err


def test_alerts_out_dash_writes_the_alerts_to_stdout_and_the_rest_beside_them_in_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    # A trial: --alerts-out - made a file named "-" (and "-.dead-letters.ndjson"), and stdout stayed empty.
    files = write_demo(tmp_path / "logs", **SMALL_RUN)
    expected = run_replay(files, tmp_path, "none")
    capfd.readouterr()
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["replay", "--config", str(files.config_yaml), "--gateway", str(files.gateway_log),
                 "--app", str(files.app_log), "--alerts-out", "-", "--store", "none"]) == 0  # fmt: skip
    out, err = capfd.readouterr()
    assert [orjson.loads(line) for line in out.splitlines()] == expected  # only the alerts: the summary is on stderr
    assert "dead letters 6" in err and not (tmp_path / "cwd" / "-").exists()
    assert (tmp_path / "cwd" / "alerts.dead-letters.ndjson").read_bytes().count(b"\n") == 6
    assert (tmp_path / "cwd" / "alerts.lifecycle.ndjson").stat().st_size > 0


def test_verbose_replay_logs_its_progress(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    files = write_demo(tmp_path / "logs", seed=3, duration_secs=600.0, requests_per_sec=20.0, attacks=False)
    with caplog.at_level("INFO", logger="gatewatch.replay"):
        assert main(["-v", "replay", "--config", str(files.config_yaml), "--gateway", str(files.gateway_log),
                     "--app", str(files.app_log), "--alerts-out", str(tmp_path / "a.ndjson"), "--store", "none"]) == 0
    progress = [r.getMessage() for r in caplog.records if r.getMessage().startswith("replay_progress")]
    total = sum(len(path.read_bytes().splitlines()) for path in (files.gateway_log, files.app_log))
    assert len(progress) >= 2 and progress[-1].startswith(f"replay_progress records={total} ")


def test_a_store_this_release_wrote_still_takes_an_earlier_releases_dead_letters(tmp_path: Path) -> None:
    # A review: a file column added to dead_letters broke every dead-letter write of a rolled-back release
    # (it inserts by position: "table has 8 columns but 7 values were supplied"). Files have a table of their own.
    store = tmp_path / "store.duckdb"
    files = write_demo(tmp_path / "logs", **SMALL_RUN)
    run_replay(files, tmp_path, f"duckdb:{store}")
    con = duckdb.connect(str(store))
    con.execute("INSERT INTO dead_letters SELECT 'old-1', 'truncated', 'x', 'envoy.access', 'gateway.log', 3, 'l'")
    paths = dict(con.execute("select stream, path from files").fetchall())
    con.close()
    assert set(paths.values()) == {str(files.gateway_log), str(files.app_log)}


def test_stdout_closed_under_alerts_out_dash_still_closes_the_forwarders(tmp_path: Path) -> None:
    # A review: "replay --alerts-out - | true" raised BrokenPipeError at the first sink closed, so the forwarders
    # were never closed: 43 of 48 lifecycle events neither sent nor dead-lettered, and no summary.
    import subprocess
    import sys

    from gatewatch.cli import _close_all

    closed: list[str] = []

    class Sink:
        def __init__(self, name: str, error: BaseException | None = None) -> None:
            self.name, self.error = name, error

        def close(self) -> None:
            closed.append(self.name)
            if self.error is not None:
                raise self.error

    _close_all([Sink("store"), Sink("forwarders")])
    closed.clear()
    with pytest.raises(ValueError):
        _close_all([Sink("alerts", ValueError("disk full")), Sink("forwarders")])
    assert closed == ["alerts", "forwarders"]
    files = write_demo(tmp_path / "logs", **SMALL_RUN)
    command = [sys.executable, "-c", "from gatewatch.cli import main; raise SystemExit(main())", "replay",
               "--config", str(files.config_yaml), "--gateway", str(files.gateway_log), "--app", str(files.app_log),
               ]  # fmt: skip
    lines = len(files.gateway_log.read_bytes().splitlines()) + len(files.app_log.read_bytes().splitlines())
    # A second review: dead letters go to stdout batch by batch, so their broken pipe stopped the replay midway.
    for name, to_stdout in (("alerts", ["--alerts-out", "-"]), ("a", ["--alerts-out", "a.ndjson", "--dead-letters", "-"])):
        store = tmp_path / f"{name}.duckdb"
        reader = subprocess.Popen(["true"], stdin=subprocess.PIPE)
        reader.wait()  # the pipe's reader is gone before replay writes
        assert reader.stdin is not None
        with reader.stdin:
            run = subprocess.run([*command, *to_stdout, "--store", f"duckdb:{store}"], stdout=reader.stdin,
                                 stderr=subprocess.PIPE, cwd=tmp_path, timeout=120)  # fmt: skip
        assert run.returncode == 1, run.stderr
        assert b"stdout was closed" in run.stderr and b"dead letters 6" in run.stderr
        assert b"Traceback" not in run.stderr and b"Exception ignored" not in run.stderr
        assert (tmp_path / f"{name}.lifecycle.ndjson").stat().st_size > 0
        con = duckdb.connect(str(store), read_only=True)
        stored = con.execute("select (select count(*) from events) + (select count(*) from dead_letters)").fetchone()
        con.close()
        assert stored == (lines,)  # the whole replay was stored


def test_dead_letters_dash_writes_them_to_stdout(tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    # A review: --dead-letters - made a file named "-", as --alerts-out - once did.
    files = write_demo(tmp_path / "logs", **SMALL_RUN)
    common = ["replay", "--config", str(files.config_yaml), "--gateway", str(files.gateway_log), "--app",
              str(files.app_log), "--store", "none"]  # fmt: skip
    assert main([*common, "--alerts-out", str(tmp_path / "a.ndjson"), "--dead-letters", "-"]) == 0
    out, _ = capfd.readouterr()
    assert sorted(orjson.loads(line)["reason"] for line in out.splitlines()) == [
        "invalid_json", "invalid_utf8", "invalid_utf8", "oversized", "oversized", "truncated"]
    assert main([*common, "--alerts-out", "-", "--dead-letters", "-"]) == 2
    assert "would share stdout" in capfd.readouterr().err


def test_a_replayed_file_is_named_by_its_absolute_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A second review: the files table kept paths as typed ("app.log"), which a notebook elsewhere cannot find.
    files = write_demo(tmp_path / "logs", **SMALL_RUN)
    monkeypatch.chdir(files.gateway_log.parent)
    assert main(["replay", "--config", str(files.config_yaml), "--gateway", files.gateway_log.name,
                 "--alerts-out", "a.ndjson", "--store", f"duckdb:{tmp_path / 'store.duckdb'}"]) == 0  # fmt: skip
    con = duckdb.connect(str(tmp_path / "store.duckdb"), read_only=True)
    assert con.execute("select path from files").fetchall() == [(str(files.gateway_log),)]
    con.close()
    letters = [orjson.loads(line) for line in Path("a.dead-letters.ndjson").read_bytes().splitlines()]
    assert {letter["file"] for letter in letters} == {str(files.gateway_log)}
