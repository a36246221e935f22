"""`gatewatch resend` against a real HTTP receiver: dead-lettered alert events sent once the receiver is back."""

from __future__ import annotations

import fcntl
from pathlib import Path

import orjson
import pytest

from gatewatch.cli import main
from gatewatch.config import load_config
from gatewatch.forward import build_forwarders
from tests.gatewatch.forward.conftest import SECRET, Receiver
from tests.gatewatch.forward.test_syslog_rsyslog import hostile_events

IDS = ["a1b2c3-1", "d4e5f6-1", "a1b2c3-2"]  # hostile_events(), in order


def config_file(tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GW_TEST_WEBHOOK_SECRET", SECRET)
    path = tmp_path / "gatewatch.yaml"
    path.write_text(f"""
forward:
  - name: soar
    type: webhook
    url: {receiver.url}
    format: ecs
    secret_env: GW_TEST_WEBHOOK_SECRET
    max_attempts: 2
    retry_backoff_secs: 0.01
    dead_letters: {tmp_path / "soar.dead-letters.ndjson"}
""")
    return path


def dead_letters(tmp_path: Path) -> Path:
    return tmp_path / "soar.dead-letters.ndjson"


def live_run_during_an_outage(config: Path, receiver: Receiver) -> None:
    """What serve's forwarder does while the receiver answers 503: every event becomes a dead letter."""
    receiver.unavailable = 10_000
    forwarders = build_forwarders(load_config(config))
    assert forwarders is not None
    forwarders.submit(hostile_events())
    forwarders.close()
    assert forwarders.counts()["soar"] == {"retried": 3, "dead_letter_retries_exhausted": 3}
    receiver.unavailable = 0


def accepted_ids(receiver: Receiver) -> list[str]:
    return [doc["event"]["id"] for doc in receiver.accepted]


def test_events_dead_lettered_in_an_outage_are_sent_once_when_the_receiver_is_back(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, receiver, monkeypatch)
    forwarders = build_forwarders(load_config(config))
    assert forwarders is not None
    forwarders.submit(hostile_events())
    forwarders.close()
    live = receiver.accepted[:]  # what serve sends when the receiver is up
    receiver.accepted.clear()
    live_run_during_an_outage(config, receiver)
    receiver.attempts.clear()

    assert main(["resend", "--config", str(config), "--dry-run"]) == 0
    assert "forwarder soar: pending=3" in capsys.readouterr().err
    assert receiver.attempts == []
    monkeypatch.delenv("GW_TEST_WEBHOOK_SECRET")  # a dry run counts on a host without the secret (a trial)
    assert main(["resend", "--config", str(config), "--dry-run"]) == 0
    assert "forwarder soar: pending=3" in capsys.readouterr().err
    monkeypatch.setenv("GW_TEST_WEBHOOK_SECRET", SECRET)

    assert main(["resend", "--config", str(config)]) == 0
    assert "forwarder soar: sent=3" in capsys.readouterr().err
    assert accepted_ids(receiver) == IDS
    assert receiver.accepted == live
    assert receiver.bad_signatures == 0

    assert main(["resend", "--config", str(config)]) == 0  # the offset is kept: nothing is sent twice
    assert "nothing to resend" in capsys.readouterr().err
    assert accepted_ids(receiver) == IDS


def test_a_receiver_still_down_stops_the_run_and_loses_nothing(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, receiver, monkeypatch)
    live_run_during_an_outage(config, receiver)
    receiver.unavailable = 10_000
    receiver.attempts.clear()

    assert main(["resend", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "forwarder soar: retries_exhausted=1" in err and "receiver is still failing" in err
    assert {event_id for event_id, _, _ in receiver.attempts} == {"a1b2c3-1"}  # the first event only
    assert len(dead_letters(tmp_path).read_bytes().splitlines()) == 4  # it failed again: appended

    receiver.unavailable = 0
    assert main(["resend", "--config", str(config)]) == 0
    assert sorted(accepted_ids(receiver)) == sorted(IDS)  # the two left, then the one appended again


def test_a_rejected_event_is_kept_for_later_and_the_rest_are_sent(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, receiver, monkeypatch)
    live_run_during_an_outage(config, receiver)
    receiver.reject = {"d4e5f6-1"}

    assert main(["resend", "--config", str(config)]) == 1
    assert "forwarder soar: rejected=1, sent=2" in capsys.readouterr().err
    assert accepted_ids(receiver) == ["a1b2c3-1", "a1b2c3-2"]
    last = orjson.loads(dead_letters(tmp_path).read_bytes().splitlines()[-1])
    assert (last["reason"], last["event"]["lifecycle"]["event_id"]) == ("rejected", "d4e5f6-1")

    receiver.reject = set()
    assert main(["resend", "--config", str(config)]) == 0
    assert accepted_ids(receiver) == IDS[:1] + IDS[2:] + ["d4e5f6-1"]


def test_what_cannot_be_sent_is_reported_and_left_in_the_file(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, receiver, monkeypatch)
    live_run_during_an_outage(config, receiver)
    path = dead_letters(tmp_path)
    letters = path.read_bytes().splitlines(keepends=True)
    other = orjson.loads(letters[1])
    other["forwarder"] = "arc\x1b[31msight"  # a forwarder since removed from the config (and a hostile name)
    edited = orjson.loads(letters[2])
    edited["event"]["count"] = "many\x1b[31m"
    half = letters[0][:40]  # being written by serve right now
    path.write_bytes(letters[0] + letters[0] + orjson.dumps(other) + b"\n" + orjson.dumps(edited) + b"\n"
                     + b"{not json\n" + half)  # fmt: skip
    content = path.read_bytes()

    assert main(["resend", "--config", str(config)]) == 1
    err = capsys.readouterr().err
    assert "forwarder soar: repeated=1, sent=1, unreadable=1" in err
    assert "forwarder arc\\x1b[31msight: unknown_forwarder=1" in err and "\x1b" not in err  # shown, inert
    assert "forwarder ?: unreadable=1" in err
    assert "field 'count' should be int, not str" in err
    assert accepted_ids(receiver) == ["a1b2c3-1"]
    assert path.read_bytes() == content  # nothing sent was removed; nothing appended (nothing failed to send)

    path.write_bytes(content + letters[0][40:])  # serve finished its line
    assert main(["resend", "--config", str(config)]) == 0
    assert "forwarder soar: repeated=1" not in capsys.readouterr().err
    assert accepted_ids(receiver) == ["a1b2c3-1", "a1b2c3-1"]  # another run: the receiver drops the known id


def test_a_new_file_under_the_same_name_is_read_from_its_start(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = config_file(tmp_path, receiver, monkeypatch)
    live_run_during_an_outage(config, receiver)
    assert main(["resend", "--config", str(config)]) == 0
    path = dead_letters(tmp_path)
    letters = path.read_bytes().splitlines(keepends=True)
    path.unlink()
    path.write_bytes(b"".join(letters[1:]))  # rotated away, then two events failed again
    assert main(["resend", "--config", str(config)]) == 0
    assert accepted_ids(receiver) == IDS + IDS[1:]


def test_two_runs_on_one_file_at_once_are_refused(
    receiver: Receiver, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_file(tmp_path, receiver, monkeypatch)
    live_run_during_an_outage(config, receiver)
    with dead_letters(tmp_path).open("rb") as other_run:
        fcntl.flock(other_run, fcntl.LOCK_EX)
        assert main(["resend", "--config", str(config)]) == 2
    assert "another gatewatch resend is working on it" in capsys.readouterr().err
    assert receiver.accepted == []


def test_a_config_without_forwarders_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gatewatch.yaml"
    path.write_text("store: {url: none}\n")
    assert main(["resend", "--config", str(path)]) == 2
    assert "the config has no forward section" in capsys.readouterr().err
