"""serve without Kafka, in process: when a batch is acknowledged, retried, refused, and what a restart keeps.

The pipeline thread and the HTTP routes run for real (httpx's ASGI transport);
the store is a test double that can be down. The same paths against real
DuckDB and Elasticsearch, a real outage, rotations and ``kill -9`` are in
tests/integration/test_serve_local_end_to_end.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI

from gatewatch.cli import main
from gatewatch.config import parse_config
from gatewatch.errors import SourceError, StoreUnavailableError
from gatewatch.http_ingest import IngestAnswer, LocalHttpIngest, UnpackedBatch, add_routes
from gatewatch.local_checkpoint import BatchLog, LocalState, LoggedBatch, load_local_state, save_local_state
from gatewatch.metrics import ServeMetrics
from gatewatch.serve_local import LocalPipeline, _Abandoned, kafka_configured
from ingest.records import Dataset, Origin, record_id
from ingest.sinks.base import Batch

TOKEN = "local-gateway-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def _line(second: int, rid: str) -> str:
    return (f'[2026-03-02T09:00:{second:02d}.000Z] "GET /v1/invoices HTTP/1.1" 200 - 0 120 5 4 "203.0.113.7" '
            f'"curl/8.5.0" "{rid}" "billing" "10.1.0.20:8080"')  # fmt: skip


def _body(first: int, count: int) -> bytes:
    """Fluent Bit ``json_lines``: one record a line, the log line under ``log``."""
    return b"".join(orjson.dumps({"date": 1.0, "log": _line(n % 60, f"rid-{n}")}) + b"\n" for n in range(first, first + count))


def _config(**http_ingest: Any) -> Any:
    return parse_config({"http_ingest": {"tokens": {"gateway": [hashlib.sha256(TOKEN.encode()).hexdigest()]},
                                         **http_ingest}})  # fmt: skip


class _Store:
    """A store that keeps every document id it was written, and can be down."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.down = threading.Event()
        self.refused = 0

    def write(self, batch: Batch) -> None:
        if self.down.is_set():
            self.refused += 1
            raise StoreUnavailableError("store unreachable", retry_after_secs=0.2)
        self.ids += [event.id for event in batch.events] + [letter_id(letter) for letter in batch.dead_letters]

    def close(self) -> None:
        pass


def letter_id(letter: Any) -> str:
    return record_id(letter.origin)


class _Local:
    """A LocalPipeline on its thread, and an ASGI client for its routes."""

    def __init__(self, tmp_path: Path, store: _Store, **http_ingest: Any) -> None:
        self.config, self.metrics, self.stop = _config(**http_ingest), ServeMetrics(), threading.Event()
        self.pipeline = LocalPipeline(self.config, store, None, self.metrics, tmp_path / "cp", None, self.stop)
        self.app = FastAPI()
        add_routes(self.app, LocalHttpIngest(self.config, self.metrics, self.pipeline))
        self.thread = threading.Thread(target=self.pipeline.run)
        self.thread.start()

    async def post(self, client: httpx.AsyncClient, body: bytes) -> httpx.Response:
        return await client.post("/v1/ingest/gateway", content=body, headers=AUTH)

    def run(self, scenario: Any) -> Any:
        async def go() -> Any:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gatewatch", timeout=30) as client:
                return await scenario(client)

        return asyncio.run(go())

    def close(self) -> int:
        self.stop.set()
        self.thread.join(timeout=30)
        self.pipeline.close()
        return self.pipeline.code


def _offered(offer: tuple[Future[bool], bool] | IngestAnswer) -> tuple[Future[bool], bool]:
    assert not isinstance(offer, IngestAnswer), offer
    return offer


def _ids(batch_id: str, count: int) -> list[str]:
    return [record_id(Origin(Dataset.GATEWAY, f"http:gateway:{batch_id}", n)) for n in range(1, count + 1)]


def test_kafka_is_used_only_when_a_kafka_section_names_brokers() -> None:
    assert not kafka_configured(parse_config({}))
    assert not kafka_configured(parse_config({"kafka": {"bootstrap_servers": []}}))
    assert kafka_configured(parse_config({"kafka": {"bootstrap_servers": ["127.0.0.1:9092"]}}))


def test_a_batch_is_stored_once_and_a_retry_is_answered_without_feeding_it_again(tmp_path: Path) -> None:
    store = _Store()
    local = _Local(tmp_path, store)
    body = _body(0, 5)

    async def scenario(client: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response]:
        return await local.post(client, body), await local.post(client, body)

    try:
        first, again = local.run(scenario)
    finally:
        assert local.close() == 0
    assert first.status_code == 200 and first.json()["accepted"] == 5 and "duplicate" not in first.json()
    assert again.status_code == 200 and again.json()["duplicate"] is True
    assert store.ids == _ids(first.json()["batch_id"], 5)
    assert local.pipeline.pipeline.stats.records_in == 5  # counted once by the rules too
    state = load_local_state(tmp_path / "cp")
    assert state is not None and state.batches == [f"gateway:{first.json()['batch_id']}"]


