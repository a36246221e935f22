"""``kafka.security``: only kafka-python's security settings, each with its type, checked when the config loads."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewatch.cli import main
from gatewatch.config import load_config, parse_config
from gatewatch.errors import ConfigError
from ingest.sources.kafka_settings import client_settings

EVERY_KEY = {
    "security_protocol": "SASL_SSL", "sasl_mechanism": "SCRAM-SHA-256", "ssl_cafile": "/etc/ca.pem",
    "ssl_certfile": "/etc/client.pem", "ssl_keyfile": "/etc/client-key.pem", "ssl_password": "pem-pass",
    "ssl_crlfile": "/etc/crl.pem", "ssl_check_hostname": False, "sasl_kerberos_service_name": "kafka",
    "sasl_kerberos_domain_name": "example.org",
}  # fmt: skip


def test_every_documented_key_loads_and_reaches_the_clients() -> None:
    settings = client_settings(parse_config({"kafka": {"security": EVERY_KEY}}).kafka)
    assert {key: settings[key] for key in EVERY_KEY} == EVERY_KEY


@pytest.mark.parametrize(
    ("security", "message"),
    [
        # A trial: replay loaded this, and serve failed at connect blaming the address and protocol.
        ({"security_protcol": "SSL"},
         "kafka.security: unknown key 'security_protcol' (did you mean security_protocol?)"),
        # A key gatewatch sets itself: serve ended in "TypeError: ... got multiple values for keyword 'client_id'".
        ({"client_id": "foo"}, "kafka.security: unknown key 'client_id': it takes security_protocol, sasl_mechanism"),
        ({"retries": 3}, "gatewatch sets every other client setting itself"),  # a producer's, refused by consumers
        ({"security_protocol": "TLS"}, "kafka.security.security_protocol should be 'PLAINTEXT', 'SSL', 'SASL_PL"),
        ({"sasl_mechanism": "OAUTHBEARER"}, "kafka.security.sasl_mechanism should be 'PLAIN'"),  # needs an object
        ({"ssl_check_hostname": "no"}, "kafka.security.ssl_check_hostname should be a valid boolean"),
        ({"ssl_cafile": ["a.pem"]}, "kafka.security.ssl_cafile should be a valid string"),
        ({"sasl_plain_password": "hunter2"}, "kafka.security: sasl_plain_password is not read: use kafka.sasl_pass"),
    ],
)
def test_a_key_or_value_kafka_python_would_refuse_is_refused_at_load(security: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"kafka": {"security": security}})
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_replay_stops_at_a_misspelt_key_with_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "gatewatch.yaml"
    config.write_text("kafka:\n  security: {security_protcol: SSL}\n")
    log = tmp_path / "envoy.log"
    log.write_text("")
    code = main(["replay", "--config", str(config), "--gateway", str(log), "--alerts-out", str(tmp_path / "a.ndjson"),
                 "--store", "none"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "kafka.security: unknown key 'security_protcol'" in err, err


def test_tls_files_are_read_from_the_config_files_folder(tmp_path: Path) -> None:
    """A trial: ssl_cafile: ca.pem, next to the config, was looked for in the working directory."""
    (tmp_path / "conf" / "certs").mkdir(parents=True)
    for name in ("ca.pem", "client.pem", "client-key.pem", "crl.pem"):
        (tmp_path / "conf" / "certs" / name).write_text("")
    (tmp_path / "elsewhere.pem").write_text("")
    config = tmp_path / "conf" / "gatewatch.yaml"
    config.write_text("kafka:\n  security: {security_protocol: SSL, ssl_cafile: certs/ca.pem, ssl_certfile: "
                      "certs/client.pem, ssl_keyfile: certs/client-key.pem, "
                      f"ssl_crlfile: {tmp_path / 'elsewhere.pem'}}}\n")  # fmt: skip
    settings = client_settings(load_config(config).kafka)
    certs = tmp_path / "conf" / "certs"
    assert [settings[key] for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_crlfile")] == [
        str(certs / "ca.pem"), str(certs / "client.pem"), str(certs / "client-key.pem"), str(tmp_path / "elsewhere.pem")
    ]
    assert settings["security_protocol"] == "SSL"


@pytest.mark.parametrize("key", ["ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_crlfile"])
def test_a_missing_tls_file_is_refused_at_load_with_where_it_was_looked_for(tmp_path: Path, key: str) -> None:
    (tmp_path / "conf").mkdir()
    config = tmp_path / "conf" / "gatewatch.yaml"
    config.write_text(f"kafka:\n  security: {{security_protocol: SSL, {key}: missing.pem}}\n")
    expected = f"kafka.security.{key}: cannot read {tmp_path / 'conf' / 'missing.pem'}: no such file (a relative path"
    with pytest.raises(ConfigError) as caught:
        load_config(config)
    assert str(caught.value).startswith(expected)


def test_the_key_password_is_read_from_a_variable_or_a_file_never_kept_in_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "pem-pass").write_text("from-a-file\n")
    config = tmp_path / "conf" / "gatewatch.yaml"
    config.write_text("kafka:\n  security: {ssl_password_file: pem-pass}\n")  # next to the config, as other files
    settings = client_settings(load_config(config).kafka)
    assert settings["ssl_password"] == "from-a-file" and "ssl_password_file" not in settings
    monkeypatch.setenv("GW_PEM_PASS", "from-the-environment")
    settings = client_settings(parse_config({"kafka": {"security": {"ssl_password_env": "GW_PEM_PASS"}}}).kafka)
    assert settings["ssl_password"] == "from-the-environment" and "ssl_password_env" not in settings
    monkeypatch.delenv("GW_PEM_PASS")
    with pytest.raises(ConfigError, match="kafka.security.ssl_password_env: the environment variable GW_PEM_PASS"):
        client_settings(parse_config({"kafka": {"security": {"ssl_password_env": "GW_PEM_PASS"}}}).kafka)
    with pytest.raises(ConfigError, match="give one of ssl_password, ssl_password_env, ssl_password_file"):
        parse_config({"kafka": {"security": {"ssl_password": "x", "ssl_password_env": "GW_PEM_PASS"}}})
