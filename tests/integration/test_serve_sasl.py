"""``gatewatch serve`` against a broker that only speaks SASL_SSL (SCRAM-SHA-512), credentials only in the environment.

The broker is this module's own (see :mod:`sasl_kafka`). serve reads both input
topics over SASL_SSL, stores into DuckDB and alerts exactly as ``replay`` over
the same lines; the config file names environment variables, never a secret.
A wrong password, or an ACL that denies serve's user an input topic, stops
serve with one line and exit 2.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kafka import KafkaAdminClient, KafkaProducer
from kafka.admin import ACL, ACLOperation, ACLPermissionType, NewTopic, ResourcePattern, ResourceType
from sasl_kafka import DENIED_PASSWORD, DENIED_USER, PASSWORD, USER, SaslBroker, start_sasl_broker
from test_serve import REPO, PARTITIONS, Serve, build_traffic, replay_alerts, stored_alerts, stored_origins, wait_for


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SaslBroker]:
    t0 = time.monotonic()
    broker = start_sasl_broker(tmp_path_factory.mktemp("sasl-kafka"))
    print(f"SASL_SSL broker ready in {time.monotonic() - t0:.1f}s")
    try:
        yield broker
    finally:
        while Serve.started:
            serve = Serve.started.pop()
            if serve.process.poll() is None:
                serve.kill()
        broker.stop()


def _config(directory: Path, broker: SaslBroker, group: str, names: dict[str, str]) -> Path:
    data = {
        "trust": {"gateway_networks": ["10.0.0.0/24"]},
        "kafka": {
            "bootstrap_servers": [broker.bootstrap], "group_id": group, "topics": names,
            "security": broker.security(),
            "sasl_username_env": "GW_TEST_KAFKA_USER", "sasl_password_env": "GW_TEST_KAFKA_PASSWORD",
        },
    }  # fmt: skip
    path = directory / "serve.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_serve_over_sasl_ssl_stores_once_and_alerts_as_replay(
    sasl_broker: SaslBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = uuid.uuid4().hex[:8]
    group, names = f"gw-sasl-{run}", {side: f"gw-sasl-{run}-{side}" for side in ("gateway", "app", "alerts")}
    admin = KafkaAdminClient(**sasl_broker.client())
    try:
        admin.create_topics({names[side]: {"num_partitions": PARTITIONS} for side in ("gateway", "app")},
                            wait_for_metadata=True)  # fmt: skip
    finally:
        admin.close()
    lines = build_traffic(600)
    producer = KafkaProducer(linger_ms=5, **sasl_broker.client())
    expected: list[tuple[str, int]] = []
    try:
        futures = [producer.send(names[line.side], key=line.key, value=line.value, partition=line.partition)
                   for line in lines]  # fmt: skip
        producer.flush()
        for future in futures:
            meta = future.get(timeout=10)
            expected.append((f"{meta.topic}/{meta.partition}", meta.offset))
    finally:
        producer.close()

    monkeypatch.setenv("GW_TEST_KAFKA_USER", USER)
    monkeypatch.setenv("GW_TEST_KAFKA_PASSWORD", PASSWORD)
    config = _config(tmp_path, sasl_broker, group, names)
    assert PASSWORD not in config.read_text()
    store = tmp_path / "store.duckdb"
    serve = Serve(config, store, tmp_path / "serve.log")
    wait_for(lambda: serve.metric("component_received_events_total") >= len(lines), 45, "every record", serve)
    wait_for(lambda: serve.metric("gatewatch_checkpoint_bytes") > 0, 30, "a detect checkpoint", serve)
    assert serve.stop() == 0, serve.output()
    assert PASSWORD not in serve.output()

    assert sorted(stored_origins(store).elements()) == sorted(expected)  # every record once, over SASL_SSL
    alerts = stored_alerts(store)
    assert {rule for _, rule, *_ in alerts} >= {"gateway_bypass", "http_5xx_burst"}
    assert alerts == replay_alerts(config, lines, tmp_path)


def test_a_wrong_password_stops_serve_with_one_line(
    sasl_broker: SaslBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    names = {side: f"gw-sasl-wrong-{side}" for side in ("gateway", "app", "alerts")}
    monkeypatch.setenv("GW_TEST_KAFKA_USER", USER)
    monkeypatch.setenv("GW_TEST_KAFKA_PASSWORD", "not-" + PASSWORD)
    config = _config(tmp_path, sasl_broker, "gw-sasl-wrong", names)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "gatewatch.cli", "serve", "--config", str(config), "--store",
         f"duckdb:{tmp_path / 'store.duckdb'}", "--listen", "127.0.0.1:0"],
        cwd=REPO, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    errors = [line for line in done.stderr.splitlines() if "refused the SASL login" in line]
    assert len(errors) == 1 and f"kafka.sasl_username '{USER}'" in errors[0], done.stderr
    assert "Traceback" not in done.stderr and PASSWORD not in done.stderr
    # Well under kafka-python's 30 s bootstrap timeout: stopped on the refusal, not on a timer.
    print(f"wrong password: exit 2 after {time.monotonic() - started:.1f}s")


def test_a_topic_the_acls_deny_stops_serve_with_one_line(
    sasl_broker: SaslBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = uuid.uuid4().hex[:8]
    group, names = f"gw-acl-{run}", {side: f"gw-acl-{run}-{side}" for side in ("gateway", "app", "alerts")}
    admin = KafkaAdminClient(**sasl_broker.client())
    try:
        admin.create_topics([NewTopic(names[side], PARTITIONS, 1) for side in ("gateway", "app")])
        # The gateway topic gets an ACL for the other user only: from then on it is closed to everyone else.
        pattern = ResourcePattern(ResourceType.TOPIC, names["gateway"])
        admin.create_acls([ACL(f"User:{USER}", "*", ACLOperation.ALL, ACLPermissionType.ALLOW, pattern)])
    finally:
        admin.close()
    monkeypatch.setenv("GW_TEST_KAFKA_USER", DENIED_USER)
    monkeypatch.setenv("GW_TEST_KAFKA_PASSWORD", DENIED_PASSWORD)
    config = _config(tmp_path, sasl_broker, group, names)
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "gatewatch.cli", "serve", "--config", str(config), "--store",
         f"duckdb:{tmp_path / 'store.duckdb'}", "--listen", "127.0.0.1:0"],
        cwd=REPO, capture_output=True, text=True, timeout=90,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, done.stderr[-3000:]
    assert "denied it (TopicAuthorizationFailed" in errors[0] and names["gateway"] in errors[0], errors[0]
    assert f"kafka.sasl_username '{DENIED_USER}'" in errors[0] and DENIED_PASSWORD not in done.stderr
    assert "Traceback" not in done.stderr
    print(f"denied topic: exit 2 after {time.monotonic() - started:.1f}s: {errors[0]}")
