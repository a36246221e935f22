"""The Elasticsearch node goes away for OUTAGE_SECS mid-stream and comes back: nothing lost, nothing duplicated.

``gatewatch serve --store elasticsearch:URL`` runs as a subprocess over the
demo traffic (4-partition topics keyed by request id). Once some events are
indexed, the node goes away while the second half of the traffic arrives, in
one of two ways:

- ``hang``: the whole Elasticsearch process group is frozen with SIGSTOP (the
  client sees timeouts, not refusals), then resumed with SIGCONT;
- ``stop``: the node is shut down (``services/down.sh --keep-data``: the client
  sees refused connections) and started again on the same data
  (``services/up.sh --keep-data``).

serve must pause, report not-ready, keep running and retry the same batches.
Afterwards every record must be stored exactly once (events + dead letters,
by origin and by document id) and the alerts must be those of ``gatewatch
replay`` over the same lines.

The node is shared with other tests: it is always resumed or started again (``finally``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from test_scale_out import demo_on_elasticsearch, detect_caught_up, split_halves
from test_serve import REPO, Serve, Topics, replay_alerts, topics, wait_for  # noqa: F401 (fixture)

OUTAGE_SECS = 60
PID_FILE = REPO / ".cache" / "run" / "elasticsearch.pid"


def _store_sent(serve: Serve) -> float:
    """Documents the store acknowledged (``component_sent_events_total{component="store"}``)."""
    total = 0.0
    for line in serve.get("/metrics")[1].splitlines():
        if line.startswith("component_sent_events_total{") and 'component="store"' in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def _elasticsearch_pgid() -> int:
    pid = int(PID_FILE.read_text().split()[0])
    pgid = os.getpgid(pid)
    assert pgid == pid, f"elasticsearch (pid {pid}) is not a process-group leader (pgid {pgid})"
    return pgid


class Outage:
    """Takes the shared node away (``hang`` or ``stop``) and brings it back; ``back`` is safe to call twice."""

    def __init__(self, how: str) -> None:
        self.how = how
        self.pgid = _elasticsearch_pgid()
        self.away = False

    def start(self) -> None:
        self.away = True
        if self.how == "hang":
            os.killpg(self.pgid, signal.SIGSTOP)
        else:
            _services("down.sh", "--keep-data", "elasticsearch")

    def back(self) -> None:
        if not self.away:
            return
        self.away = False
        if self.how == "hang":
            os.killpg(self.pgid, signal.SIGCONT)
        else:
            _services("up.sh", "--keep-data", "elasticsearch")


def _services(script: str, *args: str) -> None:
    subprocess.run([str(REPO / "services" / script), *args], check=True, capture_output=True, timeout=300)


@pytest.mark.parametrize("how", ["hang", "stop"])
def test_search_node_goes_away_mid_stream_nothing_lost_or_duplicated(
    topics: Topics, tmp_path: Path, elasticsearch_url: str, how: str, fault_counts: Callable[[str], None]
) -> None:
    lines, config, indices = demo_on_elasticsearch(topics, tmp_path, elasticsearch_url, "outage")
    halves = split_halves(lines)
    outage = Outage(how)
    serve: Serve | None = None
    try:
        topics.produce(halves[0])
        serve = Serve(config, f"elasticsearch:{elasticsearch_url}", tmp_path / "serve.log")
        wait_for(lambda: _store_sent(serve) > 0, 60, "some events to be indexed", serve)  # type: ignore[arg-type]

        # -- the node hangs; the second half arrives meanwhile -------------------------------
        ready_codes: list[int] = []
        health_codes: list[int] = []
        producer = threading.Thread(target=topics.produce, args=(halves[1], 500, 0.05))
        away_at = time.monotonic()
        outage.start()
        try:
            producer.start()
            while time.monotonic() - away_at < OUTAGE_SECS:
                assert serve.process.poll() is None, f"serve exited during the outage:\n{serve.output()[-4000:]}"
                ready_codes.append(serve.get("/readyz")[0])
                health_codes.append(serve.get("/healthz")[0])
                time.sleep(1.0)
            producer.join(timeout=30)
            assert not producer.is_alive(), "the producer did not finish during the outage"
            sent_while_away = _store_sent(serve)
            backpressure = serve.metric("gatewatch_backpressure")
            store_ok = orjson.loads(serve.get("/readyz")[1] or "{}").get("store_ok")
        finally:
            outage.back()
        resumed_at = time.monotonic()

        assert serve.process.poll() is None, serve.output()
        assert 503 in ready_codes, f"/readyz never said 503 during the outage: {Counter(ready_codes)}"
        assert health_codes[-1] == 200, f"/healthz during the outage: {health_codes}"
        assert backpressure == 1 and store_ok is False
        assert not topics.all_committed()  # nothing of the second half was committed without the store

        # -- the node is back: everything is delivered ---------------------------------------
        wait_for(lambda: _store_sent(serve) > sent_while_away, 90, "the first delivery after the node was back", serve)
        first_delivery_secs = time.monotonic() - resumed_at
        wait_for(lambda: serve.get("/readyz")[0] == 200, 60, "/readyz to recover", serve)
        wait_for(topics.all_committed, 90, "every record committed after the outage", serve)
        wait_for(lambda: detect_caught_up(topics), 90, "the detect stage to catch up", serve)
        print(
            f"outage {OUTAGE_SECS}s: /readyz {dict(Counter(ready_codes))}; first delivery "
            f"{first_delivery_secs:.1f}s and caught up {time.monotonic() - resumed_at:.1f}s after the node was back"
        )
        assert serve.stop() == 0, serve.output()
        assert "event=delivery_retry" in serve.output()

        # Every record exactly once: by origin (events + dead letters) ...
        expected = topics.expected_origins()
        assert sum(expected.values()) == len(lines)
        stored = indices.origins()
        assert stored == expected
        # ... and by document id: no id twice, one per record produced.
        ids = Counter(hit["_id"] for kind in ("events", "deadletter") for hit in indices.all(kind, ["id"]))
        assert [i for i, n in ids.items() if n != 1] == []
        assert len(ids) == len(lines)

        alerts = indices.alerts()
        replayed = replay_alerts(config, lines, tmp_path)
        assert len({rule for _, rule, *_ in alerts}) >= 6
        assert {(rule, etype, value) for _, rule, etype, value, *_ in alerts} == {
            (rule, etype, value) for _, rule, etype, value, *_ in replayed
        }
        assert alerts == replayed  # the same ids, counts and evidence, too
        dead = sum(1 for hit in indices.all("deadletter", ["id"]))
        fault_counts(
            f"elasticsearch {how} {OUTAGE_SECS}s: records={len(lines)} events={len(ids) - dead} dead_letters={dead} "
            f"alerts={len(alerts)} /readyz={dict(Counter(ready_codes))}"
        )
    finally:
        outage.back()  # never leave the shared node away
        if serve is not None and serve.process.poll() is None:
            serve.kill()
        indices.cleanup()