def test_an_idempotency_key_sent_again_with_other_records_is_another_batch(tmp_path: Path) -> None:
    # A red-team trial: batch B posted under A's key was answered 200 "duplicate" and never stored.
    store = _Store()
    local = _Local(tmp_path, store)
    first, other = _body(0, 3), _body(10, 2)
    keyed = {**AUTH, "Idempotency-Key": "batch-1"}

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        return [await client.post("/v1/ingest/gateway", content=body, headers=keyed) for body in (first, other, first)]

    try:
        a, b, retried = local.run(scenario)
    finally:
        assert local.close() == 0
    assert [r.status_code for r in (a, b, retried)] == [200, 200, 200]
    assert "duplicate" not in b.json() and retried.json()["duplicate"] is True
    assert a.json()["batch_id"].startswith("batch-1.") and a.json()["batch_id"] != b.json()["batch_id"]
    assert sorted(store.ids) == sorted(_ids(a.json()["batch_id"], 3) + _ids(b.json()["batch_id"], 2))


def test_store_down_answers_503_with_retry_after_and_the_retry_waits_for_the_batch_in_hand(tmp_path: Path) -> None:
    store = _Store()
    store.down.set()
    local = _Local(tmp_path, store, produce_timeout_secs=2.0)
    body, other = _body(0, 3), _body(10, 2)

    async def scenario(client: httpx.AsyncClient) -> list[httpx.Response]:
        waited = await local.post(client, body)  # fed, then the store refused it: not durable in time
        refused = await local.post(client, other)  # a new batch while the store is down: not taken in
        store.down.clear()
        for _ in range(100):  # a shipper retries until answered 2xx; each retry waits for the batch in hand
            retried = await local.post(client, body)
            if retried.status_code != 503:
                break
        return [waited, refused, retried, await local.post(client, other)]

    try:
        waited, refused, retried, later = local.run(scenario)
    finally:
        assert local.close() == 0
    assert (waited.status_code, waited.headers["retry-after"]) == (503, "1")
    assert (refused.status_code, refused.headers["retry-after"]) == (503, "1")
    assert retried.status_code == 200 and later.status_code == 200
    assert store.refused >= 1
    assert sorted(store.ids) == sorted(_ids(retried.json()["batch_id"], 3) + _ids(later.json()["batch_id"], 2))
    assert local.pipeline.pipeline.stats.records_in == 5  # the retried batch was fed once


def test_a_restart_keeps_what_was_acknowledged_and_feeds_again_only_what_was_not(tmp_path: Path) -> None:
    """A crash after A was checkpointed, B acknowledged (logged, no checkpoint yet) and C taken in but not stored."""
    config, metrics = _config(), ServeMetrics()
    store = _Store()
    first = LocalPipeline(config, store, None, metrics, tmp_path / "cp", None, threading.Event())
    ingest = LocalHttpIngest(config, metrics, first)
    a, b, c = (ingest._unpack("gateway", _body(first_n, count), False, f"batch-{name}")
               for name, first_n, count in (("a", 0, 4), ("b", 4, 3), ("c", 7, 2)))  # fmt: skip
    assert isinstance(a, UnpackedBatch) and isinstance(b, UnpackedBatch) and isinstance(c, UnpackedBatch)
    future_a, _ = _offered(first.offer(a))
    first._cycle(first._take(0.0))
    first._checkpoint()
    first._last_save_secs = 1e6  # no checkpoint is due before the "crash"
    future_b, _ = _offered(first.offer(b))
    first._cycle(first._take(0.0))
    assert future_a.result(timeout=1) is True and future_b.result(timeout=1) is True
    store.down.set()
    first.abort.set()  # the store fails C's write; the crash comes while it is retried
    future_c, _ = _offered(first.offer(c))
    with pytest.raises(_Abandoned):
        first._cycle(first._take(0.0))
    assert not future_c.done() and len(first.pipeline.order) == 9

    second = LocalPipeline(config, _Store(), None, ServeMetrics(), tmp_path / "cp", None, threading.Event())
    assert len(second.pipeline.order) == 4  # A, from the checkpoint
    second._recover()  # B, from the batch log
    assert len(second.pipeline.order) == 7
    assert _offered(second.offer(a))[1] is True and _offered(second.offer(b))[1] is True  # answered, not fed
    future_c, known = _offered(second.offer(c))
    assert known is False
    second._cycle(second._take(0.0))
    assert future_c.result(timeout=1) is True
    assert len(second.pipeline.order) == 9 and second.pipeline.stats.redelivered == 0
    assert load_local_state(tmp_path / "cp") is not None


