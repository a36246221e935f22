"""Load test of HTTP ingest on loopback, bounded in count and time, beside a same-run baseline.

    services/up.sh kafka && set -a && . .cache/run/services.env && set +a
    .venv/bin/python bench/bench_http_ingest.py [--secs 15] [--clients 4] [--sizes 1,100,1000]
    services/up.sh elasticsearch && set -a && . .cache/run/services.env && set +a
    .venv/bin/python bench/bench_http_ingest.py --local [--outage-secs 30]

For each batch size, ``--clients`` threads post Fluent Bit ``json_lines`` batches
(``{"date": ..., "log": LINE}`` a line; gateway and app batches alternate; each
post its own ``Idempotency-Key``, kept on retries) as fast as the answers come,
for ``--secs`` seconds or ``--max-records`` records, to

- ``baseline``: a FastAPI endpoint on uvicorn (one process, as serve runs it) that
  only reads the body and answers 200;
- ``gatewatch``: with Kafka, ``gatewatch serve --store none`` (both stages running,
  so its ingest stage consumes what HTTP ingest produces on the same cores), whose
  ``POST /v1/ingest/{side}`` answers once Kafka acknowledged every record; with
  ``--local``, ``gatewatch serve`` with no ``kafka`` section and the store
  ``elasticsearch:$GW_ELASTICSEARCH_URL``, which answers once the batch is indexed
  and checkpointed.

A client answered 429 or 503 waits the ``Retry-After`` and posts the same batch again,
as Fluent Bit does. Printed: acknowledged records/s, batches/s, p50/p99 latency from
a batch's first post to its 2xx, and the number of 429/503 answers.

``--local --outage-secs 30`` adds a row at ``--outage-size`` records a batch during
which the Elasticsearch node is stopped (``services/down.sh --keep-data``) for that
long and started again on its data, then checks by document id that every record of
every acknowledged batch is in the store once and that the pipeline took each in
once (``component_received_events_total``); it exits 1 if not.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml
from serve_harness import DEMO_JSON_FORMAT, REPO, create_topics, free_port, start_serve, traffic, write_config

TOKEN = "bench-token"

BASELINE_APP = """
import sys, uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
app = FastAPI()
@app.post("/v1/ingest/{source}")
async def ingest(source: str, request: Request) -> JSONResponse:
    body = await request.body()
    return JSONResponse({"accepted": body.count(b"\\n")})
uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False, lifespan="off")
"""


def _bodies(size: int, count: int) -> list[tuple[str, bytes]]:
    """``count`` (side, body) pairs of ``size`` records, from the serve benchmarks' traffic."""
    records = traffic(max(size * count // 2, 1), 200.0)
    by_side: dict[str, list[bytes]] = {"gateway": [], "app": []}
    for side, _, value in records:
        by_side[side].append(orjson.dumps({"date": time.time(), "log": value.decode()}) + b"\n")
    bodies = []
    for n in range(count):
        side = ("gateway", "app")[n % 2]
        own = by_side[side]
        start = (n // 2 * size) % max(len(own) - size + 1, 1)
        bodies.append((side, b"".join(own[start : start + size])))
    return bodies


def _wait_http(port: int, proc: subprocess.Popen[bytes], path: str = "/metrics", method: str = "GET") -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            httpx.request(method, f"http://127.0.0.1:{port}{path}", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"nothing answered on port {port}")


class _Acked:
    """What the clients of one row saw: latencies of acknowledged batches, answers, the batches acknowledged."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.latencies: list[float] = []
        self.statuses: dict[int, int] = {}
        self.batches: list[tuple[str, str, int]] = []  # side, batch id, records


def _run(
    port: int, bodies: list[tuple[str, bytes]], size: int, clients: int, secs: float, max_records: int,
    during: Any = None,
) -> tuple[dict[str, Any], _Acked]:  # fmt: skip
    """One row; ``during()``, if given, runs in its own thread while the clients post (an outage)."""
    acked = _Acked()
    deadline = time.monotonic() + secs
    budget = [max(max_records // size, clients)]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson", "User-Agent": "Fluent-Bit"}

    def client(offset: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as http:
            n = offset
            while time.monotonic() < deadline:
                with acked.lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                side, body = bodies[n % len(bodies)]
                n += clients
                key = uuid.uuid4().hex
                started = time.perf_counter()
                while True:
                    try:
                        answer = http.post(f"/v1/ingest/{side}", content=body, headers={**headers, "Idempotency-Key": key})
                        status, retry_after = answer.status_code, float(answer.headers.get("Retry-After", "1"))
                    except httpx.TransportError:
                        status, retry_after = 0, 1.0
                    with acked.lock:
                        acked.statuses[status] = acked.statuses.get(status, 0) + 1
                    if status in (200, 400):
                        break
                    if status not in (0, 429, 503):
                        raise SystemExit(f"unexpected answer {status}: {answer.text[:200]}")
                    time.sleep(min(retry_after, 30.0))
                elapsed = time.perf_counter() - started
                with acked.lock:
                    acked.latencies.append(elapsed)
                    acked.batches.append((side, key, size))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    side_thread = threading.Thread(target=during) if during is not None else None
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    if side_thread is not None:
        side_thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    if side_thread is not None:
        side_thread.join()
    latencies = acked.latencies
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [latencies[0]] * 99
    row = {
        "batches": len(latencies), "records_per_sec": len(latencies) * size / wall,
        "batches_per_sec": len(latencies) / wall, "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000,
        "refused": sum(n for status, n in acked.statuses.items() if status in (429, 503)),
        "failed": acked.statuses.get(0, 0), "secs": wall,
    }  # fmt: skip
    return row, acked


def _print_row(size: int, name: str, row: dict[str, Any]) -> None:
    print(f"{size:>5} {name:>9} {row['batches']:>8} {row['records_per_sec']:>10.0f} {row['batches_per_sec']:>9.1f} "
          f"{row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['refused']:>7} {row['failed']:>6}", flush=True)  # fmt: skip


def _local_config(directory: Path, prefix: str) -> Path:
    config = {
        "gateway": {"json_format": DEMO_JSON_FORMAT},
        "trust": {"gateway_networks": ["10.0.0.0/24"]},
        "store": {"index_prefix": prefix, "retention_days": 3650},
        "http_ingest": {"tokens": {s: [hashlib.sha256(TOKEN.encode()).hexdigest()] for s in ("gateway", "app")}},
    }
    path = directory / "local.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _services(script: str, *args: str) -> float:
    started = time.monotonic()
    subprocess.run([str(REPO / "services" / script), *args], check=True, capture_output=True, timeout=300)
    return time.monotonic() - started


def _outage(secs: float, after_secs: float, log: list[str]) -> Any:
    def run() -> None:
        time.sleep(after_secs)
        stopped = _services("down.sh", "--keep-data", "elasticsearch")
        log.append(f"node stopped ({stopped:.1f}s to stop)")
        time.sleep(secs)
        started = _services("up.sh", "--keep-data", "elasticsearch")
        log.append(f"node started again after {secs:g}s ({started:.1f}s until ready)")

    return run


def _check_store(url: str, prefix: str, batches: list[tuple[str, str, int]], serve_port: int) -> bool:
    """Every record of every acknowledged batch in the store once, by id; and taken in once by the pipeline."""
    from ingest.records import Dataset, Origin, record_id

    datasets = {"gateway": Dataset.GATEWAY, "app": Dataset.APP}
    expected = [record_id(Origin(datasets[side], f"http:{side}:{key}", n))
                for side, key, size in batches for n in range(1, size + 1)]  # fmt: skip
    indices = f"{prefix}-events-*,{prefix}-deadletter-*"
    with httpx.Client(base_url=url, timeout=120) as http:
        http.post(f"/{indices}/_refresh").raise_for_status()
        found = 0
        for i in range(0, len(expected), 10_000):
            query = {"query": {"ids": {"values": expected[i : i + 10_000]}}}
            found += http.post(f"/{indices}/_count", json=query).raise_for_status().json()["count"]
        total = http.post(f"/{indices}/_count").raise_for_status().json()["count"]
    taken_in = sum(
        float(line.rsplit(" ", 1)[1]) for line in httpx.get(f"http://127.0.0.1:{serve_port}/metrics").text.splitlines()
        if line.startswith('component_received_events_total{component="http_server"')
    )  # fmt: skip
    print(f"store check: {len(expected)} records acknowledged, {found} of their ids in the store, {total} documents "
          f"in all, {taken_in:.0f} taken in by the pipeline")  # fmt: skip
    return found == len(expected) == total == taken_in


def _start_local(config_path: Path, port: int, directory: Path, url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "gatewatch.cli", "serve", "--config", str(config_path), "--store",
         f"elasticsearch:{url}", "--listen", f"127.0.0.1:{port}", "--local-checkpoint", str(directory / "local.ckpt")],
        cwd=REPO, env=env, stdout=(directory / "serve.log").open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("GW_KAFKA_BOOTSTRAP"))
    parser.add_argument("--local", action="store_true", help="serve without Kafka, storing to Elasticsearch")
    parser.add_argument("--elasticsearch", default=os.environ.get("GW_ELASTICSEARCH_URL"), help="for --local")
    parser.add_argument("--sizes", default="1,100,1000", help="records per batch")
    parser.add_argument("--clients", type=int, default=4, help="concurrent posting threads")
    parser.add_argument("--secs", type=float, default=15.0, help="at most this long per row")
    parser.add_argument("--max-records", type=int, default=200_000, help="at most this many records per row")
    parser.add_argument("--stages", default="all", help="serve --stages (detect: no ingest stage shares the process)")
    parser.add_argument("--outage-secs", type=float, default=0.0, help="--local: stop the node this long in a row")
    parser.add_argument("--outage-size", type=int, default=100, help="records a batch in the outage row")
    args = parser.parse_args()
    if args.local and not args.elasticsearch:
        raise SystemExit("no Elasticsearch: services/up.sh elasticsearch, then export GW_ELASTICSEARCH_URL")
    if not args.local and not args.bootstrap:
        raise SystemExit("no Kafka: services/up.sh kafka, then export GW_KAFKA_BOOTSTRAP (.cache/run/services.env)")
    sizes = [int(size) for size in args.sizes.split(",") if size]
    run = uuid.uuid4().hex[:8]
    ok = True
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        directory = Path(tmp)
        servers = {"baseline": free_port(), "gatewatch": free_port()}
        prefix = f"bench-http-{run}"
        if args.local:
            serve = _start_local(_local_config(directory, prefix), servers["gatewatch"], directory, args.elasticsearch)
        else:
            topics = {"gateway": f"bench-http-{run}-gateway", "app": f"bench-http-{run}-app"}
            create_topics(args.bootstrap, topics)
            config_path = write_config(directory, args.bootstrap, topics, f"bench-http-{run}")
            config = yaml.safe_load(config_path.read_text())
            config["http_ingest"] = {"tokens": {s: [hashlib.sha256(TOKEN.encode()).hexdigest()] for s in ("gateway", "app")}}
            config_path.write_text(yaml.safe_dump(config))
            serve = start_serve(config_path, servers["gatewatch"], directory / "serve.log", stages=args.stages)
        baseline = subprocess.Popen([sys.executable, "-c", BASELINE_APP, str(servers["baseline"])], cwd=REPO)
        acknowledged: list[tuple[str, str, int]] = []
        try:
            _wait_http(servers["baseline"], baseline, "/v1/ingest/app", "POST")
            _wait_http(servers["gatewatch"], serve)
            mode = "local (no Kafka), store elasticsearch" if args.local else f"kafka, stages={args.stages}"
            print(f"clients={args.clients} secs<={args.secs:g} records<={args.max_records} {mode} "
                  f"load1={os.getloadavg()[0]:.2f}")  # fmt: skip
            print(f"{'size':>5} {'target':>9} {'batches':>8} {'records/s':>10} {'batches/s':>9} {'p50 ms':>8} "
                  f"{'p99 ms':>8} {'429/503':>7} {'failed':>6}")  # fmt: skip
            for size in sizes:
                bodies = _bodies(size, max(8, min(200, args.max_records // size)))
                for name in ("baseline", "gatewatch"):
                    row, acked = _run(servers[name], bodies, size, args.clients, args.secs, args.max_records)
                    _print_row(size, name, row)
                    if name == "gatewatch":
                        acknowledged += acked.batches
            if args.local and args.outage_secs > 0:
                size = args.outage_size
                bodies = _bodies(size, max(8, min(200, args.max_records // size)))
                events: list[str] = []
                row, acked = _run(servers["gatewatch"], bodies, size, args.clients, args.secs + args.outage_secs + 120,
                                  args.max_records, during=_outage(args.outage_secs, 3.0, events))  # fmt: skip
                _print_row(size, "outage", row)
                print(f"outage row: {'; '.join(events)}; answers {dict(sorted(row_statuses(acked).items()))}")
                acknowledged += acked.batches
                ok = row["refused"] > 0
                if not ok:
                    print("the clients were never answered 429/503 during the outage")
            if args.local:
                ok = _check_store(args.elasticsearch, prefix, acknowledged, servers["gatewatch"]) and ok
        finally:
            for proc in (baseline, serve):
                proc.terminate()
            for proc in (baseline, serve):
                proc.wait(timeout=120)
            if args.local:
                with httpx.Client(base_url=args.elasticsearch, timeout=60) as http:
                    listed = http.get(f"/_cat/indices/{prefix}-*", params={"format": "json", "h": "index"})
                    names = [row["index"] for row in listed.json()] if listed.is_success else []
                    if names:  # by name: the node refuses wildcard deletes
                        http.delete("/" + ",".join(names))
    return 0 if ok else 1


def row_statuses(acked: _Acked) -> dict[int, int]:
    with acked.lock:
        return dict(acked.statuses)


if __name__ == "__main__":
    raise SystemExit(main())
