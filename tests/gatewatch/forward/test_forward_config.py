"""Forwarder destinations are checked when the config loads, not when serve first sends to them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from gatewatch.cli import main
from gatewatch.config import parse_config
from gatewatch.errors import ConfigError

WEBHOOK = {"name": "w", "type": "webhook", "secret_env": "GW_TEST_SECRET"}
SYSLOG = {"name": "s", "type": "syslog", "port": 514}
KAFKA = {"name": "k", "type": "kafka", "topic": "siem-alerts"}


@pytest.mark.parametrize(
    ("forwarder", "message"),
    [
        ({**WEBHOOK, "url": "http://"}, "forward.0.webhook.url: needs a host"),
        ({**WEBHOOK, "url": "https://:8443/hook"}, "forward.0.webhook.url: needs a host"),
        ({**WEBHOOK, "url": "http://exa mple.com:99999/x"}, "forward.0.webhook.url: a URL has no spaces"),
        ({**WEBHOOK, "url": "http://soar.example/a\nb"}, "forward.0.webhook.url: a URL has no spaces"),
        ({**WEBHOOK, "url": "http://soar.example:99999/x"}, "forward.0.webhook.url: the port must be 1-65535"),
        ({**WEBHOOK, "url": "http://soar.example:0/x"}, "forward.0.webhook.url: the port must be 1-65535"),
        ({**WEBHOOK, "url": "http://soar.example:https/x"}, "forward.0.webhook.url: the port must be 1-65535"),
        ({**WEBHOOK, "url": "http://[::1/x"}, "forward.0.webhook.url: not a URL"),
        ({**WEBHOOK, "url": "ftp://soar.example/"}, "forward.0.webhook.url: String should match pattern"),
        ({**SYSLOG, "host": ""}, "forward.0.syslog.host: needs a host"),
        ({**SYSLOG, "host": "siem example"}, "forward.0.syslog.host: a host name or address has no spaces"),
        ({**SYSLOG, "host": "siem.example\t"}, "forward.0.syslog.host: a host name or address has no spaces"),
        ({**SYSLOG, "host": "tcp://siem.example"}, "forward.0.syslog.host: a host name or address, not a URL"),
        ({**SYSLOG, "host": "siem.example", "port": 65536}, "forward.0.syslog.port"),
        ({**KAFKA, "bootstrap_servers": [""]}, "forward.0.kafka.bootstrap_servers.0: needs a host"),
        ({**KAFKA, "bootstrap_servers": ["b1:9092", "b 2:9092"]}, "forward.0.kafka.bootstrap_servers.1: a host"),
        ({**KAFKA, "bootstrap_servers": ["b1:0"]}, "forward.0.kafka.bootstrap_servers.0: the port must be 1-65535"),
        ({**KAFKA, "bootstrap_servers": ["b1:"]}, "forward.0.kafka.bootstrap_servers.0: the port must be 1-65535"),
        ({**KAFKA, "bootstrap_servers": ["[::1]9092"]}, "forward.0.kafka.bootstrap_servers.0: expected HOST:PORT"),
    ],
)
def test_an_unreachable_destination_is_refused_naming_its_key(forwarder: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"forward": [forwarder]})
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(
    "forwarder",
    [
        {**WEBHOOK, "url": "https://soar.example/hooks/gatewatch"},
        {**WEBHOOK, "url": "http://127.0.0.1:9/"},
        {**WEBHOOK, "url": "http://[2001:db8::7]:8080/hook?x=1"},
        {**WEBHOOK, "url": "https://soar.example:/hook"},  # an empty port is the scheme's (RFC 3986)
        {**SYSLOG, "host": "siem.example"},
        {**SYSLOG, "host": "10.0.5.20"},
        {**SYSLOG, "host": "2001:db8::7"},
        {**KAFKA, "bootstrap_servers": ["b1:9092", "b2", "[2001:db8::7]:9093", "2001:db8::8"]},
    ],
)
def test_reachable_destinations_load(forwarder: dict[str, Any]) -> None:
    assert parse_config({"forward": [forwarder]}).forward[0].name == forwarder["name"]


def test_a_kafka_forwarder_takes_the_kafka_sections_brokers_and_needs_some() -> None:
    # A newcomer's trial: with neither, it took the default 127.0.0.1:9092 and dead-lettered every alert.
    assert parse_config({"kafka": {"bootstrap_servers": ["b1:9092"]}, "forward": [KAFKA]}).forward[0].name == "k"
    with pytest.raises(ConfigError, match=r"forward.0 \(k\): a kafka forwarder needs brokers: give its "
                                          "bootstrap_servers, or a kafka section's"):  # fmt: skip
        parse_config({"forward": [KAFKA]})


@pytest.mark.parametrize(
    ("url", "message"),
    [
        # A trial: loaded, then never delivered (urllib takes user:password@ for part of the host), and the
        # password written in clear into the dead-letter file.
        ("http://svcuser:SuperSecretURLPW@soar.example/hook?token=SuperSecretQueryTok",
         "forward.0.webhook.url: no user:password@ in a webhook URL: give credentials in headers (e.g. Authorization)"),
        ("https://svcuser@soar.example/hook", "forward.0.webhook.url: no user:password@ in a webhook URL"),
        ("ftp://svcuser:SuperSecretURLPW@soar.example/x?token=SuperSecretQueryTok",
         "(got 'ftp://soar.example/x?…')"),  # whatever is wrong, the line shows no credentials
        ("http://soar.example:99999/x?token=SuperSecretQueryTok", "the port must be 1-65535 (got 'http://soar"),
    ],
)  # fmt: skip
def test_a_webhook_url_is_never_shown_with_its_credentials_or_query(url: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config({"forward": [{**WEBHOOK, "url": url}]})
    line = str(caught.value)
    assert message in line and "SuperSecret" not in line and "svcuser" not in line, line



def test_a_bad_destination_stops_the_start_with_one_line_and_status_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "gatewatch.yaml"
    config.write_text("forward:\n  - {name: soar, type: webhook, url: 'http://', secret_env: GW_TEST_SECRET}\n")
    log = tmp_path / "envoy.log"
    log.write_text("")
    code = main(["replay", "--config", str(config), "--gateway", str(log), "--alerts-out", str(tmp_path / "a.ndjson")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "forward.0.webhook.url: needs a host" in err
