"""Real 429s: an Elasticsearch node with a tiny indexing-pressure limit, shared with a noisy neighbour.

``indexing_pressure.memory.limit`` is a static node setting, so the test starts
a node of its own (``services/up.sh`` with ``GW_SERVICES_RUN``, free ports and
``GW_ELASTICSEARCH_SETTINGS``; 256 MB heap, about 10-20 s). A bulk larger than
the limit would be refused for ever, so serve's bulks are kept under it
(``store.bulk_max_docs``) and a neighbour thread keeps bulks of its own in
flight: whenever serve's bulk and the neighbour's overlap past the limit, the
node answers 429 ``es_rejected_execution_exception`` and serve backs off and
sends again. Afterwards: the node counted rejections, serve saw 429s, and still
every record is stored once and the alerts are replay's.
"""

from __future__ import annotations

import os
import random
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from test_faults import _assert_stored_once, _settled
from test_scale_out import Indices
from test_serve import REPO, Serve, Topics, build_traffic, replay_alerts, topics  # noqa: F401 (fixture)

LIMIT = "1mb"
NEIGHBOUR_BULK_BYTES = 800_000  # under the limit alone, past it with one of serve's bulks (~450 kB) in flight


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def pressure_node() -> Iterator[str]:
    """A single Elasticsearch node of this module's own, with ``indexing_pressure.memory.limit`` = LIMIT."""
    port = _free_port()
    env = {
        **os.environ,
        "GW_SERVICES_RUN": str(REPO / ".cache" / f"run-pressure-{uuid.uuid4().hex[:6]}"),
        "GW_ELASTICSEARCH_PORT": str(port),
        "GW_ELASTICSEARCH_TRANSPORT_PORT": str(_free_port()),
        "GW_SERVICES_HEAP": "256m",
        "GW_ELASTICSEARCH_SETTINGS": f"indexing_pressure.memory.limit={LIMIT}",
    }
    services = REPO / "services"
    t0 = time.monotonic()
    started = subprocess.run([str(services / "up.sh"), "elasticsearch"], env=env, capture_output=True, text=True)
    try:
        if started.returncode != 0:
            pytest.fail(f"the pressure node did not start:\n{started.stdout}\n{started.stderr}", pytrace=False)
        print(f"pressure node ready in {time.monotonic() - t0:.1f}s")
        yield f"http://127.0.0.1:{port}"
    finally:
        subprocess.run([str(services / "down.sh"), "elasticsearch"], env=env, capture_output=True, timeout=120)


class Neighbour(threading.Thread):
    """Bulk after bulk of its own into the node, with short random pauses, until stopped."""

    def __init__(self, url: str, seed: int) -> None:
        super().__init__(name="neighbour", daemon=True)
        self.url = url
        self.rng = random.Random(seed)
        self.stopping = threading.Event()
        self.answers: dict[int, int] = {}

    def run(self) -> None:
        doc = b'{"index":{"_index":"neighbour"}}\n{"pad":"' + b"x" * 4000 + b'"}\n'
        body = doc * (NEIGHBOUR_BULK_BYTES // len(doc))
        with httpx.Client(base_url=self.url, timeout=60.0) as http:
            while not self.stopping.is_set():
                status = http.post("/_bulk", content=body, headers={"content-type": "application/x-ndjson"}).status_code
                self.answers[status] = self.answers.get(status, 0) + 1
                self.stopping.wait(self.rng.uniform(0.0, 0.05))


def _rejections(url: str) -> int:
    stats = httpx.get(f"{url}/_nodes/stats/indexing_pressure", timeout=30).json()
    memory = next(iter(stats["nodes"].values()))["indexing_pressure"]["memory"]["total"]
    return int(memory["coordinating_rejections"]) + int(memory["primary_rejections"])


def test_429s_from_indexing_pressure_store_once_and_alert_as_replay(
    topics: Topics, tmp_path: Path, pressure_node: str, fault_counts: Callable[[str], None]
) -> None:
    from test_faults import SEED

    lines = build_traffic(1500)
    prefix = f"gw-pressure-{uuid.uuid4().hex[:8]}"
    base = {"trust": {"gateway_networks": ["10.0.0.0/24"]},
            "store": {"index_prefix": prefix, "retention_days": 3650, "bulk_max_docs": 300}}  # fmt: skip
    config = topics.config(tmp_path, base=base)
    indices = Indices(pressure_node, prefix)
    neighbour = Neighbour(pressure_node, SEED)
    serve: Serve | None = None
    try:
        serve = Serve(config, f"elasticsearch:{pressure_node}", tmp_path / "serve.log")
        before = _rejections(pressure_node)
        neighbour.start()
        topics.produce(lines, 200, 0.1)
        _settled(topics, serve)
        neighbour.stopping.set()
        neighbour.join(timeout=60)
        assert serve.stop() == 0, serve.output()
        assert "Traceback" not in serve.output()

        rejected_by_node = _rejections(pressure_node) - before
        seen_by_serve = serve.output().count("[status:429")
        assert neighbour.answers.get(200, 0) > 0, neighbour.answers  # the neighbour was not refused for ever
        events, dead = _assert_stored_once(indices, topics, len(lines))
        alerts = indices.alerts()
        assert {rule for _, rule, *_ in alerts} >= {"gateway_bypass", "http_5xx_burst"}
        assert alerts == replay_alerts(config, lines, tmp_path)
        fault_counts(
            f"indexing pressure {LIMIT}: node rejections={rejected_by_node} serve saw 429 x{seen_by_serve} "
            f"neighbour answers={neighbour.answers}; records={len(lines)} events={events} dead_letters={dead} "
            f"alerts={len(alerts)}"
        )
        assert rejected_by_node > 0, (rejected_by_node, neighbour.answers)
        if seen_by_serve == 0:  # the node refused only the neighbour this run: timing, not a fault of serve
            pytest.xfail(f"no 429 reached serve this run (node rejections {rejected_by_node}); data checked anyway")
    finally:
        neighbour.stopping.set()
        if serve is not None and serve.process.poll() is None:
            serve.kill()
        indices.cleanup()
