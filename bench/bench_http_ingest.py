"""Load test of HTTP ingest on loopback, bounded in count and time, beside a same-run baseline.

    services/up.sh kafka && set -a && . .cache/run/services.env && set +a
    .venv/bin/python bench/bench_http_ingest.py [--secs 15] [--clients 4] [--sizes 1,100,1000]

For each batch size, ``--clients`` threads post Fluent Bit ``json_lines`` batches
(``{"date": ..., "log": LINE}`` a line; gateway and app batches alternate) as fast as
the answers come, for ``--secs`` seconds or ``--max-records`` records, to

- ``baseline``: a FastAPI endpoint on uvicorn (one process, as serve runs it) that
  only reads the body and answers 200;
- ``gatewatch``: ``gatewatch serve --store none`` (both stages running, so its
  ingest stage consumes what HTTP ingest produces on the same cores), whose
  ``POST /v1/ingest/{side}`` answers once Kafka acknowledged every record.

Printed: acknowledged records/s, batches/s, p50/p99 latency of one request and the
share of answers that were not 200. Figures only: nothing is asserted.
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
from serve_harness import REPO, create_topics, free_port, start_serve, traffic, write_config

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


def _run(port: int, bodies: list[tuple[str, bytes]], size: int, clients: int, secs: float, max_records: int) -> dict[str, Any]:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    deadline = time.monotonic() + secs
    budget = [max(max_records // size, clients)]
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/x-ndjson", "User-Agent": "Fluent-Bit"}

    def client(offset: int) -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60) as http:
            n = offset
            while time.monotonic() < deadline:
                with lock:
                    if budget[0] <= 0:
                        return
                    budget[0] -= 1
                side, body = bodies[n % len(bodies)]
                n += clients
                started = time.perf_counter()
                status = http.post(f"/v1/ingest/{side}", content=body, headers=headers).status_code
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ok = statuses.get(200, 0)
    cuts = statistics.quantiles(latencies, n=100) if len(latencies) >= 2 else [latencies[0]] * 99
    return {
        "batches": len(latencies), "records_per_sec": ok * size / wall, "batches_per_sec": len(latencies) / wall,
        "p50_ms": cuts[49] * 1000, "p99_ms": cuts[98] * 1000, "not_200": sum(statuses.values()) - ok,
        "secs": wall,
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bootstrap", default=os.environ.get("GW_KAFKA_BOOTSTRAP"))
    parser.add_argument("--sizes", default="1,100,1000", help="records per batch")
    parser.add_argument("--clients", type=int, default=4, help="concurrent posting threads")
    parser.add_argument("--secs", type=float, default=15.0, help="at most this long per row")
    parser.add_argument("--max-records", type=int, default=200_000, help="at most this many records per row")
    parser.add_argument("--stages", default="all", help="serve --stages (detect: no ingest stage shares the process)")
    args = parser.parse_args()
    if not args.bootstrap:
        raise SystemExit("no Kafka: services/up.sh kafka, then export GW_KAFKA_BOOTSTRAP (.cache/run/services.env)")
    sizes = [int(size) for size in args.sizes.split(",")]
    run = uuid.uuid4().hex[:8]
    topics = {"gateway": f"bench-http-{run}-gateway", "app": f"bench-http-{run}-app"}
    create_topics(args.bootstrap, topics)
    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        directory = Path(tmp)
        config_path = write_config(directory, args.bootstrap, topics, f"bench-http-{run}")
        config = yaml.safe_load(config_path.read_text())
        config["http_ingest"] = {"tokens": {s: [hashlib.sha256(TOKEN.encode()).hexdigest()] for s in ("gateway", "app")}}
        config_path.write_text(yaml.safe_dump(config))
        servers = {"baseline": free_port(), "gatewatch": free_port()}
        baseline = subprocess.Popen([sys.executable, "-c", BASELINE_APP, str(servers["baseline"])], cwd=REPO)
        serve = start_serve(config_path, servers["gatewatch"], directory / "serve.log", stages=args.stages)
        try:
            _wait_http(servers["baseline"], baseline, "/v1/ingest/app", "POST")
            _wait_http(servers["gatewatch"], serve)
            print(f"clients={args.clients} secs<={args.secs:g} records<={args.max_records} stages={args.stages} "
                  f"load1={os.getloadavg()[0]:.2f}")  # fmt: skip
            print(f"{'size':>5} {'target':>9} {'batches':>8} {'records/s':>10} {'batches/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'not 200':>7}")
            for size in sizes:
                bodies = _bodies(size, max(8, min(200, args.max_records // size)))
                for name in ("baseline", "gatewatch"):
                    row = _run(servers[name], bodies, size, args.clients, args.secs, args.max_records)
                    print(f"{size:>5} {name:>9} {row['batches']:>8} {row['records_per_sec']:>10.0f} "
                          f"{row['batches_per_sec']:>9.1f} {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['not_200']:>7}",
                          flush=True)  # fmt: skip
        finally:
            for proc in (baseline, serve):
                proc.terminate()
            for proc in (baseline, serve):
                proc.wait(timeout=120)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
