"""The shared forwarder machinery: filter, bounded queue that never blocks detection, dead letters on shutdown."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import orjson

from detectors.lifecycle import AlertEvent
from gatewatch.config import parse_config
from gatewatch.errors import DeliveryError
from gatewatch.forward.base import ForwarderRunner
from tests.gatewatch.forward.test_syslog_rsyslog import hostile_events


class Gate:
    """A receiver that holds every delivery until released (a stalled SIEM)."""

    def __init__(self, wait_secs: float = 5.0) -> None:
        self.wait_secs = wait_secs
        self.open = threading.Event()
        self.sent: list[str] = []

    def send(self, event: AlertEvent) -> None:
        if not self.open.wait(self.wait_secs):
            raise DeliveryError("stalled")
        self.sent.append(event.id)

    def close(self) -> None:
        self.open.set()


def settings(tmp_path: Path, **overrides: object):  # noqa: ANN201 (a pydantic model built from a dict)
    base = {"name": "t", "type": "syslog", "host": "127.0.0.1", "port": 9, "dead_letters": str(tmp_path / "dl.ndjson")}
    return parse_config({"forward": [base | overrides]}).forward[0]


def letters(tmp_path: Path) -> list[tuple[str, str]]:
    path = tmp_path / "dl.ndjson"
    rows = [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []
    return [(row["reason"], row["event"]["lifecycle"]["event_id"]) for row in rows]


def test_filter_by_rule_severity_and_state(tmp_path: Path) -> None:
    gate = Gate()
    gate.open.set()
    runner = ForwarderRunner(settings(tmp_path, rules=["gateway_bypass"], states=["open"]), gate)
    critical = ForwarderRunner(settings(tmp_path, name="c", min_severity="critical"), Gate())
    critical.forwarder.open.set()  # type: ignore[attr-defined]
    for event in hostile_events():  # bypass open, token_replay open (critical), bypass resolved
        runner.submit(event)
        critical.submit(event)
    runner.close()
    critical.close()
    assert gate.sent == ["a1b2c3-1"] and runner.counts == {"sent": 1, "filtered": 2}
    assert critical.forwarder.sent == ["d4e5f6-1"]  # type: ignore[attr-defined]


def test_a_full_queue_dead_letters_at_once_instead_of_blocking(tmp_path: Path) -> None:
    gate = Gate()
    runner = ForwarderRunner(settings(tmp_path, queue_max_events=2), gate)
    events = hostile_events() * 3  # 9 events against a queue of 2 whose head is stuck in delivery
    started = time.monotonic()
    for event in events:
        runner.submit(event)
    assert time.monotonic() - started < 1.0, "submit waited for the receiver"
    assert runner.counts["dead_letter_queue_full"] == 7
    gate.open.set()
    runner.close()
    assert len(gate.sent) == 2 and runner.counts["sent"] == 2
    assert [reason for reason, _ in letters(tmp_path)] == ["queue_full"] * 7


def test_what_cannot_be_delivered_before_the_drain_timeout_is_a_dead_letter(tmp_path: Path) -> None:
    gate = Gate(wait_secs=0.5)
    runner = ForwarderRunner(settings(tmp_path, drain_timeout_secs=0.2, retry_backoff_secs=10), gate)
    for event in hostile_events():
        runner.submit(event)
    runner.close()
    assert gate.sent == []
    assert sorted(letters(tmp_path)) == sorted(
        [("shutdown", "a1b2c3-1"), ("shutdown", "d4e5f6-1"), ("shutdown", "a1b2c3-2")]
    )


class Refusing:
    """A receiver that refuses every event (a 400) until ``accept`` is set."""

    def __init__(self) -> None:
        self.accept = threading.Event()
        self.sent: list[str] = []

    def send(self, event: AlertEvent) -> None:
        if not self.accept.is_set():
            raise DeliveryError("400 bad request", retryable=False)
        self.sent.append(event.id)

    def close(self) -> None:
        pass


def wait_until(condition: object, secs: float = 10.0) -> None:
    deadline = time.monotonic() + secs
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_a_dead_letter_file_that_cannot_be_written_keeps_the_event_and_the_thread(tmp_path: Path) -> None:
    # A fault trial: the first dead letter's PermissionError ended the delivery thread silently; the forwarder
    # never sent or settled again, so the detect stage's checkpoint stopped, and /readyz said ready.
    blocker = tmp_path / "blocked"
    blocker.write_text("a file where the dead letters' folder should be")
    receiver = Refusing()
    config = settings(tmp_path, dead_letters=str(blocker / "dl.ndjson"), retry_max_backoff_secs=0.05)
    runner = ForwarderRunner(config, receiver)
    events = hostile_events()
    for event in events:
        runner.submit(event)
    wait_until(lambda: runner.counts["dead_letter_failed"] >= 2)
    assert runner.settled_total == 0 and runner.queued() == 3  # kept: neither sent nor written down
    blocker.unlink()
    receiver.accept.set()
    wait_until(lambda: runner.settled_total == 3)
    runner.close()
    assert receiver.sent == [event.id for event in events]


def test_events_that_cannot_be_dead_lettered_at_shutdown_are_not_counted_settled(tmp_path: Path) -> None:
    blocker = tmp_path / "blocked"
    blocker.write_text("")
    runner = ForwarderRunner(settings(tmp_path, dead_letters=str(blocker / "dl.ndjson"), drain_timeout_secs=0.1),
                             Gate(wait_secs=0.05))  # fmt: skip
    for event in hostile_events():
        runner.submit(event)
    runner.close()
    assert runner.queued_total == 3 and runner.settled_total == 0  # a checkpoint must not cover them
    assert not runner._thread.is_alive()
