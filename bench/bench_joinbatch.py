"""The JOIN task's own CPU per event, in memory (issue 15, serve): what bench_tasks.py mixes with the other tasks.

    taskset -c 1 .venv/bin/python bench/bench_joinbatch.py [--duration 1800 --rate 10 --partitions 1]

Runs :class:`~gatewatch.tasks.local.LocalRun` over a demo run (seed 7, no
checkpoints, no restarts) and adds up process_time spent in the JOIN tasks'
``apply``, ``take`` and ``finish`` only. Run it with another tree's venv python
(from that tree) for an A/B: it imports gatewatch from the venv it runs in.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from gatewatch.config import load_config
from gatewatch.demo.files import write_demo
from gatewatch.tasks.join import JoinTask
from gatewatch.tasks.local import LocalRun
from gatewatch.topology import build_parsers, parse_records, tune_gc_for_streaming
from ingest.records import Dataset, Event
from ingest.sources.files import read_lines

_spent = [0.0]


def _timed(method: Any) -> Any:
    def timed(*args: Any) -> Any:
        start = time.process_time()
        try:
            return method(*args)
        finally:
            _spent[0] += time.process_time() - start
    return timed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=1800.0, help="seconds of demo traffic")
    parser.add_argument("--rate", type=float, default=10.0, help="requests per second")
    parser.add_argument("--partitions", type=int, default=1)
    parser.add_argument("--poll", type=int, default=500, help="records per ingest poll (at most)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    tune_gc_for_streaming()
    for name in ("apply", "take", "finish"):
        setattr(JoinTask, name, _timed(getattr(JoinTask, name)))
    with tempfile.TemporaryDirectory() as tmp:
        files = write_demo(Path(tmp), seed=7, duration_secs=args.duration, requests_per_sec=args.rate)
        config = load_config(files.config_yaml)
        records = [*read_lines(files.gateway_log, Dataset.GATEWAY, config.gateway.max_line_bytes),
                   *read_lines(files.app_log, Dataset.APP, config.app.max_line_bytes)]  # fmt: skip
        events, _ = parse_records(build_parsers(config), records)
        streams: dict[str, list[Event]] = {}
        for event in events:
            streams.setdefault(event.origin.stream, []).append(event)
        LocalRun(config, args.partitions, seed=1, poll_records=args.poll, checkpoint_chance=0.0).run_events(
            {s: e[:2000] for s, e in streams.items()})  # imports, the first forest
        for _ in range(args.repeat):
            _spent[0] = 0.0
            run = LocalRun(config, args.partitions, seed=1, poll_records=args.poll, checkpoint_chance=0.0)
            run.run_events(streams)
            print(f"{len(events)} events, P={args.partitions}: JOIN tasks {_spent[0]:.3f} cpu s, "
                  f"{_spent[0] / len(events) * 1e6:.2f} us an event")


if __name__ == "__main__":
    main()
