"""bench_serve.py's path without Kafka: CPU per record of each part, in one thread, to A/B a change in minutes.

    .venv/bin/python bench/serve_path.py                    # 150k requests (300k records), as bench_serve.py
    .venv/bin/python bench/serve_path.py --poll 8000 --partitions 3

The same traffic as bench_serve.py (``serve_harness.traffic``), split over 4
partitions per input topic, read in polls of ``--poll`` records taken evenly
from the 8 inputs (the ingest stage's ALIGNED_POLL_RECORDS while behind).
Each poll is parsed and encoded as the ingest stage does (``poll_events``
per requests partition, then ``progress`` to every one); the detect side
then applies every message as the detect stage does (at most 64 a step,
each task's ``take()`` after its messages, outputs appended to their
partitions' lists), until nothing is left; every ``--snapshot-records`` each
task is snapshotted, as a checkpoint would. Kafka's own costs (the consumers'
record parsing, the producers, their IO threads) are not in it: bench_serve.py
prints those by thread.

CPU time per record: ``parse`` (parse_records), ``encode`` (the ingest
stage's events and progress messages), ``apply <role>`` (the tasks' apply
calls), ``detect`` (everything after the encode: applies, takes, routing),
``snapshot``. Alternate runs of two trees with each tree's venv
(``cd <tree> && PYTHONPATH=. .venv/bin/python bench/serve_path.py``).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import zlib
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from serve_harness import traffic, write_config  # noqa: E402

from gatewatch.config import GatewatchConfig, load_config  # noqa: E402
from gatewatch.serve_ingest import _by_partition, _encode_chunks, _events_messages  # noqa: E402
from gatewatch.tasks.base import Role, Task, new_task  # noqa: E402
from gatewatch.tasks.route import StreamClocks, progress_message  # noqa: E402
from gatewatch.topology import build_parsers, parse_records, tune_gc_for_streaming  # noqa: E402
from gatewatch.wire import encode_poll_events  # noqa: E402
from ingest.records import Dataset, Event, Origin, RawRecord  # noqa: E402

INPUT_PARTITIONS = 4  # per input topic, as serve_harness.PARTITIONS
STEP_MESSAGES = 64  # serve_detect.DETECT_POLL_MESSAGES_MAX


def inputs(requests: int, rate: float) -> dict[str, list[RawRecord]]:
    """bench_serve.py's records per input partition, in offset order (partitioned by a hash of their key)."""
    streams: dict[str, list[RawRecord]] = {}
    for side, key, value in traffic(requests, rate):
        stream = f"{side}/{zlib.crc32(key) % INPUT_PARTITIONS}"
        records = streams.setdefault(stream, [])
        dataset = Dataset.GATEWAY if side == "gateway" else Dataset.APP
        records.append(RawRecord(Origin(dataset, stream, len(records)), value))
    return dict(sorted(streams.items()))


