"""Soak: ``gatewatch serve`` at a fixed rate for N minutes; is its memory flat and its lag bounded?

    services/up.sh kafka                     # (and elasticsearch for --store elasticsearch:URL)
    set -a; . .cache/run/services.env; set +a
    .venv/bin/python bench/bench_soak.py                       # 10 minutes, 2 processes, --store none
    .venv/bin/python bench/bench_soak.py --minutes 3 --store "elasticsearch:$GW_ELASTICSEARCH_URL"

Live traffic (the serve benchmarks' records, stamped at the request rate, so
event time moves with the wall clock and windows close as they would in
production) is produced at ``--rate`` requests/s (two records each) into fresh
4-partition topics. Every ``--sample-secs`` the script samples each serve
process's RSS (``/proc/<pid>/status``), its consumers' lag as they report it
(``kafka_consumer_lag``) and the groups' committed lag (end offsets minus
committed offsets of the ingest group on the input topics and of the detect
group on the internal topics: what a restart would read again). It prints a
row per minute, then each process's RSS after the warm-up against the end
(the aim: within +-10%) and the maximum lags. Not a test: it asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from tempfile import TemporaryDirectory

import orjson
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from serve_harness import PARTITIONS, ServeGroup, create_topics, metric, traffic, write_config
from timing import stat_cpu_secs


@dataclass
class Sample:
    secs: float  # since the first record was produced
    produced: int
    rss_bytes: list[int]
    position_lag: float  # sum of kafka_consumer_lag over every process
    ingest_committed_lag: int
    detect_committed_lag: int
    checkpoint_bytes: float  # the detect owner's last checkpoint: how much state it holds
    cpu_secs: float  # user + system CPU of every serve process so far
    checkpoint_secs: float  # time spent saving detect checkpoints so far, every process


@dataclass
class Soak:
    bootstrap: str
    topics: dict[str, str]
    group: str
    serve: ServeGroup
    samples: list[Sample] = field(default_factory=list)
    produced: int = 0
    existing: set[str] = field(default_factory=set)  # topics known to exist

    def __post_init__(self) -> None:
        self.admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        self.consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        self.inputs = [TopicPartition(self.topics[s], p) for s in ("gateway", "app") for p in range(PARTITIONS)]

    def committed_lag(self, group: str, partitions: list[TopicPartition]) -> int:
        # end_offsets of a topic that does not exist yet creates it with the broker's default partitions
        # (kafka-python does, whatever allow_auto_create_topics says): a serve slower to start than
        # the first sample would then find a 4-partition detect topic and refuse to run.
        if not {tp.topic for tp in partitions} <= self.existing:
            self.existing = set(self.admin.list_topics())
            if not {tp.topic for tp in partitions} <= self.existing:
                return 0
        end = self.consumer.end_offsets(partitions)
        offsets = self.admin.list_group_offsets({group: None}).get(group, {})
        committed = {tp: meta.offset for tp, meta in offsets.items()}
        return sum(max(0, offset - max(committed.get(tp, 0), 0)) for tp, offset in end.items())

    def sample(self, started: float) -> Sample:
        texts = self.serve.scrape()
        detect = [TopicPartition(f"{self.group}-{role}", p) for role in ("requests", "keyed", "findings")
                  for p in sorted(self.consumer.partitions_for_topic(f"{self.group}-{role}") or ())]  # fmt: skip
        row = Sample(
            secs=time.monotonic() - started,
            produced=self.produced,
            rss_bytes=[_rss_bytes(proc.pid) for proc in self.serve.procs],
            position_lag=sum(metric(text, "kafka_consumer_lag") for text in texts),
            ingest_committed_lag=self.committed_lag(self.group, self.inputs),
            detect_committed_lag=self.committed_lag(f"{self.group}-detect", detect),
            checkpoint_bytes=max(metric(text, "gatewatch_checkpoint_bytes") for text in texts),
            cpu_secs=sum(stat_cpu_secs(Path(f"/proc/{proc.pid}/stat")) for proc in self.serve.procs),
            checkpoint_secs=sum(metric(text, "gatewatch_checkpoint_duration_seconds_sum") for text in texts),
        )
        self.samples.append(row)
        return row

    def close(self) -> None:
        self.admin.close()
        self.consumer.close()


def _rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def _produce_at_rate(soak: Soak, rate: float, secs: float, started: float, stop: threading.Event) -> None:
    producer = KafkaProducer(bootstrap_servers=soak.bootstrap, linger_ms=20)
    try:
        while not stop.is_set():
            elapsed = time.monotonic() - started
            if elapsed >= secs:
                break
            due = int(min(elapsed + 0.1, secs) * rate) - soak.produced
            if due > 0:
                for side, key, value in traffic(due, rate, first=soak.produced):
                    producer.send(soak.topics[side], key=key, value=value)
                soak.produced += due
            time.sleep(0.1)
        producer.flush()
    finally:
        producer.close()


def _mib(n: float) -> str:
    return f"{n / 2**20:.1f}"


def report(soak: Soak, warmup_secs: float) -> dict[str, object]:
    samples = soak.samples
    after = [s for s in samples if s.secs >= warmup_secs] or samples[-1:]
    warm, end = after[0], samples[-1]
    # A row a minute of every sample in it: RSS jumps for seconds at each checkpoint and the detect lag saws
    # between checkpoints, so one sample a minute read as growth where there was none (a soak trial).
    print(f"{'secs':>6} {'requests':>9} {'RSS MiB median/max per process':>34} {'position lag':>13} "
          f"{'ingest lag':>11} {'detect lag':>11} {'checkpoint MiB':>15}   (lags: the minute's max)")  # fmt: skip
    minutes: dict[int, list[Sample]] = {}
    for s in samples:
        minutes.setdefault(int(s.secs // 60), []).append(s)
    for rows in minutes.values():
        last = rows[-1]
        rss = " ".join(f"{_mib(statistics.median([r.rss_bytes[i] for r in rows]))}/"
                       f"{_mib(max(r.rss_bytes[i] for r in rows))}" for i in range(len(last.rss_bytes)))  # fmt: skip
        print(f"{last.secs:6.0f} {last.produced:9d} {rss:>34} {max(r.position_lag for r in rows):13.0f} "
              f"{max(r.ingest_committed_lag for r in rows):11d} {max(r.detect_committed_lag for r in rows):11d} "
              f"{_mib(last.checkpoint_bytes):>15}")  # fmt: skip
    figures: dict[str, object] = {"processes": []}
    for i in range(len(end.rss_bytes)):
        series = [s.rss_bytes[i] for s in after]
        change = (end.rss_bytes[i] - warm.rss_bytes[i]) / warm.rss_bytes[i]
        print(f"process {i}: RSS {_mib(warm.rss_bytes[i])} MiB after warm-up ({warm.secs:.0f}s), "
              f"{_mib(end.rss_bytes[i])} MiB at the end ({change:+.1%}); after warm-up min {_mib(min(series))}, "
              f"max {_mib(max(series))} MiB")  # fmt: skip
        figures["processes"].append(  # type: ignore[union-attr]
            {"rss_warm": warm.rss_bytes[i], "rss_end": end.rss_bytes[i], "change": change,
             "rss_min": min(series), "rss_max": max(series)}  # fmt: skip
        )
    lags = {
        "max_position_lag": max(s.position_lag for s in samples),
        "max_ingest_committed_lag": max(s.ingest_committed_lag for s in samples),
        "max_detect_committed_lag": max(s.detect_committed_lag for s in samples),
        "max_ingest_committed_lag_after_warmup": max(s.ingest_committed_lag for s in after),
        "max_detect_committed_lag_after_warmup": max(s.detect_committed_lag for s in after),
    }
    print(" ".join(f"{k}={v:.0f}" for k, v in lags.items()))
    figures.update(lags)
    figures["requests"] = end.produced
    figures["checkpoint_bytes_warm"], figures["checkpoint_bytes_end"] = warm.checkpoint_bytes, end.checkpoint_bytes
    print(f"checkpoint: {_mib(warm.checkpoint_bytes)} MiB after warm-up, {_mib(end.checkpoint_bytes)} MiB at the end")
    # CPU at a live rate: what a record costs when serve mostly waits for the next one (fixed costs
    # such as checkpoints, polls and metrics are spread over fewer records than in bench_serve.py).
    records, wall = 2 * (end.produced - warm.produced), end.secs - warm.secs
    if records > 0 and wall > 0:
        cpu = end.cpu_secs - warm.cpu_secs
        saving = end.checkpoint_secs - warm.checkpoint_secs
        figures.update(cpu_us_per_record=cpu / records * 1e6, cores=cpu / wall, checkpoint_share=saving / wall)
        print(f"after warm-up: serve CPU {cpu / records * 1e6:.1f} us per record ({cpu / wall:.3f} cores at "
              f"{records / wall:,.0f} records/s); saving checkpoints {saving / wall:.1%} of wall time")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long to produce (default 10)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second, two records each")
    parser.add_argument("--processes", type=int, default=2, help="serve processes in the group")
    parser.add_argument("--store", default="none", help="serve's --store (none, elasticsearch:URL, ...)")
    parser.add_argument("--sample-secs", type=float, default=5.0)
    # The default config's state fills for ~4 minutes with two processes: behaviour_outlier's 300 s window of
    # per-client counters and the reorder buffer's 150 s; one process holding every task fills for ~10 (a soak
    # trial: +9.6% "growth" after a 4-minute warm-up, flat from minute 10). Then it saws around a level.
    parser.add_argument("--warmup-minutes", type=float, default=None,
                        help="default: two fifths of the run, at most 4 (10 with one process)")  # fmt: skip
    parser.add_argument("--bootstrap", default=os.environ.get("GW_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--json", type=Path, help="write the figures here too")
    parser.add_argument("--logs", type=Path, help="keep the serve logs in this directory")
    args = parser.parse_args()
    secs = args.minutes * 60
    fills = 4.0 if args.processes > 1 else 10.0
    warmup_secs = 60 * (args.warmup_minutes if args.warmup_minutes is not None else min(fills, args.minutes * 0.4))
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # the finally below stops serve

    run = uuid.uuid4().hex[:8]
    group = f"soak-{run}"
    topics = {"gateway": f"soak-{run}-gateway", "app": f"soak-{run}-app"}
    create_topics(args.bootstrap, topics)
    with TemporaryDirectory() as tmp:
        directory = args.logs or Path(tmp)
        directory.mkdir(parents=True, exist_ok=True)
        index_prefix = f"gw-soak-{run}" if args.store.startswith(("elasticsearch:", "opensearch:")) else None
        config = write_config(directory, args.bootstrap, topics, group, index_prefix, checkpoint_interval_secs=30.0)
        serve = ServeGroup(directory, config, group, args.processes, args.store)
        soak = Soak(args.bootstrap, topics, group, serve)
        stop = threading.Event()
        try:
            time.sleep(5.0)  # both members joined before the first record
            started = time.monotonic()
            producer = threading.Thread(target=_produce_at_rate, args=(soak, args.rate, secs, started, stop))
            producer.start()
            print(f"soak: {args.minutes:g} min at {args.rate:g} req/s, {args.processes} process(es), "
                  f"--store {args.store}, topics {topics['gateway']}/{topics['app']}", flush=True)  # fmt: skip
            while producer.is_alive():
                row = soak.sample(started)
                if len(soak.samples) % 12 == 0:
                    print(f"  {row.secs:.0f}s produced={row.produced} rss_mib="
                          f"{','.join(_mib(r) for r in row.rss_bytes)} ingest_lag={row.ingest_committed_lag}",
                          flush=True)  # fmt: skip
                producer.join(timeout=args.sample_secs)
            soak.sample(started)
            figures = report(soak, warmup_secs)
            figures.update(minutes=args.minutes, rate=args.rate, store=args.store)
            if args.json:
                args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
        finally:
            stop.set()
            soak.close()
            serve.stop()


if __name__ == "__main__":
    main()