def test_after_a_restart_without_new_traffic_event_time_moves_on_with_the_wall_clock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A newcomer's trial: restarted with nothing new to read, serve closed its restored inputs as never
    delivering, and nothing moved event time: open windows (a behaviour_outlier's 5 minutes) waited for
    the next record, where the run that was never stopped alerted on time."""
    import gatewatch.serve_local as serve_local

    config = _config()
    first = LocalPipeline(config, _Store(), None, ServeMetrics(), tmp_path / "cp", None, threading.Event())
    batch = LocalHttpIngest(config, ServeMetrics(), first)._unpack("gateway", _body(0, 4), False, None)
    assert isinstance(batch, UnpackedBatch)
    _offered(first.offer(batch))
    first._cycle(first._take(0.0))
    first._checkpoint()
    last_event = first.pipeline.order.clock
    wall = time.time()
    monkeypatch.setattr(serve_local.time, "time", lambda: wall)
    second = LocalPipeline(config, _Store(), None, ServeMetrics(), tmp_path / "cp", None, threading.Event())
    for quiet_secs in (config.correlate.idle_timeout_secs + 1, 300.0, 600.0):
        monkeypatch.setattr(serve_local.time, "time", lambda: wall + quiet_secs)  # noqa: B023
        second._cycle([])
    # Event time went on at wall speed (less the allowed lateness), with no record read. Closed, the inputs left
    # an infinite watermark and a clock stopped at the last record: windows past it never closed.
    watermark = second.pipeline.watermark
    assert watermark != float("inf") and watermark >= last_event + 600 - config.correlate.allowed_lateness_secs - 5


def test_a_checkpoint_waits_until_the_forwarders_settled_the_alert_events_it_covers(tmp_path: Path) -> None:
    """kill -9 while a SIEM is slow: the lifecycle events in a forwarder's queue are in memory only. The state
    is saved once each of them is sent or dead-lettered; batches logged meanwhile stay in the batch log."""
    from gatewatch.forward.base import ForwarderRunner, ForwarderSet
    from tests.gatewatch.forward.test_forward_runner import Gate, settings
    from tests.gatewatch.forward.test_syslog_rsyslog import hostile_events

    gate = Gate(wait_secs=30.0)
    forwarders = ForwarderSet([ForwarderRunner(settings(tmp_path), gate)])
    config = _config()
    pipeline = LocalPipeline(config, _Store(), forwarders, ServeMetrics(), tmp_path / "cp", None, threading.Event())
    ingest = LocalHttpIngest(config, ServeMetrics(), pipeline)
    a, b = (ingest._unpack("gateway", _body(first_n, 3), False, f"batch-{name}")
            for name, first_n in (("a", 0), ("b", 3)))  # fmt: skip
    assert isinstance(a, UnpackedBatch) and isinstance(b, UnpackedBatch)
    try:
        _offered(pipeline.offer(a))
        pipeline._cycle(pipeline._take(0.0))
        forwarders.submit(hostile_events()[:1])  # what this cycle alerted, queued for a receiver that is down
        pipeline._checkpoint()
        assert load_local_state(tmp_path / "cp") is None  # taken, held
        _offered(pipeline.offer(b))
        pipeline._cycle(pipeline._take(0.0))
        gate.open.set()
        deadline = time.monotonic() + 10
        while forwarders.runners[0].settled_total < 1 and time.monotonic() < deadline:
            time.sleep(0.01)
        pipeline._save_held()
        state = load_local_state(tmp_path / "cp")
        assert state is not None and state.logged_seq == 1 and state.batches == [f"gateway:{a.batch_id}"]
        assert [logged.batch_id for logged in BatchLog(tmp_path / "cp.batches").read(0)] == [b.batch_id]
        pipeline._checkpoint()  # nothing queued now: B's state saved at once, the log emptied
        assert load_local_state(tmp_path / "cp").logged_seq == 2  # type: ignore[union-attr]
        assert BatchLog(tmp_path / "cp.batches").read(0) == [] and gate.sent == [hostile_events()[0].id]
    finally:
        forwarders.close()


def test_follow_unwraps_lines_as_the_config_says_as_replay_does(tmp_path: Path) -> None:
    # gateway.unwrap: message was ignored by --follow: every gateway line a format_mismatch dead letter, no warning.
    class Reasons(_Store):
        def __init__(self) -> None:
            super().__init__()
            self.events, self.reasons = 0, Counter[str]()

        def write(self, batch: Batch) -> None:
            self.events += len(batch.events)
            self.reasons.update(letter.reason for letter in batch.dead_letters)

    log = tmp_path / "gateway.log"
    log.write_bytes(b"".join(orjson.dumps({"message": _line(n, f"rid-{n}"), "host": "edge-1"}) + b"\n"
                             for n in range(20)))  # fmt: skip
    store, stop = Reasons(), threading.Event()
    config = parse_config({"gateway": {"unwrap": "message"}})
    follow = ({Dataset.GATEWAY: [str(log)]}, tmp_path / "positions.json")
    pipeline = LocalPipeline(config, store, None, ServeMetrics(), tmp_path / "cp", follow, stop)
    thread = threading.Thread(target=pipeline.run)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while store.events + sum(store.reasons.values()) < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        thread.join(timeout=30)
        pipeline.close()
    assert (store.events, dict(store.reasons)) == (20, {})


def test_a_checkpoint_that_does_not_decode_stops_the_start_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "cp"
    save_local_state(path, LocalState(b"", {"abc": 10}, ["gateway:x"], 0.0))
    state = load_local_state(path)
    assert state is not None and state.positions == {"abc": 10} and state.batches == ["gateway:x"]
    path.write_bytes(b"\x93\x01\xa5junk")
    with pytest.raises(SourceError, match=str(path)):
        load_local_state(path)
    assert load_local_state(tmp_path / "missing") is None


def test_the_batch_log_ignores_a_last_entry_cut_short_and_skips_what_the_checkpoint_covers(tmp_path: Path) -> None:
    log = BatchLog(tmp_path / "cp.batches")
    log.append([LoggedBatch(1, "gateway", "a", [b"x"]), LoggedBatch(2, "app", "b", [b"y", b"z"])])
    with open(log.path, "ab") as handle:
        handle.write((100).to_bytes(4, "big") + b"cut short by a crash")
    assert [(b.seq, b.batch_id, b.values) for b in log.read(after_seq=1)] == [(2, "b", [b"y", b"z"])]
    log.reset()
    assert log.read(after_seq=0) == []
    log.path.write_bytes((5).to_bytes(4, "big") + b"junk!" + (1).to_bytes(4, "big") + b"x")
    with pytest.raises(SourceError, match="batch log"):
        log.read(after_seq=0)


def test_the_batch_log_and_the_checkpoint_are_readable_by_their_owner_only(tmp_path: Path) -> None:
    # The batch log holds posted bodies as sent, before redaction (passwords in query strings, tokens).
    old_umask = os.umask(0o022)
    try:
        log = BatchLog(tmp_path / "cp.batches")
        log.append([LoggedBatch(1, "gateway", "a", [b"GET /login?password=hunter2"])])
        assert _mode(log.path) == 0o600
        log.keep_after(0)
        assert _mode(log.path) == 0o600
        save_local_state(tmp_path / "cp", LocalState(b"", {}, ["gateway:a"], 0.0, 1))
        assert _mode(tmp_path / "cp") == 0o600
        # A log an earlier release made 0644 is closed at its next reset.
        log.path.chmod(0o644)
        log.reset()
        assert _mode(log.path) == 0o600
    finally:
        os.umask(old_umask)


def _mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


_TOKENS = {"http_ingest": {"tokens": {"gateway": ["0" * 64]}}}


@pytest.mark.parametrize(
    ("config", "args", "message"),
    [
        ({"http_ingest": {"tokens": {"gateway": ["0" * 64]}}}, ["--stages", "detect"], "--stages detect"),
        ({}, [], "needs an input"),
    ],
    ids=["stages", "no-input"],
)
def test_serve_without_kafka_refuses_what_it_cannot_do_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], config: dict[str, Any], args: list[str], message: str
) -> None:
    import yaml

    path = tmp_path / "gatewatch.yaml"
    path.write_text(yaml.safe_dump(config))
    argv = ["serve", "--config", str(path), "--store", "none", "--listen", "127.0.0.1:0",
            "--local-checkpoint", str(tmp_path / "cp"), *args]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last and "Traceback" not in err, err


@pytest.mark.parametrize(
    "args",
    [["--local-checkpoint", "{tmp}/no/such/dir/cp"],
     ["--follow", "gateway={tmp}/*.log", "--follow-positions", "{tmp}/no/such/dir/p.json"]],
    ids=["checkpoint", "follow-positions"],
)
def test_a_state_file_in_a_folder_that_does_not_exist_is_refused_at_start(tmp_path: Path, args: list[str]) -> None:
    # As an operator runs it: the positions file used to fail only at the first checkpoint, after start-up,
    # and both in a thread, with a traceback and exit code 1.
    import yaml

    config = tmp_path / "gatewatch.yaml"
    config.write_text(yaml.safe_dump(_TOKENS))
    argv = [sys.executable, "-m", "gatewatch.cli", "serve", "--config", str(config), "--store", "none",
            "--listen", "127.0.0.1:0", "--local-checkpoint", str(tmp_path / "cp"),
            *(arg.format(tmp=tmp_path) for arg in args)]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error:") and f"{tmp_path}/no/such/dir/" in last, done.stderr
    assert "Traceback" not in done.stderr
