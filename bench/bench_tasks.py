"""Partitioned detection in memory: the single pipeline against the JOIN/KEYED/ALERT tasks, same run.

    .venv/bin/python bench/bench_tasks.py                      # 30 min of demo traffic at 10 req/s
    .venv/bin/python bench/bench_tasks.py --duration 600 --rate 8 --partitions 1 2 3

Generates a demo run (``gatewatch.demo.files.write_demo``), parses it once,
then times, in this one process and one after the other, what follows the
parse: ``reference`` (the single :class:`~gatewatch.topology.Pipeline`, as
replay drives it) and :class:`~gatewatch.tasks.local.LocalRun` with P
partitions (every message encoded, written to an in-memory list and decoded
by its task; one thread, so P buys nothing here: the figure is the cost of the
split, the shuffle and the wire). Each run's alerts and lifecycle events are
checked against the reference's. Rates are events per CPU second.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from gatewatch.config import load_config
from gatewatch.demo.files import write_demo
from gatewatch.tasks.local import LocalRun, RunResult, reference
from gatewatch.topology import build_parsers, parse_records, tune_gc_for_streaming
from ingest.records import Dataset, Event, RawRecord
from ingest.sources.files import read_lines


def _same(a: RunResult, b: RunResult) -> bool:
    return ({i: x.to_document() for i, x in a.alerts.items()} == {i: x.to_document() for i, x in b.alerts.items()}
            and [e.to_document() for e in a.alert_events] == [e.to_document() for e in b.alert_events])  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of demo traffic")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--poll", type=int, default=500, help="records per ingest poll (at most)")
    args = parser.parse_args()
    tune_gc_for_streaming()
    with tempfile.TemporaryDirectory() as tmp:  # the config names the run's revocation list: keep it
        files = write_demo(Path(tmp), seed=7, duration_secs=args.duration, requests_per_sec=args.rate)
        config = load_config(files.config_yaml)
        records = [*read_lines(files.gateway_log, Dataset.GATEWAY, config.gateway.max_line_bytes),
                   *read_lines(files.app_log, Dataset.APP, config.app.max_line_bytes)]  # fmt: skip
        _run(config, records, args.partitions, args.poll)


def _run(config: Any, records: list[RawRecord], partitions_list: list[int], poll: int) -> None:
    events, _ = parse_records(build_parsers(config), records)
    streams: dict[str, list[Event]] = {}
    for event in events:
        streams.setdefault(event.origin.stream, []).append(event)
    reference(config, events={s: e[:2000] for s, e in streams.items()})  # imports, the first forest
    rows: list[tuple[str, float, float, bool | None]] = []
    start_cpu, start_wall = time.process_time(), time.perf_counter()
    expected = reference(config, events=streams)
    rows.append(("pipeline (replay)", time.process_time() - start_cpu, time.perf_counter() - start_wall, None))
    for partitions in partitions_list:
        start_cpu, start_wall = time.process_time(), time.perf_counter()
        run = LocalRun(config, partitions, seed=partitions, poll_records=poll, checkpoint_chance=0.0)
        got = run.run_events(streams)
        cpu, wall = time.process_time() - start_cpu, time.perf_counter() - start_wall
        rows.append((f"tasks P={partitions} ({sum(got.messages.values())} internal messages)", cpu, wall,
                     _same(expected, got)))  # fmt: skip
    print(f"{len(events)} events, {len(expected.alerts)} alerts, {len(expected.alert_events)} lifecycle events")
    print(f"{'run':<44} {'cpu s':>7} {'wall s':>7} {'events/cpu s':>13} {'x pipeline':>10}  same as replay")
    base = rows[0][1]
    for name, cpu, wall, same in rows:
        print(f"{name:<44} {cpu:7.2f} {wall:7.2f} {len(events) / cpu:13,.0f} {base / cpu:10.2f}  "
              f"{'' if same is None else same}")


if __name__ == "__main__":
    main()
