"""The webhook forwarder against a real HTTP server: signatures, a 503 outage, a 400, both payload schemas."""

from __future__ import annotations

import logging
from pathlib import Path

import orjson
import pytest

from gatewatch.config import parse_config
from gatewatch.forward import build_forwarders
from gatewatch.forward.fields import neutral
from tests.gatewatch.forward.conftest import SECRET, Receiver
from tests.gatewatch.forward.test_syslog_rsyslog import HOSTILE, hostile_events

SHOWN = neutral(HOSTILE)  # as every format sends it: no ESC, CR or LF for the receiver to pass on


def run(receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fmt: str = "ecs") -> dict[str, int]:
    monkeypatch.setenv("GW_TEST_WEBHOOK_SECRET", SECRET)
    config = parse_config({"forward": [{
        "name": "soar", "type": "webhook", "url": receiver.url, "format": fmt, "secret_env": "GW_TEST_WEBHOOK_SECRET",
        "max_attempts": 5, "retry_backoff_secs": 0.05, "dead_letters": str(tmp_path / "dl.ndjson"),
    }]})  # fmt: skip
    forwarders = build_forwarders(config)
    assert forwarders is not None
    forwarders.submit(hostile_events())
    forwarders.close()
    return forwarders.counts()["soar"]


def test_an_outage_with_retry_after_loses_and_duplicates_nothing(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.unavailable = 2
    counts = run(receiver, tmp_path, monkeypatch)
    assert counts == {"sent": 3, "retried": 2}
    assert receiver.bad_signatures == 0
    assert [doc["event"]["id"] for doc in receiver.accepted] == ["a1b2c3-1", "d4e5f6-1", "a1b2c3-2"]
    statuses = [(event_id, status) for event_id, status, _ in receiver.attempts]
    assert statuses == [("a1b2c3-1", 503), ("a1b2c3-1", 503), ("a1b2c3-1", 200), ("d4e5f6-1", 200), ("a1b2c3-2", 200)]
    times = [at for _, _, at in receiver.attempts]
    assert times[1] - times[0] >= 0.95 and times[2] - times[1] >= 0.95, "Retry-After: 1 was not honoured"
    assert not (tmp_path / "dl.ndjson").exists()


def test_a_400_is_not_retried_and_becomes_a_dead_letter(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    receiver.reject = {"d4e5f6-1"}
    counts = run(receiver, tmp_path, monkeypatch)
    assert counts == {"sent": 2, "dead_letter_rejected": 1}
    assert [event_id for event_id, _, _ in receiver.attempts].count("d4e5f6-1") == 1
    (letter,) = [orjson.loads(line) for line in (tmp_path / "dl.ndjson").read_bytes().splitlines()]
    assert (letter["reason"], letter["attempts"], letter["error"]) == ("rejected", 1, "webhook answered 400")
    assert letter["event"]["lifecycle"]["event_id"] == "d4e5f6-1"


def test_a_redirect_is_not_followed_and_its_events_are_dead_letters(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Followed, a 302 turned the POST into a GET without its body: no alert delivered, each counted as sent,
    and the Authorization header taken to wherever the answer pointed."""
    receiver.redirect = True
    counts = run(receiver, tmp_path, monkeypatch)
    assert counts == {"dead_letter_rejected": 3} and receiver.redirected == []
    letters = [orjson.loads(line) for line in (tmp_path / "dl.ndjson").read_bytes().splitlines()]
    assert {letter["error"] for letter in letters} == {
        "webhook answered 302 (a redirect to '/moved', not followed: set forward url to it)"
    }


def test_ecs_document_carries_the_alert_fields(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run(receiver, tmp_path, monkeypatch)
    opened, _, resolved = receiver.accepted
    assert opened["event"]["kind"] == "alert" and opened["event"]["action"] == "alert-open"
    assert (opened["source"], opened["http"], opened["url"], opened["user_agent"]) == (
        {"ip": "10.9.9.9"}, {"request": {"method": "GET"}, "response": {"status_code": 200}},
        {"path": "/v1/invoices" + SHOWN}, {"original": SHOWN},
    )  # fmt: skip
    assert opened["rule"]["id"] == "gateway_bypass" and opened["event"]["severity"] == 73
    assert not [text for text in _texts(receiver.accepted) if {"\x1b", "\r", "\n"} & set(text)]
    assert opened["gatewatch"]["alert"]["count"] == 3 and resolved["event"]["action"] == "alert-resolved"


def _texts(value: object) -> list[str]:
    if isinstance(value, str):
        return [value]
    items = value.values() if isinstance(value, dict) else value if isinstance(value, list) else []
    return [text for item in items for text in _texts(item)]


def test_ocsf_detection_finding(receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run(receiver, tmp_path, monkeypatch, fmt="ocsf")
    opened, replay, resolved = receiver.accepted
    assert {doc["class_uid"] for doc in receiver.accepted} == {2004}
    assert [(d["activity_id"], d["type_uid"], d["status_id"]) for d in (opened, resolved)] == [
        (1, 200401, 1), (3, 200403, 4),
    ]  # fmt: skip
    assert opened["finding_info"]["uid"] == "a1b2c3" and opened["metadata"]["uid"] == "a1b2c3-1"
    assert opened["severity_id"] == 4 and replay["severity_id"] == 5
    assert opened["evidences"] == [{
        "src_endpoint": {"ip": "10.9.9.9"}, "http_response": {"code": 200},
        "http_request": {"http_method": "GET", "url": {"path": "/v1/invoices" + SHOWN}, "user_agent": SHOWN},
    }]  # fmt: skip
    assert replay["evidences"] == [
        {"src_endpoint": {"ip": "2001:db8::7"}, "actor": {"user": {"name": "user|" + SHOWN}}}
    ]


def test_a_missing_secret_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from gatewatch.errors import ConfigError

    monkeypatch.delenv("GW_TEST_UNSET_SECRET", raising=False)
    config = parse_config({"forward": [{"name": "w", "type": "webhook", "url": "http://127.0.0.1:9/",
                                        "secret_env": "GW_TEST_UNSET_SECRET"}]})  # fmt: skip
    with pytest.raises(ConfigError, match="GW_TEST_UNSET_SECRET is not set"):
        build_forwarders(config)


def test_a_failed_delivery_shows_the_url_without_its_query_in_dead_letters_and_logs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A trial: the URL's ?token= (and user:password@) was written in clear into the dead-letter file and
    into serve's forward_retry log lines."""
    monkeypatch.setenv("GW_TEST_WEBHOOK_SECRET", SECRET)
    config = parse_config({"forward": [{
        "name": "soar", "type": "webhook", "url": "http://127.0.0.1:9/hook?token=SuperSecretQueryTok#frag",
        "secret_env": "GW_TEST_WEBHOOK_SECRET", "max_attempts": 2, "retry_backoff_secs": 0.01,
        "dead_letters": str(tmp_path / "dl.ndjson"),
    }]})  # fmt: skip
    forwarders = build_forwarders(config)
    assert forwarders is not None
    with caplog.at_level(logging.INFO, logger="gatewatch.forward"):
        forwarders.submit(hostile_events()[:1])
        forwarders.close()
    (letter,) = [orjson.loads(line) for line in (tmp_path / "dl.ndjson").read_bytes().splitlines()]
    assert letter["reason"] == "retries_exhausted"
    assert letter["error"].startswith("webhook http://127.0.0.1:9/hook?…: "), letter["error"]
    assert "forward_retry forwarder=soar" in caplog.text
    assert "SuperSecretQueryTok" not in caplog.text + letter["error"] and "frag" not in letter["error"]
