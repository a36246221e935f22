"""Kafka credentials: read like the store's, given to every client gatewatch builds, refused when ambiguous."""

from __future__ import annotations

from pathlib import Path

import pytest
from kafka.errors import SaslAuthenticationFailedError

from gatewatch.config import load_config, parse_config
from gatewatch.errors import ConfigError
from ingest.errors import SourceAuthError
from ingest.sources.kafka import consumer_settings
from ingest.sources import kafka_settings
from ingest.sources.kafka_client import BOUNDED_BACKOFF
from ingest.sources.kafka_settings import check_login, client_settings

SECURITY = {"security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-512"}


def test_credentials_from_env_and_file_relative_to_the_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "kafka-password").write_text("s3cret-from-file\n")
    monkeypatch.setenv("GW_KAFKA_USER", "gatewatch")
    config = tmp_path / "gatewatch.yaml"
    config.write_text(
        "kafka: {bootstrap_servers: ['b:9093'], sasl_username_env: GW_KAFKA_USER, sasl_password_file: kafka-password,"
        " security: {security_protocol: SASL_SSL, sasl_mechanism: SCRAM-SHA-512}}\n"
    )
    kafka = load_config(config).kafka
    assert client_settings(kafka) == {
        "bootstrap_servers": ["b:9093"], **BOUNDED_BACKOFF, **SECURITY,
        "sasl_plain_username": "gatewatch", "sasl_plain_password": "s3cret-from-file",
    }  # fmt: skip
    consumer = consumer_settings(kafka, max_poll_records=5)
    assert (consumer["sasl_plain_password"], consumer["max_poll_records"]) == ("s3cret-from-file", 5)
    assert client_settings(kafka, ["other:9093"])["bootstrap_servers"] == ["other:9093"]
    assert "s3cret" not in repr(kafka) and "s3cret" not in repr(parse_config({"kafka": {
        "sasl_username": "u", "sasl_password": "s3cret-inline"}}).kafka)  # fmt: skip


def test_no_credentials_no_sasl_keys() -> None:
    settings = client_settings(parse_config({"kafka": {"security": SECURITY}}).kafka)
    assert "sasl_plain_username" not in settings and "sasl_plain_password" not in settings


def test_unset_variable_names_the_key_not_the_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GW_NOPE_KAFKA", raising=False)
    kafka = parse_config({"kafka": {"sasl_username": "u", "sasl_password_env": "GW_NOPE_KAFKA"}}).kafka
    with pytest.raises(ConfigError, match=r"^kafka.sasl_password_env: the environment variable GW_NOPE_KAFKA is not"):
        client_settings(kafka)


@pytest.mark.parametrize(
    ("kafka", "message"),
    [
        ({"security": {"sasl_plain_password": "hunter2"}}, "kafka.security: sasl_plain_password is not read: use"),
        ({"security": {"sasl_plain_username": "u"}}, "kafka.security: sasl_plain_username is not read"),
        ({"sasl_username": "u", "sasl_password": "p", "sasl_password_env": "X"}, "give kafka.sasl_password one way"),
        ({"sasl_password_env": "X"}, "go together"),
        ({"sasl_username": "u"}, "go together"),
    ],
)
def test_ambiguous_or_half_credentials_are_refused(kafka: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        parse_config({"kafka": kafka})
    assert "hunter2" not in str(caught.value) and "\n" not in str(caught.value)


class _Client:
    built: list[dict[str, object]] = []

    def __init__(self, **settings: object) -> None:
        _Client.built.append(settings)

    def close(self) -> None:
        pass


def test_login_check_connects_only_with_sasl(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_settings, "KafkaAdminClient", _Client)
    check_login(parse_config({"kafka": {"bootstrap_servers": ["127.0.0.1:9"]}}).kafka)
    assert _Client.built == []
    check_login(parse_config({"kafka": {"security": SECURITY}}).kafka)  # a login that succeeds returns
    assert [settings["sasl_mechanism"] for settings in _Client.built] == ["SCRAM-SHA-512"]


class _RefusedClient:
    """kafka-python once the broker refused the login: the client raises it, and need not log it again first."""

    def __init__(self, **settings: object) -> None:
        raise SaslAuthenticationFailedError("Authentication failed during authentication due to invalid credentials")


def test_a_refusal_the_client_raises_stops_the_login_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kafka_settings, "KafkaAdminClient", _RefusedClient)
    with pytest.raises(SourceAuthError, match="refused the SASL login"):
        check_login(parse_config({"kafka": {"security": SECURITY}}).kafka)