class DetectTasks:
    """The tasks of one detect stage owning every partition, and the partitions as lists."""

    def __init__(self, config: GatewatchConfig, partitions: int, streams: list[str]) -> None:
        self.tasks: dict[tuple[Role, int], Task] = {}
        self.logs: dict[tuple[Role, int], list[bytes]] = {}
        for role in ("requests", "keyed", "findings"):
            for partition in range(1 if role == "findings" else partitions):
                self.tasks[(role, partition)] = new_task(config, role, partition, partitions, streams)
                self.logs[(role, partition)] = []
        self.apply_secs: dict[str, float] = {"requests": 0.0, "keyed": 0.0, "findings": 0.0}

    def step(self) -> bool:
        """One detect step: up to STEP_MESSAGES messages over the partitions, then each task's take()."""
        budget = STEP_MESSAGES
        touched = []
        for (role, partition), task in self.tasks.items():
            log = self.logs[(role, partition)]
            if budget <= 0 or task.next_offset >= len(log):
                continue
            started = time.thread_time()
            while budget > 0 and task.next_offset < len(log):
                task.apply(task.next_offset, log[task.next_offset])
                budget -= 1
            self.apply_secs[role] += time.thread_time() - started
            touched.append(task)
        for task in touched:
            for role, partition, value in task.take().messages:
                self.logs[(role, partition)].append(value)
        return bool(touched)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=150_000, help="requests (2 records each)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second of event time")
    parser.add_argument("--poll", type=int, default=2_000, help="records per ingest poll")
    parser.add_argument("--partitions", type=int, default=6, help="kafka.detect_partitions")
    parser.add_argument("--snapshot-records", type=int, default=150_000,
                        help="records between snapshots of every task (10 s of checkpoints at 15k/s)")  # fmt: skip
    args = parser.parse_args()
    tune_gc_for_streaming()
    with tempfile.TemporaryDirectory() as tmp:
        config_path = write_config(Path(tmp), "127.0.0.1:9", {"gateway": "gateway", "app": "app"}, "path",
                                   detect_partitions=args.partitions)  # fmt: skip
        config = load_config(config_path)
    records = inputs(args.requests, args.rate)
    streams = list(records)
    parsers = build_parsers(config)
    path = DetectTasks(config, args.partitions, streams)
    clocks = StreamClocks(config.correlate.max_future_secs)
    read = dict.fromkeys(streams, 0)
    secs = {"parse": 0.0, "encode": 0.0, "detect": 0.0, "snapshot": 0.0}
    total = since_snapshot = snapshots = 0
    wall = 1.7e9
    per_stream = max(1, args.poll // len(streams))
    while any(read[s] < len(records[s]) for s in streams):
        batch: list[RawRecord] = []
        for stream in streams:
            batch += records[stream][read[stream] : read[stream] + per_stream]
            read[stream] = min(len(records[stream]), read[stream] + per_stream)
        started = time.process_time()
        events, _ = parse_records(parsers, batch)
        parsed = time.process_time()
        chunks, _ = _encode_chunks(_by_partition(events, args.partitions))
        by_stream: dict[str, list[Event]] = {}
        for event in events:
            by_stream.setdefault(event.origin.stream, []).append(event)
        wall += 0.1
        for stream, stream_events in by_stream.items():
            clocks.observe(stream, stream_events, wall)
        for partition, parts in _events_messages(chunks):
            path.logs[("requests", partition)].append(encode_poll_events(wall, parts))
        progress = progress_message(wall, clocks, {s: (read[s], len(records[s])) for s in streams})
        for partition in range(args.partitions):
            path.logs[("requests", partition)].append(progress)
        encoded = time.process_time()
        while path.step():
            pass
        detected = time.process_time()
        secs["parse"] += parsed - started
        secs["encode"] += encoded - parsed
        secs["detect"] += detected - encoded
        total += len(batch)
        since_snapshot += len(batch)
        if since_snapshot >= args.snapshot_records:
            since_snapshot, snapshots = 0, snapshots + 1
            started = time.process_time()
            for task in path.tasks.values():
                task.snapshot()
            secs["snapshot"] += time.process_time() - started
    messages = {role: sum(len(log) for (r, _), log in path.logs.items() if r == role) for role in path.apply_secs}
    sizes = {role: sum(sum(map(len, log)) for (r, _), log in path.logs.items() if r == role)
             for role in path.apply_secs}  # fmt: skip
    print(f"records {total:,}, polls of {args.poll}, {args.partitions} partitions, {snapshots} snapshots; "
          f"messages {messages}, bytes per record {({r: round(b / total) for r, b in sizes.items()})}")  # fmt: skip
    figures = {**secs, **{f"apply {role}": s for role, s in path.apply_secs.items()}}
    print("CPU us per record: " + ", ".join(f"{name} {s / total * 1e6:.2f}" for name, s in figures.items())
          + f"; encode + detect + snapshot {(secs['encode'] + secs['detect'] + secs['snapshot']) / total * 1e6:.2f}")


if __name__ == "__main__":
    main()
