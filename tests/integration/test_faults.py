"""The fault suite: ``gatewatch serve`` killed, its broker restarted and its input poisoned, mid-stream.

Every case runs ``gatewatch serve --store elasticsearch:URL`` as a subprocess
over one stream (4-partition topics keyed by request id) and then asserts the
same things: every record stored exactly once (events + dead letters, by origin
and by document id), the alerts of ``gatewatch replay`` over the same lines (an
undisturbed run), a process that was alive throughout or restarted cleanly,
and poison dead-lettered with its origin. The counts go to the terminal
summary (``fault suite counts``).

Related cases live next to the helpers they need: the Elasticsearch node
stopped for 60 s and restarted on its data is ``test_store_outage.py``; real
429s from a node with a tiny indexing-pressure limit, ``test_indexing_pressure.py``.

``GW_FAULT_SEED`` replays a run's kill points and poison (the seed is printed).
"""

from __future__ import annotations

import os
import random
import subprocess
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaProducer
from kafka.errors import KafkaError
from test_scale_out import Indices, detect_caught_up, split_halves
from test_serve import REPO, T0, Line, Serve, Topics, build_traffic, replay_alerts, topics, wait_for  # noqa: F401

SEED = int(os.environ.get("GW_FAULT_SEED") or random.SystemRandom().randrange(2**32))
KILLS = 10  # half of them triggered by ingest progress, half by detect progress


def _indices(topics: Topics, tmp_path: Path, url: str, name: str) -> tuple[Path, Indices]:
    """A serve config storing under a fresh index prefix, and those indices."""
    prefix = f"gw-{name}-{uuid.uuid4().hex[:8]}"
    base = {"trust": {"gateway_networks": ["10.0.0.0/24"]}, "store": {"index_prefix": prefix, "retention_days": 3650}}
    return topics.config(tmp_path, base=base), Indices(url, prefix)


def _settled(topics: Topics, serve: Serve, timeout_secs: float = 90) -> None:
    wait_for(topics.all_committed, timeout_secs, "every record committed", serve)
    wait_for(lambda: detect_caught_up(topics), timeout_secs, "the detect stage to catch up", serve)


def _assert_stored_once(indices: Indices, topics: Topics, produced: int) -> tuple[int, int]:
    """Every record produced is one document (event or dead letter) with its origin; returns (events, dead)."""
    expected = topics.expected_origins()
    assert sum(expected.values()) == produced
    assert indices.origins() == expected  # by origin: none missing, none twice
    ids = {kind: Counter(hit["_id"] for hit in indices.all(kind, ["id"])) for kind in ("events", "deadletter")}
    both = ids["events"] + ids["deadletter"]
    assert [i for i, n in both.items() if n != 1] == []  # by id: none in two daily indices or two kinds
    assert len(both) == produced
    return len(ids["events"]), len(ids["deadletter"])


def _no_traceback(*serves: Serve) -> None:
    """No exception escaped into a log; kafka-python's own logged connection resets (broker gone) aside."""
    for serve in serves:
        lines = serve.output().splitlines()
        escaped = [
            "\n".join(lines[max(0, i - 1) : i + 8]) for i, line in enumerate(lines)
            if line.startswith("Traceback") and not (i and "KafkaTCPTransport" in lines[i - 1])
        ]  # fmt: skip
        assert escaped == [], escaped[0]


# -- kill -9 at random points of one stream -------------------------------------------------------


def _chunks(lines: list[Line], cuts: int, rng: random.Random) -> list[list[Line]]:
    """The untailed lines cut in ``cuts + 1`` pieces at seeded random points (each side in its order)."""
    body = [line for line in lines if line.partition is None]
    points = sorted(rng.sample(range(200, len(body) - 200), cuts))
    return [body[a:b] for a, b in zip([0, *points], [*points, len(body)])]


def _committed_total(topics: Topics, group: str) -> int:
    admin = KafkaAdminClient(bootstrap_servers=topics.bootstrap)
    try:
        return sum(max(meta.offset, 0) for meta in admin.list_group_offsets({group: None}).get(group, {}).values())
    finally:
        admin.close()


