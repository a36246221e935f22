"""Daily replays of rotated logs into one DuckDB store: every line stored once, none lost.

logrotate renames ``access.log`` to ``access.log.1`` (later ``.1.gz``) and starts a new
``access.log``. Named by their path, the new file's lines took the ids of the old file's
lines at the same places, and the store ignored them as already stored.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import duckdb

from gatewatch.cli import main
from gatewatch.demo.files import write_demo


def replay(config: Path, out: Path, store: Path, gateway: list[Path], app: list[Path]) -> None:
    argv = ["replay", "--config", str(config), "--alerts-out", str(out / "alerts.ndjson"),
            "--store", f"duckdb:{store}", "--gateway", *map(str, gateway), "--app", *map(str, app)]  # fmt: skip
    assert main(argv) == 0


def stored(store: Path) -> tuple[int, int]:
    """Records stored (events and dead letters), transactions."""
    with duckdb.connect(str(store), read_only=True) as con:
        counted = con.execute("select (select count(*) from events) + (select count(*) from dead_letters)")
        (records,) = counted.fetchone()  # type: ignore[misc]
        (transactions,) = con.execute("select count(*) from transactions").fetchone()  # type: ignore[misc]
    return records, transactions


def test_rotated_logs_replayed_day_by_day_store_each_line_once(tmp_path: Path) -> None:
    demo = write_demo(tmp_path / "demo", seed=5, duration_secs=600.0, requests_per_sec=4.0, attacks=False)
    days, noon = {}, {}
    for name in ("gateway", "app"):
        lines = (demo.gateway_log if name == "gateway" else demo.app_log).read_bytes().splitlines(keepends=True)
        half = len(lines) // 2
        days[name] = (b"".join(lines[:half]), b"".join(lines[half:]))
        noon[name] = b"".join(lines[: half // 2])
    logs, store = tmp_path / "logs", tmp_path / "store.duckdb"
    logs.mkdir()
    gateway, app = logs / "access.log", logs / "billing.log"

    # Monday: the logs as they are at noon, then as they are at midnight (grown).
    for name, path in (("gateway", gateway), ("app", app)):
        path.write_bytes(noon[name])
    replay(demo.config_yaml, tmp_path, store, [gateway], [app])
    for name, path in (("gateway", gateway), ("app", app)):
        path.write_bytes(days[name][0])
    replay(demo.config_yaml, tmp_path, store, [gateway], [app])
    monday = stored(store)
    assert monday[0] == sum(len(days[n][0].splitlines()) for n in days)

    # Tuesday: rotated (renamed, then compressed) and new files at the old names; all of them replayed.
    for name, path in (("gateway", gateway), ("app", app)):
        path.with_name(path.name + ".1.gz").write_bytes(gzip.compress(path.read_bytes()))
        path.unlink()
        path.write_bytes(days[name][1])
    replay(demo.config_yaml, tmp_path, store, sorted(logs.glob("access.log*")), sorted(logs.glob("billing.log*")))
    records, transactions = stored(store)
    assert records == sum(len(days[n][0].splitlines()) + len(days[n][1].splitlines()) for n in days)
    assert transactions > monday[1]


def test_files_beginning_with_the_same_line_are_one_only_when_one_is_the_start_of_the_other(tmp_path: Path) -> None:
    """Named by their first line, two files of one log that both begin with a fixed banner were taken for one:
    replay read the longer and dropped the other whole."""
    from gatewatch.config import parse_config
    from gatewatch.replay import file_sources

    banner = b'{"msg": "billing starting"}\n'
    lines = [b'{"ts": "2026-03-02T09:00:%02dZ", "request_id": "r%d"}\n' % (n, n) for n in range(40)]
    (tmp_path / "pod-a.log").write_bytes(banner + b"".join(lines[:20]))
    (tmp_path / "pod-b.log").write_bytes(banner + b"".join(lines[20:]))
    (tmp_path / "pod-a.log.1.gz").write_bytes(gzip.compress(banner + b"".join(lines[:30])))  # a grown copy
    config = parse_config({})
    paths = [tmp_path / name for name in ("pod-a.log", "pod-b.log", "pod-a.log.1.gz")]
    sources = file_sources(config, [], paths)
    assert sorted(source.path.name for source in sources.values()) == ["pod-a.log.1.gz", "pod-b.log"]
    b_stream = next(stream for stream, source in sources.items() if source.path.name == "pod-b.log")
    a_stream = next(stream for stream in sources if stream != b_stream)
    assert b_stream.startswith(a_stream + "@")  # named by its path as well
    read = {stream: sum(len(chunk) for chunk in iter(lambda s=source: s.poll(0.0, 100), [])) for stream, source in
            sources.items()}  # fmt: skip
    assert read == {a_stream: 31, b_stream: 21}
