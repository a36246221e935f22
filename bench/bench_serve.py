"""How fast does ``gatewatch serve`` consume, next to a bare kafka-python consumer?

    services/up.sh kafka
    PYTHONPATH=. .venv/bin/python bench/bench_serve.py --requests 100000

Produces ``--requests`` requests (one gateway line + one app line each, both
JSON, keyed by request id) to two fresh 4-partition topics, then measures on
the same records:

1. bare: a tuned kafka-python consumer (the settings serve uses) reading every
   record and ``orjson.loads``-ing its value, with kafka-python's own socket
   reads, response frames and record batches (serve reads them with
   ``ingest.sources.kafka_frames`` and ``kafka_records``);
2. serve: ``gatewatch serve --store none`` with 1, 2 and 3 processes in one
   group (``--processes 1,2,3``, each a fresh group on the same records),
   timed from the first received record to the last (the ingest stage, read
   from /metrics) and until every process's slowest detect task has reached
   the last event time (end to end); the CPU of all processes per record,
   each process's share of the detect records (events its join tasks
   applied), and the checkpoints' size and time;
3. restart: ``kill -9`` once the detect stage checkpointed in a second
   group's run, then the time until the restarted process resumed (ingest from
   committed offsets, detect from its checkpoint) and caught up;
4. with ``--elasticsearch URL`` (default ``$GW_ELASTICSEARCH_URL``): the raw
   ``_bulk`` rate of the documents serve writes for these records against
   ``serve --store elasticsearch:URL`` (:mod:`serve_es`).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import tempfile
import time
import uuid
from pathlib import Path

import orjson
from serve_es import CpuWindow, cpu_parts, es_cleanup, print_es, raw_bulk, read_raw_records, run_serve_es
from serve_harness import (
    SCRAPE_SECS,
    T0,
    ServeGroup,
    consume_all,
    detect_done,
    detect_shares,
    free_port,
    library_reading,
    metric,
    produce,
    scrape,
    start_serve,
    traffic,
    write_config,
)

CHECKPOINT_WAIT_SECS = 11.0  # longer than the default kafka.checkpoint_interval_secs


def bare_consume(bootstrap: str, topics: dict[str, str], total: int) -> dict[str, float]:
    """Seconds (and CPU seconds: this process, the broker, the machine) for the tuned kafka-python consumer
    to read and ``orjson.loads`` every record.

    With kafka-python's own socket reads, response frames and record batches, not gatewatch's
    (ingest.sources.kafka_frames and kafka_records, which the harness's imports install): the
    baseline is the library as it ships.
    """
    started = None
    window = CpuWindow("kafka")
    with library_reading():
        for _, messages in consume_all(bootstrap, topics, total):
            if started is None:
                started, cpu_started = time.perf_counter(), time.process_time()
                window.start()
            for message in messages:
                orjson.loads(message.value)
    window.stop()
    assert started is not None
    return {"secs": time.perf_counter() - started, "cpu": time.process_time() - cpu_started,
            "broker_cpu": window.node, "machine_cpu": window.machine}  # fmt: skip


def run_serve(
    directory: Path,
    bootstrap: str,
    topics: dict[str, str],
    total: int,
    rate: float,
    processes: int = 1,
    detect_process: bool = False,
    detect_partitions: int | None = None,
) -> dict[str, float]:
    """``processes`` serve processes in one group, started together; timings from the first record anywhere."""
    group = f"bench-{uuid.uuid4().hex[:8]}"
    config_path = write_config(directory, bootstrap, topics, group, detect_partitions=detect_partitions)
    launched = time.perf_counter()
    serves = ServeGroup(directory, config_path, group, processes, cpu=True, detect_process=detect_process)
    first = last = detected = None
    text = first_text = done_text = ""
    window = CpuWindow("kafka")
    last_ts = T0 + total / 2 / rate
    try:
        while detected is None:
            texts = serves.scrape()
            received = sum(metric(t, "component_received_events_total") for t in texts)
            now = time.perf_counter()
            if received and first is None:
                first, first_text = now, "\n".join(texts)
                window.start()
            if last is None and received >= total:
                last = now
            if detect_done(texts, total, last_ts):  # no bad lines: every record is an event
                detected, done_text = now, "\n".join(texts)
                window.stop()
            time.sleep(SCRAPE_SECS)
        time.sleep(CHECKPOINT_WAIT_SECS)
        texts = serves.scrape()
        text = "\n".join(texts)
    finally:
        serves.stop(timeout_secs=60)
    assert first is not None
    shares = detect_shares(texts)
    return {
        "shares": shares,  # type: ignore[dict-item]
        "startup_secs": first - launched,
        "consume_secs": last - first,  # type: ignore[operator]
        "end_to_end_secs": detected - first,
        "checkpoint_bytes": metric(text, "gatewatch_checkpoint_bytes"),
        "checkpoint_secs": metric(text, "gatewatch_checkpoint_duration_seconds_sum")
        / max(1.0, metric(text, "gatewatch_checkpoint_duration_seconds_count")),
        "checkpoints": metric(text, "gatewatch_checkpoint_duration_seconds_count"),
        "cpu": cpu_parts(done_text)["process"] - cpu_parts(first_text).get("process", 0.0),
        "parts": _parts_since(first_text, done_text, group),  # type: ignore[dict-item]
        "broker_cpu": window.node,
        "machine_cpu": window.machine,
    }


def _parts_since(first_text: str, done_text: str, group: str) -> dict[str, float]:
    """CPU seconds by part (thread, or time inside a consumer's poll) over the window, the group id left out
    of the thread names."""
    first = cpu_parts(first_text)
    return {k.replace(f"-{group}", "").removeprefix("thread:"): v - first.get(k, 0.0)
            for k, v in cpu_parts(done_text).items() if k != "process"}  # fmt: skip


def run_restart(
    directory: Path, bootstrap: str, topics: dict[str, str], total: int, static: bool = False
) -> dict[str, float]:
    """kill -9 once a detect checkpoint covers part of the input; time the restart.

    ``static``: the process is a static group member (``kafka.instance_id``), so its
    restart does not wait for the killed member's session to time out.
    """
    group = f"bench-kill-{uuid.uuid4().hex[:8]}"
    # A first checkpoint within 2 s, so that the kill comes while most of the records are still unread.
    config_path = write_config(directory, bootstrap, topics, group, checkpoint_interval_secs=2.0,
                               instance_id="bench-1" if static else None)  # fmt: skip
    port = free_port()
    proc = start_serve(config_path, port, directory / f"{group}-1.log")
    try:
        while metric(scrape(port), "gatewatch_checkpoint_duration_seconds_count") < 1:
            time.sleep(SCRAPE_SECS)
        received_before = metric(scrape(port), "component_received_events_total")
    finally:
        proc.kill()
        proc.wait()
    killed = time.perf_counter()
    log2 = directory / f"{group}-2.log"
    proc = start_serve(config_path, port, log2)
    resumed = detect_resumed = caught_up = None
    remaining = total
    try:
        while caught_up is None or detect_resumed is None:
            text = scrape(port)
            log_text = log2.read_text()
            if resumed is None:
                match = re.search(r"event=resumed stage=ingest how=committed_offsets .*offsets=(\S+)", log_text)
                if match:
                    resumed = time.perf_counter()
                    remaining = total - sum(int(item.rsplit("@", 1)[1]) for item in match.group(1).split(","))
            if detect_resumed is None and "event=resumed how=checkpoint stage=detect" in log_text:
                detect_resumed = time.perf_counter()
            if caught_up is None and resumed is not None and metric(text, "component_received_events_total") >= remaining:
                caught_up = time.perf_counter()
            if proc.poll() is not None:
                raise SystemExit(f"serve exited: {log2.read_text()[-2000:]}")
            time.sleep(SCRAPE_SECS)
        loaded = re.search(r"event=checkpoint_loaded .*bytes=(\d+) .*read_secs=(\S+)", log2.read_text())
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    return {
        "received_before_kill": received_before,
        "restart_to_resumed_secs": (resumed or killed) - killed,
        "restart_to_detect_resumed_secs": (detect_resumed or killed) - killed,
        "restart_to_caught_up_secs": caught_up - killed,
        "checkpoint_read_secs": float(loaded.group(2)) if loaded else float("nan"),
        "checkpoint_state_bytes": float(loaded.group(1)) if loaded else float("nan"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("GW_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--requests", type=int, default=100_000, help="requests (2 records each)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second of event time")
    parser.add_argument("--skip-restart", action="store_true")
    parser.add_argument("--logs", type=Path, help="keep configs and serve logs in this folder")
    parser.add_argument("--skip-none", action="store_true", help="skip the serve --store none row")
    parser.add_argument("--processes", default="1,2,3",
                        help="serve processes in one group, a row per count (comma-separated)")
    parser.add_argument("--detect-partitions", type=int, default=6,
                        help="kafka.detect_partitions of the serve rows (6: an even split over 1, 2 or 3 processes)")
    parser.add_argument("--detect-process", action="store_true",
                        help="the serve row: --processes run --stages ingest, one more runs --stages detect")
    parser.add_argument("--elasticsearch", default=os.environ.get("GW_ELASTICSEARCH_URL") or None, metavar="URL",
                        help="also compare raw _bulk with serve --store elasticsearch:URL (default $GW_ELASTICSEARCH_URL)")
    parser.add_argument("--es-processes", type=int, default=1, help="serve processes in one group (the ES rows)")
    parser.add_argument("--no-elasticsearch", dest="elasticsearch", action="store_const", const=None)
    args = parser.parse_args()

    run = uuid.uuid4().hex[:8]
    topics = {"gateway": f"bench-{run}-gateway", "app": f"bench-{run}-app"}
    records = traffic(args.requests, args.rate)
    total = len(records)
    size = sum(len(v) for _, _, v in records)
    produce_secs = produce(args.bootstrap, topics, records)
    print(f"records {total:,} ({size / total:.0f} B avg, {size / 2**20:.1f} MiB) produced in {produce_secs:.1f}s")

    bare = bare_consume(args.bootstrap, topics, total)
    bare_secs = bare["secs"]
    raw = es = None
    with tempfile.TemporaryDirectory() as tmp:
        if args.logs:
            args.logs.mkdir(parents=True, exist_ok=True)
            tmp = str(args.logs)
        counts = [int(n) for n in args.processes.split(",")]
        serves = [] if args.skip_none else [
            (n, run_serve(Path(tmp), args.bootstrap, topics, total, args.rate, n, args.detect_process,
                          args.detect_partitions))
            for n in counts
        ]
        restarts = [] if args.skip_restart else [
            (label, run_restart(Path(tmp), args.bootstrap, topics, total, static))
            for label, static in (("dynamic member", False), ("static member, kafka.instance_id", True))
        ]
        if args.elasticsearch:
            url = args.elasticsearch
            prefixes = [f"bench-{run}-raw", f"bench-{run}-serve"]
            try:
                config_path = write_config(Path(tmp), args.bootstrap, topics, f"bench-{run}-parse", prefixes[0])
                raw = raw_bulk(url, config_path, read_raw_records(args.bootstrap, topics, total), prefixes[0])
                es = run_serve_es(
                    Path(tmp), args.bootstrap, topics, total, args.rate, url, prefixes[1], args.es_processes
                )
            finally:
                es_cleanup(url, prefixes)
    print(f"{'':34}{'seconds':>10}{'records/s':>12}")
    print(f"{'bare kafka-python + orjson.loads':34}{bare_secs:10.2f}{total / bare_secs:12,.0f}")
    for n, serve in serves:
        shape = f"{n} process(es)" + (", ingest only, + 1 detect only" if args.detect_process else "")
        print_serve(serve, bare, total, shape)
    if raw and es:
        print_es(raw, es, total)
    for label, restart in restarts:
        print_restart(label, restart)


def print_serve(serve: dict[str, float], bare: dict[str, float], total: int, processes: str) -> None:
    bare_secs, serve_secs, end_secs = bare["secs"], serve["consume_secs"], serve["end_to_end_secs"]
    print(f"{'serve --store none, ingest':34}{serve_secs:10.2f}{total / serve_secs:12,.0f}"
          f"   ({bare_secs / serve_secs:.0%} of bare; {processes})")  # fmt: skip
    print(f"{'serve, end to end (detect stage)':34}{end_secs:10.2f}{total / end_secs:12,.0f}"
          f"   ({bare_secs / end_secs:.0%} of bare)")  # fmt: skip
    print(f"serve startup (launch to first record) {serve['startup_secs']:.2f}s")
    print(f"checkpoint: state {serve['checkpoint_bytes'] / 1024:,.0f} KiB (last save, all processes), "
          f"{serve['checkpoint_secs'] * 1000:.0f} ms mean over {serve['checkpoints']:.0f} saves")  # fmt: skip
    shares = serve["shares"]
    print("detect records per process: " + ", ".join(f"{share:.1%}" for share in shares)  # type: ignore[union-attr]
          + f" (even: {1 / len(shares):.1%})")  # type: ignore[arg-type]
    # What bounds the ratio on this machine: CPU per record, each over its own window.
    bare_us, serve_us = bare["cpu"] / total * 1e6, serve["cpu"] / total * 1e6
    cores = os.cpu_count() or 1
    print(f"CPU per record: bare {bare_us:.1f} us, serve {serve_us:.1f} us ({serve_us / bare_us:.1f}x; all serve "
          f"processes, first record to detect done); Kafka broker {bare['broker_cpu'] / total * 1e6:.1f} us "
          f"during bare, {serve['broker_cpu'] / total * 1e6:.1f} us during serve; machine busy "
          f"{bare['machine_cpu'] / bare_secs:.2f} / {serve['machine_cpu'] / end_secs:.2f} of {cores} cores")  # fmt: skip
    parts = sorted(((v, k) for k, v in serve["parts"].items()), reverse=True)  # type: ignore[attr-defined]
    print("  by thread (and inside the consumers' polls), us per record: "
          + ", ".join(f"{k} {v / total * 1e6:.1f}" for v, k in parts if v >= 0.05 * total / 1e6))  # fmt: skip
    half_rate = 0.5 * total / bare_secs
    print(f"end to end at 0.5x bare ({half_rate:,.0f} records/s) would take {half_rate * serve_us / 1e6:.2f} cores "
          f"for serve and {half_rate * serve['broker_cpu'] / total:.2f} for the broker, at these costs")  # fmt: skip


def print_restart(label: str, restart: dict[str, float]) -> None:
    print(f"kill -9 ({label}) after {restart['received_before_kill']:,.0f} records: ingest resumed "
          f"{restart['restart_to_resumed_secs']:.2f}s after the kill, detect from its checkpoint "
          f"{restart['restart_to_detect_resumed_secs']:.2f}s after (checkpoint read "
          f"{restart['checkpoint_read_secs']:.2f}s, {restart['checkpoint_state_bytes'] / 1024:,.0f} KiB), "
          f"caught up {restart['restart_to_caught_up_secs']:.2f}s after")  # fmt: skip


if __name__ == "__main__":
    main()
