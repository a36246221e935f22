"""An unkeyed backlog whose partitions end at different event times: no partition holds windows open.

The measured case of issue 14 item 3, scaled down: a shipper that does not key
its records (rsyslog ``omkafka``) spread a backlog over 4 partitions per topic,
and one gateway partition's last record is 9 minutes of event time older than
the others'. Once serve has read the backlog, the caught-up, quiet partition
must stop holding the watermark: it reaches the newest event time minus
``allowed_lateness_secs`` within seconds (before: ~9 minutes, at wall-clock
speed), and the alerts, including a 5xx storm after the short partition ended,
are those of ``gatewatch replay`` over the same records.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson
from test_serve import (  # noqa: F401 (topics is a fixture)
    PARTITIONS, T0, Line, Serve, Topics, _app, _gateway, replay_alerts, stored_alerts, topics, wait_for,
)  # fmt: skip

REQUESTS = 2400
GAP_SECS = 0.5  # 20 minutes of event time
SHORT_PARTITION = 2
SHORT_BY_SECS = 540.0  # the short gateway partition's data ends 9 minutes before the others'
LATENESS_SECS = 120.0
IDLE_TIMEOUT_SECS = 2.0
# Generous against a loaded CI machine; holding the watermark as before takes SHORT_BY_SECS.
CLOSE_WITHIN_SECS = 30.0


def unevenly_partitioned_traffic() -> list[Line]:
    """Unkeyed lines with explicit partitions: gateway partition 2 gets nothing after its cut-off."""
    end = T0 + REQUESTS * GAP_SECS
    cutoff = end - SHORT_BY_SECS
    others = [p for p in range(PARTITIONS) if p != SHORT_PARTITION]
    storm = range(1400, 1460)  # 60 errors in 30 s, after the cut-off: its window closes only if nothing holds it
    lines: list[Line] = []
    for i in range(REQUESTS):
        ts = T0 + i * GAP_SECS
        rid = f"rid-{i:06d}"
        status = 503 if i in storm else 200
        partition = i % PARTITIONS
        if partition == SHORT_PARTITION and ts > cutoff:
            partition = others[(i // PARTITIONS) % len(others)]
        path = f"/v1/invoices/{i}"
        gateway, app = _gateway(ts, rid, path, status), _app(ts + 0.003, rid, path, status)
        lines.append(Line("gateway", ts, None, gateway.value, partition))
        lines.append(Line("app", ts + 0.003, None, app.value, (i + 1) % PARTITIONS))
        if i in (300, 1500):  # the app served a rogue pod directly
            lines.append(Line("app", ts + 0.011, None, _app(ts + 0.011, f"rogue-{i}", "/v1", 200, "10.9.9.9").value, 0))
        if i == 1600:  # a gateway peer, but the gateway never logged the request
            lines.append(Line("app", ts + 0.013, None, _app(ts + 0.013, f"ghost-{i}", "/v1/charges", 201).value, 3))
    lines.sort(key=lambda line: line.ts)
    return lines


def test_a_short_partition_does_not_hold_the_last_windows(topics: Topics, tmp_path: Path) -> None:
    lines = unevenly_partitioned_traffic()
    topics.produce(lines)  # the whole backlog is there before serve starts
    newest = max(line.ts for line in lines)
    base = {
        "trust": {"gateway_networks": ["10.0.0.0/24"]},
        "correlate": {"allowed_lateness_secs": LATENESS_SECS, "idle_timeout_secs": IDLE_TIMEOUT_SECS},
    }
    config = topics.config(tmp_path, base=base)
    store = tmp_path / "store.duckdb"
    started = time.monotonic()
    serve = Serve(config, store, tmp_path / "serve.log")
    wait_for(lambda: serve.metric("component_received_events_total") >= len(lines), 60, "the backlog read", serve)
    read_at = time.monotonic()
    wait_for(lambda: serve.metric("gatewatch_watermark_seconds") >= newest - LATENESS_SECS, CLOSE_WITHIN_SECS,
             "the watermark to reach the newest event time minus the lateness", serve)  # fmt: skip
    closed_at = time.monotonic()
    print(f"\nbacklog of {len(lines)} records read in {read_at - started:.1f} s; watermark at the newest event time "
          f"minus the lateness {closed_at - read_at:.1f} s later (idle_timeout_secs={IDLE_TIMEOUT_SECS})")  # fmt: skip

    # Nobody keyed anything, and serve says so.
    ready = orjson.loads(serve.get("/readyz")[1])
    assert ready["input_keying"] == {topics.names["gateway"]: "not_keyed", topics.names["app"]: "not_keyed"}
    assert serve.metric("gatewatch_input_unkeyed_records_total") == len(lines)
    assert serve.metric("gatewatch_late_events_total") == 0
    assert serve.stop() == 0, serve.output()

    alerts = stored_alerts(store)
    assert {rule for _, rule, *_ in alerts} >= {"gateway_bypass", "http_5xx_burst"}
    assert alerts == replay_alerts(config, lines, tmp_path)
