"""``serve`` killed with -9 and restarted sends the same alert lifecycle events as ``replay``.

On the Kafka alerts topic and through a webhook forwarder to a real HTTP
server: after de-duplication by event id (a restart re-sends what followed its
checkpoint, with identical contents), the events equal those of an
uninterrupted replay of the same records.
"""

from __future__ import annotations

from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import orjson
import pytest
import yaml
from kafka import KafkaConsumer

from gatewatch.config import load_config
from gatewatch.replay import replay
from ingest.sinks.base import Batch
from tests.http_receiver import serving
from tests.integration.test_serve import Line, Topics, _kill_and_restart, build_traffic, topics  # noqa: F401

pytestmark = pytest.mark.integration


class _Events:
    def __init__(self) -> None:
        self.documents: list[dict] = []

    def write(self, batch: Batch) -> None:
        self.documents.extend(event.to_document() for event in batch.alert_events)

    def close(self) -> None:
        pass


def replay_events(config: Path, lines: list[Line], directory: Path) -> list[dict]:
    paths = {side: directory / f"{side}.log" for side in ("gateway", "app")}
    for side, path in paths.items():
        path.write_bytes(b"".join(line.value + b"\n" for line in lines if line.side == side))
    sink = _Events()
    replay(load_config(config), [paths["gateway"]], [paths["app"]], [sink])
    return sink.documents


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict]]]:
    received: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            received.append(orjson.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return

    with serving(Handler) as port:
        yield f"http://127.0.0.1:{port}/hook", received


def deduplicated(documents: list[dict], event_id: str = "lifecycle.event_id") -> dict[str, dict]:
    outer, inner = event_id.split(".")
    unique: dict[str, dict] = {}
    for doc in documents:
        seen = unique.setdefault(doc[outer][inner], doc)
        assert seen == doc, f"{doc[outer][inner]} was sent twice with different contents"
    return unique


def test_kill_9_lifecycle_events_equal_replay(
    topics: Topics,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    webhook: tuple[str, list[dict]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    url, received = webhook
    monkeypatch.setenv("GW_TEST_HOOK_SECRET", "k")
    forward = [{"name": "hook", "type": "webhook", "url": url, "format": "ecs", "secret_env": "GW_TEST_HOOK_SECRET",
                "dead_letters": str(tmp_path / "hook.dead-letters.ndjson")}]  # fmt: skip
    config = topics.config(tmp_path, base={"trust": {"gateway_networks": ["10.0.0.0/24"]}, "forward": forward})
    lines = build_traffic(2500)
    _kill_and_restart(topics, tmp_path, lines, config)

    consumer = KafkaConsumer(topics.names["alerts"], bootstrap_servers=topics.bootstrap, group_id=None,
                             auto_offset_reset="earliest", consumer_timeout_ms=3000)  # fmt: skip
    try:
        messages = list(consumer)
    finally:
        consumer.close()
    on_topic = [orjson.loads(message.value) for message in messages]
    assert all(message.key.decode() == doc["id"] for message, doc in zip(messages, on_topic))

    reference = deduplicated(replay_events(config, lines, tmp_path))
    assert {doc["lifecycle"]["state"] for doc in reference.values()} == {"open", "updated", "resolved"}
    assert deduplicated(on_topic) == reference
    # The webhook got the same events, ECS-shaped, each with the alert as it stood.
    hooked = deduplicated(received, "event.id")
    assert sorted(hooked) == sorted(reference)
    for event_id, doc in hooked.items():
        want = dict(reference[event_id])
        lifecycle = want.pop("lifecycle")
        assert doc["gatewatch"]["alert"] == want and doc["event"]["sequence"] == lifecycle["sequence"]
    assert not (tmp_path / "hook.dead-letters.ndjson").exists()
    assert yaml.safe_load(config.read_text())["forward"][0]["name"] == "hook"
