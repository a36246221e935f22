"""Poison on serve's internal topics, against a real broker: nothing runs, serve goes on, alerts equal replay's.

An attacker with write access to the internal topics (``<group>-requests``,
``<group>-keyed``, ``<group>-findings``) or ``<group>-checkpoints`` writes what
would run code if it were unpickled (a pickle whose ``__reduce__`` makes a
marker directory) to each, random bytes, a message of an unknown version and
one for a stream that is no input. Each message becomes a dead letter with its
origin (the internal topic's partition and offset), counted in /metrics; the
forged newest checkpoint of a join task is refused and the previous one
restored.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import random
import time
import uuid
import zlib
from collections import Counter
from pathlib import Path

import duckdb
import orjson
from kafka import KafkaProducer
from test_serve import (  # noqa: F401 (topics is a fixture)
    Serve, Topics, build_traffic, replay_alerts, stored_alerts, stored_origins, topics, wait_for,
)

from gatewatch.checkpoint import assignment_key, config_digest
from gatewatch.config import load_config
from gatewatch.wire import encode_events
from ingest.codec import encode, encode_rows


class _Marker:
    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (str(self.path),))


def _send(bootstrap: str, topic: str, messages: list[tuple[bytes | None, bytes]]) -> list[int]:
    """``messages`` to partition 0 of ``topic``; their offsets."""
    producer = KafkaProducer(bootstrap_servers=bootstrap, max_request_size=8 * 1024 * 1024)
    try:
        futures = [producer.send(topic, key=key, value=value, partition=0) for key, value in messages]
        producer.flush()
        return [future.get(timeout=10).offset for future in futures]
    finally:
        producer.close()


def _poison(marker: Path) -> dict[str, list[tuple[bytes, str]]]:
    """Per internal topic role: (message, the reason it must be dead-lettered with)."""
    from detectors.sample import gateway_event

    rows = encode_rows([gateway_event(0.0, request_id="forged", status=500)])
    live = pickle.dumps(("events", time.time(), "gw/0", [_Marker(marker)]))
    return {
        "requests": [
            (live, "undecodable"),
            (random.Random(7).randbytes(512), "undecodable"),
            (encode("events", 2, (time.time(), "gw/0", rows)), "unknown_version"),
            (encode_events(time.time(), "not-an-input/0", rows), "unknown_stream"),
        ],
        "keyed": [(pickle.dumps(_Marker(marker)), "undecodable"), (random.Random(8).randbytes(64), "undecodable")],
        "findings": [(pickle.dumps(_Marker(marker)), "undecodable"), (encode("findings", 99, ()), "unknown_version")],
    }


def _rejections(serve: Serve) -> int:
    return serve.output().count("event=message_rejected")


def _metric_lines(serve: Serve, name: str) -> dict[str, float]:
    return {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1])
            for line in serve.get("/metrics")[1].splitlines() if line.startswith(name + "{")}  # fmt: skip


def test_poison_on_every_internal_topic_runs_nothing_and_serve_goes_on(topics: Topics, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    # The payloads are live: unpickled here, one of them does make its directory.
    pickle.loads(pickle.dumps(_Marker(tmp_path / "proof")))  # noqa: S301 (the point of the test)
    assert (tmp_path / "proof").is_dir()

    lines = build_traffic(1500)
    main = [line for line in lines if line.partition is None]
    tails = [line for line in lines if line.partition is not None]  # close every window once the rest is in
    first_half, second_half = main[: len(main) // 2], main[len(main) // 2 :] + tails
    config = topics.config(tmp_path)
    store = tmp_path / "store.duckdb"
    expected_dead: set[tuple[str, str, int]] = set()  # (reason, stream, offset)

    topics.produce(first_half)
    first = Serve(config, store, tmp_path / "serve-1.log")
    wait_for(topics.all_committed, 30, "the first half to be committed", first)
    wait_for(lambda: first.metric("gatewatch_checkpoint_bytes") > 0, 30, "a detect checkpoint", first)
    poison = _poison(marker)
    for role, messages in poison.items():
        topic = f"{topics.group}-{role}"
        offsets = _send(topics.bootstrap, topic, [(None, message) for message, _ in messages])
        expected_dead |= {(reason, f"{topic}/0", offset) for (_, reason), offset in zip(messages, offsets)}
    total = sum(len(messages) for messages in poison.values())
    wait_for(lambda: _rejections(first) >= total, 30, "the poison to be rejected", first)
    assert first.process.poll() is None
    dead_metric = _metric_lines(first, "gatewatch_dead_letters_total")
    for reason in ("undecodable", "unknown_version", "unknown_stream"):
        assert dead_metric.get(f'gatewatch_dead_letters_total{{reason="{reason}"}}', 0) >= 1, dead_metric
    assert first.stop() == 0, first.output()  # a final checkpoint, past the poison

    # A forged newest checkpoint of join task 0: right key, right config digest, checksum fine, a pickle for state.
    stream = f"{topics.group}-requests/0"
    key = assignment_key(topics.group, [stream])
    payload = zlib.compress(pickle.dumps(_Marker(marker)), 1)
    checkpoint_id = uuid.uuid4().bytes
    manifest = {"version": 3, "id": checkpoint_id.hex(), "slot": "z", "chunks": 1, "encoding": "zlib",
                "bytes": len(payload), "sha256": hashlib.sha256(payload).hexdigest(),
                "assignment": [stream], "offsets": {stream: 0}, "created_at": time.time(),
                "config_digest": config_digest(load_config(config))}  # fmt: skip
    _send(topics.bootstrap, f"{topics.group}-checkpoints",
          [(f"{key}/z/0".encode(), checkpoint_id + payload), (key.encode(), orjson.dumps(manifest))])  # fmt: skip

    second = Serve(config, store, tmp_path / "serve-2.log")
    wait_for(lambda: "event=resumed how=previous_checkpoint" in second.output(), 45, "the fallback", second)
    assert "event=checkpoint_unusable" in second.output() and "reason=state_undecodable" in second.output()
    topics.produce(second_half[: len(second_half) // 2])
    for role in ("requests", "keyed", "findings"):
        topic = f"{topics.group}-{role}"
        offsets = _send(topics.bootstrap, topic, [(None, pickle.dumps(_Marker(marker)))])
        expected_dead.add(("undecodable", f"{topic}/0", offsets[0]))
    topics.produce(second_half[len(second_half) // 2 :])
    wait_for(topics.all_committed, 45, "everything to be committed", second)
    wait_for(lambda: _rejections(second) >= 3, 30, "the second poison to be rejected", second)
    assert second.stop() == 0, second.output()

    assert not marker.exists(), "a payload from an internal topic was unpickled"
    with duckdb.connect(str(store), read_only=True) as con:
        internal = con.execute("SELECT reason, stream, stream_offset FROM dead_letters "
                               "WHERE dataset = 'gatewatch.internal'").fetchall()  # fmt: skip
    assert {(reason, stream, int(offset)) for reason, stream, offset in internal} == expected_dead
    # Every input record stored once, the poison once each; the alerts are replay's.
    poison_origins = Counter((stream, offset) for _, stream, offset in expected_dead)
    assert stored_origins(store) == topics.expected_origins() + poison_origins
    alerts = stored_alerts(store)
    assert {rule for _, rule, *_ in alerts} >= {"gateway_bypass", "http_5xx_burst"}
    assert alerts == replay_alerts(config, lines, tmp_path)
