"""CPU a record of serve's Kafka consumer, by thread: kafka-python's own reading against gatewatch's.

    services/up.sh kafka
    set -a; . .cache/run/services.env; set +a
    .venv/bin/python bench/bench_kafka_read.py --requests 100000 --rounds 3

Produces ``--requests`` requests (a gateway and an app record each, as
bench_serve does) to two fresh topics, then reads every record from the
beginning with serve's consumer settings, ``--rounds`` times each way,
alternating in one process:

- library: kafka-python 3.0.12 as it ships (its socket reads, response
  frames and record batches);
- gatewatch: with :mod:`ingest.sources.kafka_frames` (socket reads and
  frames) and :mod:`ingest.sources.kafka_records` (record batches) installed,
  as serve runs.

Prints, per round, the CPU µs a record of the consumer's network thread
(``kafka-io-...``: socket reads, frames, decoding the responses) and of the
thread that polls (the fetcher: record batches to records), from
``/proc/self/task``, then the medians. Nothing is parsed: this is the read alone.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
import uuid
from contextlib import nullcontext
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from kafka import KafkaConsumer, TopicPartition  # noqa: E402
from serve_harness import PARTITIONS, KafkaSettings, library_reading, produce, traffic  # noqa: E402  (puts the repo on sys.path)

from timing import stat_cpu_secs  # noqa: E402

from ingest.sources.kafka import consumer_settings  # noqa: E402


def _thread_cpu() -> dict[int, float]:
    """CPU seconds of each thread of this process, by native thread id."""
    seconds = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            seconds[int(tid)] = stat_cpu_secs(Path(f"/proc/self/task/{tid}/stat"))
        except OSError:  # the thread ended meanwhile
            continue
    return seconds


def read_all(bootstrap: str, topics: dict[str, str], total: int) -> dict[str, float]:
    """CPU µs a record of the network thread and the polling thread while every record is read once."""
    consumer = KafkaConsumer(group_id=None, **consumer_settings(KafkaSettings(bootstrap)))
    try:
        partitions = [TopicPartition(t, p) for t in topics.values() for p in range(PARTITIONS)]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        before, seen = _thread_cpu(), 0
        while seen < total:
            seen += sum(map(len, consumer.poll(timeout_ms=1000).values()))
        after = _thread_cpu()  # before the consumer closes, and its network thread with it
        names = {thread.native_id: thread.name for thread in threading.enumerate() if thread.native_id}
    finally:
        consumer.close()
    spent = {tid: after[tid] - before.get(tid, 0.0) for tid in after}
    network = sum(secs for tid, secs in spent.items() if names.get(tid, "").startswith("kafka-io"))
    poll = spent.get(threading.main_thread().native_id or 0, 0.0)
    return {"network": network / total * 1e6, "poll": poll / total * 1e6}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("GW_KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--requests", type=int, default=100_000, help="requests (2 records each)")
    parser.add_argument("--rounds", type=int, default=3, help="reads each way, alternating")
    args = parser.parse_args()
    run = uuid.uuid4().hex[:8]
    topics = {"gateway": f"bench-read-{run}-gateway", "app": f"bench-read-{run}-app"}
    records = traffic(args.requests, 200.0)
    total = len(records)
    secs = produce(args.bootstrap, topics, records)
    size = sum(len(value) for _, _, value in records) / total
    print(f"records {total:,} ({size:.0f} B avg) produced in {secs:.1f}s")
    figures: dict[str, list[dict[str, float]]] = {"library": [], "gatewatch": []}
    print(f"{'round':>5}  {'reading':10s} {'network thread':>15} {'poll thread':>12}  (CPU us a record)")
    for round_number in range(1, args.rounds + 1):
        for reading in figures:
            started = time.perf_counter()
            with library_reading() if reading == "library" else nullcontext():
                result = read_all(args.bootstrap, topics, total)
            figures[reading].append(result)
            print(f"{round_number:>5}  {reading:10s} {result['network']:15.2f} {result['poll']:12.2f}"
                  f"   ({time.perf_counter() - started:.1f} s wall)")  # fmt: skip
    print("median")
    for reading, results in figures.items():
        network = statistics.median(r["network"] for r in results)
        poll = statistics.median(r["poll"] for r in results)
        print(f"{'':>5}  {reading:10s} {network:15.2f} {poll:12.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
