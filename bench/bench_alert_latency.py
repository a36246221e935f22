"""How long after its evidence does a live alert reach the Kafka alerts topic?

    services/up.sh kafka
    PYTHONPATH=. .venv/bin/python bench/bench_alert_latency.py --lateness 120 10

For each ``correlate.allowed_lateness_secs`` given, ``gatewatch serve --store
none`` consumes live traffic (``--rate`` requests a second, one gateway and one
app line each, stamped with the wall clock, keyed by request id, 4 partitions
per topic). After ``--warmup`` seconds two probes are produced at once:

- an app line served to a peer outside the gateway's network (``gateway_bypass``,
  reason ``untrusted_peer``: decided on the event itself);
- an app line answered 200 to a token that expired an hour ago
  (``token_expired_accepted``: decided on the event itself);
- an app line from the gateway's own address whose gateway line never comes
  (``gateway_bypass``, reason ``no_gateway_record``: decided on the joined request,
  so after ``correlate.join_window_secs`` too).

Rules decided on one event run as the event arrives, before the reorder buffer;
the joined-request rule waits for the buffer (``allowed_lateness_secs``) and the
join window.

Printed: the seconds from producing each probe to its alert on the alerts topic.
"""

from __future__ import annotations

import argparse
import os
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path

import orjson
from kafka import KafkaConsumer, KafkaProducer

from serve_harness import create_topics, free_port, iso, start_serve, write_config

from gatewatch.demo.render import DEMO_JSON_FORMAT, render_json  # after serve_harness: it puts the repo on sys.path

GATEWAY_PEER = "10.0.0.10"  # inside trust.gateway_networks (10.0.0.0/24) of bench_serve's config
OUTSIDE_PEER = "10.9.9.9"
# what each probe is called here -> (rule, reason) of the alert it must raise
PROBES = {
    "untrusted_peer": ("gateway_bypass", "untrusted_peer"),
    "expired_token": ("token_expired_accepted", None),
    "no_gateway_record": ("gateway_bypass", "no_gateway_record"),
}


def app_line(rid: str, ts: float, peer: str, token: dict | None = None) -> bytes:
    return orjson.dumps({
        "ts": iso(ts), "level": "info", "msg": "invoice fetched", "request_id": rid, "method": "GET",
        "path": "/v1/invoices/1", "status": 200, "latency_ms": 4.0, "user_id": "user-1", "org_id": "org-1",
        "peer": {"ip": peer}, **({"token": token} if token else {}),
    })  # fmt: skip


def gateway_line(rid: str, ts: float) -> bytes:
    return render_json({
        "START_TIME": iso(ts), "REQ(:METHOD)": "GET", "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)": "/v1/invoices/1",
        "PROTOCOL": "HTTP/1.1", "RESPONSE_CODE": 200, "RESPONSE_FLAGS": "-", "BYTES_RECEIVED": 0, "BYTES_SENT": 512,
        "DURATION": 5, "REQ(X-REQUEST-ID)": rid, "REQ(:AUTHORITY)": "api.billing.example",
        "UPSTREAM_HOST": "10.1.0.20:8080", "UPSTREAM_CLUSTER": "cluster_billing", "ROUTE_NAME": "invoices",
        "DOWNSTREAM_REMOTE_ADDRESS": "203.0.113.7:50000",
    }, DEMO_JSON_FORMAT)  # fmt: skip


class LiveTraffic(threading.Thread):
    """Normal requests at ``rate`` a second, stamped now, until stopped; ``probe`` adds the two probes."""

    def __init__(self, bootstrap: str, topics: dict[str, str], rate: float) -> None:
        super().__init__(daemon=True)
        self.topics, self.rate = topics, rate
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5)
        self.stop = threading.Event()
        self.lock = threading.Lock()

    def send(self, side: str, rid: str, value: bytes) -> None:
        with self.lock:
            self.producer.send(self.topics[side], key=rid.encode(), value=value)
            self.producer.flush()

    def run(self) -> None:
        n = 0
        while not self.stop.wait(1.0 / self.rate):
            rid, now = f"live-{n}", time.time()
            self.send("gateway", rid, gateway_line(rid, now))
            self.send("app", rid, app_line(rid, now + 0.003, GATEWAY_PEER))
            n += 1

    def probe(self) -> dict[str, tuple[str, float]]:
        """probe -> (request id, wall time just before it was produced)."""
        probes = {reason: f"probe-{reason}-{uuid.uuid4().hex[:6]}" for reason in PROBES}
        now = time.time()
        expired = {"jti": f"jti-{uuid.uuid4().hex[:6]}", "exp": now - 3600}
        self.send("app", probes["untrusted_peer"], app_line(probes["untrusted_peer"], now, OUTSIDE_PEER))
        self.send("app", probes["expired_token"], app_line(probes["expired_token"], now, GATEWAY_PEER, expired))
        self.send("app", probes["no_gateway_record"], app_line(probes["no_gateway_record"], now, GATEWAY_PEER))
        return {probe: (rid, now) for probe, rid in probes.items()}


def measure(bootstrap: str, directory: Path, lateness: float, rate: float, warmup: float, limit: float) -> dict:
    run = uuid.uuid4().hex[:8]
    topics = {"gateway": f"lat-{run}-gateway", "app": f"lat-{run}-app"}
    create_topics(bootstrap, topics)
    group = f"lat-{run}"
    config = write_config(directory, bootstrap, topics, group, correlate={"allowed_lateness_secs": lateness})
    alerts = KafkaConsumer(f"{group}-alerts", bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                           group_id=None, consumer_timeout_ms=500)  # fmt: skip
    serve = start_serve(config, free_port(), directory / f"{group}.log")
    traffic = LiveTraffic(bootstrap, topics, rate)
    traffic.start()
    seen: dict[str, float] = {}
    try:
        time.sleep(warmup)
        probes = traffic.probe()
        deadline = time.time() + limit
        while len(seen) < len(probes) and time.time() < deadline:
            for message in alerts:
                alert = orjson.loads(message.value)
                for probe, (rid, _) in probes.items():
                    if rid in alert.get("request_ids", ()) and PROBES[probe] == (alert["rule"], alert.get("reason")):
                        seen.setdefault(probe, time.time())
            if serve.poll() is not None:
                raise SystemExit((directory / f"{group}.log").read_text()[-2000:])
    finally:
        traffic.stop.set()
        traffic.join()
        serve.send_signal(signal.SIGTERM)
        serve.wait(timeout=60)
        alerts.close()
    return {probe: (seen[probe] - sent if probe in seen else None) for probe, (_, sent) in probes.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--bootstrap", default=os.environ.get("GW_KAFKA_BOOTSTRAP", "127.0.0.1:19092"))
    parser.add_argument("--lateness", type=float, nargs="+", default=[120.0, 10.0], help="allowed_lateness_secs")
    parser.add_argument("--rate", type=float, default=20.0, help="live requests per second")
    parser.add_argument("--warmup", type=float, default=15.0, help="seconds of live traffic before the probes")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for lateness in args.lateness:
            limit = lateness + 30.0 + 60.0  # the join window (30 s default) and a minute of slack
            rows.append((lateness, measure(args.bootstrap, Path(tmp), lateness, args.rate, args.warmup, limit)))
    print(f"{'allowed_lateness_secs':>22}" + "".join(f"{probe:>19}" for probe in PROBES) + "   (seconds to alert)")
    for lateness, found in rows:
        cells = [f"{found[p]:.2f}" if found[p] is not None else "none" for p in PROBES]
        print(f"{lateness:22.0f}" + "".join(f"{cell:>19}" for cell in cells))


if __name__ == "__main__":
    main()