def test_kill_9_at_random_points_of_one_stream(
    topics: Topics, tmp_path: Path, elasticsearch_url: str, fault_counts: Callable[[str], None]
) -> None:
    """One stream, one run: the process is killed -9 KILLS times while the stream flows, and restarted.

    Each life produces the next piece of the stream (cut at seeded random points) and is killed at
    a seeded random point of its progress, so every life moves the stream on:

    - an ingest kill, once the ingest group committed a random number of the piece's records past
      where the life started, and a random delay more (batches being stored and committed);
    - a detect kill, once the detect stage has checkpointed in this life, after a random delay of up
      to two checkpoint intervals (state being built, a checkpoint being written).

    A static member (``--instance-id``) takes its partitions back at once, so a restart costs a
    process start, not a session timeout.
    """
    rng = random.Random(SEED)
    lines = build_traffic(2500)
    config, indices = _indices(topics, tmp_path, elasticsearch_url, "kill")
    store = f"elasticsearch:{elasticsearch_url}"
    pieces = _chunks(lines, KILLS, rng)
    kills: list[str] = []
    lives: list[Serve] = []
    try:
        for life, piece in enumerate(pieces[:-1]):
            serve = Serve(config, store, tmp_path / f"serve-{life}.log", instance_id="faults")
            lives.append(serve)
            producer = threading.Thread(target=topics.produce, args=(piece, 20, 0.05))
            if life % 2 == 0:
                group, past = topics.group, rng.randint(1, len(piece) // 2)
            else:
                group, past = f"{topics.group}-detect", 1
            delay = rng.uniform(0.0, 0.5 if life % 2 == 0 else 2.0)
            start = _committed_total(topics, group)
            producer.start()
            wait_for(lambda: _committed_total(topics, group) >= start + past, 60, f"{group} to commit {past} more",
                     serve)  # fmt: skip
            time.sleep(delay)
            serve.kill()
            kills.append(f"{'ingest' if life % 2 == 0 else 'detect'}:+{past}+{delay:.2f}s")
            producer.join(timeout=60)
            assert not producer.is_alive()
        last = Serve(config, store, tmp_path / "serve-last.log", instance_id="faults")
        lives.append(last)
        topics.produce(pieces[-1] + [line for line in lines if line.partition is not None])
        _settled(topics, last)
        assert last.stop() == 0, last.output()
        _no_traceback(*lives)
        # From the first detect kill on (it waited for a checkpoint), no life started detection afresh.
        fresh = [i for i, life in enumerate(lives[2:], start=2) if "event=state_fresh" in life.output()]
        assert fresh == [], f"lives that started detection without a checkpoint: {fresh}"
        assert "event=resumed how=checkpoint stage=detect" in last.output()

        events, dead = _assert_stored_once(indices, topics, len(lines))
        alerts = indices.alerts()
        assert {rule for _, rule, *_ in alerts} >= {"gateway_bypass", "http_5xx_burst"}
        assert alerts == replay_alerts(config, lines, tmp_path)
        fault_counts(
            f"kill -9: seed={SEED} kills={len(kills)} ({' '.join(kills)}) records={len(lines)} events={events} "
            f"dead_letters={dead} alerts={len(alerts)}"
        )
    finally:
        for serve in lives:
            if serve.process.poll() is None:
                serve.kill()
        indices.cleanup()


# -- the Kafka broker restarted mid-stream --------------------------------------------------------


def _kafka(script: str) -> None:
    subprocess.run([str(REPO / "services" / script), "--keep-data", "kafka"], check=True, capture_output=True,
                   timeout=300)  # fmt: skip


BROKER_DOWN_SECS = 10
# The detect stage catches up within seconds of the broker's return (its consumer's metadata
# backoff is bounded, see ingest.sources.kafka_client.BOUNDED_BACKOFF); it used to stay idle
# for minutes. Generous for a loaded 2-core machine; a stall fails the test.
DETECT_CATCH_UP_SECS = 30


def _detect_caught_up_within(topics: Topics, timeout_secs: float) -> bool:
    deadline = time.monotonic() + timeout_secs
    while time.monotonic() < deadline:
        if detect_caught_up(topics):
            return True
        time.sleep(1.0)
    return False


def _group_readable(topics: Topics) -> bool:
    """The restarted broker answers for the group (it loads its coordinator state first)."""
    try:
        topics.committed()
    except KafkaError:
        return False
    return True


def test_kafka_broker_restarted_mid_stream(
    topics: Topics, tmp_path: Path, elasticsearch_url: str, fault_counts: Callable[[str], None]
) -> None:
    """The broker stops (its data kept) while serve is mid-stream and comes back on the same data.

    serve keeps running through it (no exit, no crash loop, /healthz answering), then carries on
    from its committed offsets and checkpoint: the rest of the stream is stored once and the
    alerts are replay's, without restarting serve (the detect stage catches up on its own).
    """
    lines = build_traffic(1500)
    config, indices = _indices(topics, tmp_path, elasticsearch_url, "broker")
    halves = split_halves(lines)
    serve: Serve | None = None
    down = False
    try:
        serve = Serve(config, f"elasticsearch:{elasticsearch_url}", tmp_path / "serve.log")
        topics.produce(halves[0], 100, 0.05)
        first = serve
        wait_for(lambda: first.metric("gatewatch_checkpoint_bytes") > 0, 30, "a detect checkpoint", first)
        _kafka("down.sh")
        down = True
        away_at = time.monotonic()
        while time.monotonic() - away_at < BROKER_DOWN_SECS:
            assert serve.process.poll() is None, f"serve exited without its broker:\n{serve.output()[-4000:]}"
            assert serve.get("/healthz")[0] == 200
            time.sleep(1.0)
        _kafka("up.sh")
        down = False
        back_at = time.monotonic()
        wait_for(lambda: _group_readable(topics), 60, "the group coordinator to load", serve)
        topics.produce(halves[1])
        wait_for(topics.all_committed, 90, "every record committed after the broker was back", serve)
        assert _detect_caught_up_within(topics, DETECT_CATCH_UP_SECS), (
            f"detect stage stalled after the broker restart (no progress in {DETECT_CATCH_UP_SECS}s):\n"
            f"{serve.output()[-4000:]}"
        )
        caught_up_secs = time.monotonic() - back_at
        assert serve.stop() == 0, serve.output()
        _no_traceback(serve)

        events, dead = _assert_stored_once(indices, topics, len(lines))
        alerts = indices.alerts()
        assert {rule for _, rule, *_ in alerts} >= {"gateway_bypass", "http_5xx_burst"}
        assert alerts == replay_alerts(config, lines, tmp_path)
        fault_counts(
            f"kafka restart: broker down {BROKER_DOWN_SECS}s; detect caught up {caught_up_secs:.1f}s after; "
            f"records={len(lines)} events={events} dead_letters={dead} alerts={len(alerts)}"
        )
    finally:
        if down:
            _kafka("up.sh")
        if serve is not None and serve.process.poll() is None:
            serve.kill()
        indices.cleanup()


# -- poison on the input topics -------------------------------------------------------------------


def _poison(rng: random.Random) -> list[tuple[str, str, bytes | None]]:
    """(side, kind, value): what a broken shipper or an attacker with produce rights can put on an input topic."""
    depth = 30_000  # the bombs stay under max_line_bytes (1 MiB), so the parsers meet them
    out: list[tuple[str, str, bytes | None]] = []
    for side in ("gateway", "app"):
        out += [
            (side, "random_bytes", rng.randbytes(rng.randint(1, 4096))),
            (side, "random_bytes", bytes(rng.choice(b"\x00\n\r\x1b[]{}\"\\\xff") for _ in range(512))),
            (side, "invalid_utf8", b"\xc3\x28 \xa0\xa1 \xf0\x28\x8c\xbc \xed\xa0\x80 surrogate"),
            (side, "huge_line", b"A" * 900_000),
            (side, "json_bomb_nesting", b"[" * depth + b"]" * depth),
            (side, "json_bomb_nesting", b'{"a":' * (depth // 5) + b"1" + b"}" * (depth // 5)),
            (side, "json_bomb_number", b'{"status": 1' + b"0" * 60_000 + b', "ts": 1e999999}'),
            (side, "json_bomb_keys", b"{" + b",".join(b'"k%d":%d' % (i, i) for i in range(4_000)) + b"}"),
            (side, "empty", b""),
            (side, "tombstone", None),
        ]
    # Valid JSON past max_line_bytes (1 MiB): more than a broker takes uncompressed, so sent gzipped.
    out.append(("app", "huge_json", b'{"ts": "2026-03-02T09:00:00Z", "msg": "' + b"x" * 1_100_000 + b'"}'))
    out.append(("gateway", "control_chars", b'[2026-03-02T09:00:00.000Z] "GET /\x1b[31m\r\n HTTP/1.1" 200'))
    rng.shuffle(out)
    return out


def test_poison_on_the_input_topics_is_dead_lettered_with_its_origin(
    topics: Topics, tmp_path: Path, elasticsearch_url: str, fault_counts: Callable[[str], None]
) -> None:
    rng = random.Random(SEED)
    lines = build_traffic(800)
    config, indices = _indices(topics, tmp_path, elasticsearch_url, "poison")
    serve: Serve | None = None
    poison = _poison(rng)
    try:
        serve = Serve(config, f"elasticsearch:{elasticsearch_url}", tmp_path / "serve.log")
        halves = split_halves(lines)
        topics.produce(halves[0])
        # The poison arrives mid-stream, spread over the partitions, between the halves.
        producer = KafkaProducer(bootstrap_servers=topics.bootstrap, max_request_size=2_000_000,
                                 compression_type="gzip")  # fmt: skip
        poisoned: dict[tuple[str, int], str] = {}
        try:
            for n, (side, kind, value) in enumerate(poison):
                key = b"poison-%d" % n if value is None else None  # a tombstone needs a key
                meta = producer.send(topics.names[side], key=key, value=value, partition=n % 4).get(timeout=30)
                poisoned[(f"{meta.topic}/{meta.partition}", meta.offset)] = kind
                topics.produced.append((Line(side, T0, None, value or b""), meta.topic, meta.partition, meta.offset))
        finally:
            producer.close()
        topics.produce(halves[1])
        _settled(topics, serve)
        assert serve.process.poll() is None
        assert serve.stop() == 0, serve.output()
        _no_traceback(serve)

        events, dead = _assert_stored_once(indices, topics, len(lines) + len(poison))
        letters = {
            (hit["_source"]["stream"], int(hit["_source"]["offset"])): hit["_source"]["reason"]
            for hit in indices.all("deadletter", ["stream", "offset", "reason"])
        }
        missing = {origin: kind for origin, kind in poisoned.items() if origin not in letters}
        assert missing == {}, f"poison not dead-lettered under its origin: {missing}"
        reasons = Counter(f"{kind}->{letters[origin]}" for origin, kind in poisoned.items())
        # The poison changes no alert: they are those of a replay of the clean lines alone.
        alerts = indices.alerts()
        assert {rule for _, rule, *_ in alerts} >= {"gateway_bypass", "http_5xx_burst"}
        assert alerts == replay_alerts(config, lines, tmp_path)
        fault_counts(
            f"poison: seed={SEED} poison={len(poison)} records={len(lines) + len(poison)} events={events} "
            f"dead_letters={dead} alerts={len(alerts)}; {' '.join(f'{k}={n}' for k, n in sorted(reasons.items()))}"
        )
    finally:
        if serve is not None and serve.process.poll() is None:
            serve.kill()
        indices.cleanup()


@pytest.fixture(autouse=True)
def _print_seed() -> None:
    print(f"GW_FAULT_SEED={SEED}")
