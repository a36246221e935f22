"""The config model: defaults, validation messages that name the key, and the shipped schema."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gatewatch.config import load_config, parse_config, with_instance_id
from gatewatch.errors import ConfigError
from gatewatch.schema import config_schema_text
from ingest.sources.kafka import static_membership

SCHEMA_FILE = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.json"


def test_every_key_has_a_default() -> None:
    config = parse_config({})
    assert config.correlate.join_window_secs == 30.0
    assert config.alerts.suppression_window_secs == 600.0
    assert config.trust.allowlist_paths == ["/healthz", "/readyz", "/livez", "/metrics"]
    assert config.detectors.http_4xx_burst.min_errors == 30
    assert config.detectors.token_expired_accepted.skew_allowance_secs == 30.0


def test_the_shipped_schema_matches_the_model() -> None:
    assert SCHEMA_FILE.read_text() == config_schema_text(), "run: gatewatch schema > schemas/config.schema.json"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"detectors": {"http_5xx_burst": {"min_errors": "lots"}}}, "detectors.http_5xx_burst.min_errors"),
        ({"trust": {"gateway_networks": ["10.0.0.0/33"]}}, "trust.gateway_networks"),
        ({"correlate": {"join_window_secs": -1}}, "correlate.join_window_secs"),
        ({"gatway": {}}, "gatway: unknown key"),
        ({"detectors": {"no_such_rule": {}}}, "detectors.no_such_rule: unknown key"),
        ({"gateway": {"format": "%START_TIME%", "json_format": {"t": "%START_TIME%"}}}, "not both"),
        ({"gateway": {"xff_num_trusted_hops": -1}}, "gateway.xff_num_trusted_hops"),
        ({"gateway": {"json_format": {"service": "billing"}}}, "json_format: no command operator"),
        # a count that would alert on every token, or track none, or seed nothing
        ({"detectors": {"token_replay": {"min_distinct_addresses": 1}}}, "min_distinct_addresses should be greater"),
        ({"detectors": {"token_replay": {"max_addresses_per_token": 0}}},
         "max_addresses_per_token should be greater than or equal to 2 (got 0)"),  # named and shown: no secret
        ({"detectors": {"token_replay": {"min_distinct_addresses": 5, "max_addresses_per_token": 4}}},
         "max_addresses_per_token must be at least min_distinct_addresses"),
        ({"detectors": {"token_replay": {"max_tracked_tokens": 0}}}, "max_tracked_tokens should be greater"),
        ({"detectors": {"behaviour_outlier": {"random_state": -1}}}, "random_state should be greater"),
        # forwarder destinations: tests/gatewatch/forward/test_forward_config.py
        ({"kafka": {"bootstrap_servers": ["kafka-0:9092", "kafka-1:90920"]}}, "kafka.bootstrap_servers.1: the port"),
    ],
)
def test_invalid_values_name_the_dotted_key(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert message in str(caught.value)


WEBHOOK = {"name": "soar", "type": "webhook", "url": "http://soar.example/hook", "secret_env": "GW_TEST_SECRET"}


@pytest.mark.parametrize(
    ("data", "message"),
    [
        # A trial: accepted, then replay ended in "ValueError: year 33714 is out of range" when the alert resolved.
        ({"alerts": {"resolve_after_secs": {"http_4xx_burst": 1e12}}},
         "alerts.resolve_after_secs.http_4xx_burst: must be a duration from 0 to 31622400 s (got 1000000000000.0)"),
        # Accepted, then an OverflowError traceback at shutdown, or every delivery dead-lettered.
        ({"forward": [{**WEBHOOK, "drain_timeout_secs": 1e12}]}, "forward.0.drain_timeout_secs: must be a duration"),
        ({"forward": [{**WEBHOOK, "timeout_secs": 1e300}]}, "forward.0.timeout_secs: must be a duration"),
        ({"forward": [{**WEBHOOK, "timeout_secs": float("inf")}]},
         "forward.0.webhook.timeout_secs should be a finite number (got inf)"),
        ({"forward": [{**WEBHOOK, "retry_backoff_secs": float("inf")}]}, "retry_backoff_secs should be a finite"),
        ({"forward": [{**WEBHOOK, "retry_max_backoff_secs": float("nan")}]}, "retry_max_backoff_secs should be"),
    ],
)  # fmt: skip
def test_every_duration_is_finite_and_at_most_366_days_in_lists_and_mappings_too(data: dict, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert message in str(caught.value) and str(caught.value).startswith("invalid config: ")


def test_revocation_path_is_relative_to_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "conf").mkdir()
    config_file = tmp_path / "conf" / "gw.yaml"
    config_file.write_text("tokens:\n  revoked: lists/revoked.csv\n")
    (tmp_path / "conf" / "lists").mkdir()
    (tmp_path / "conf" / "lists" / "revoked.csv").write_text("jti,revoked_at\n")
    assert load_config(config_file).tokens.revoked == tmp_path / "conf" / "lists" / "revoked.csv"


def test_forwarders_tls_files_are_read_from_the_config_files_folder_like_every_other_file(tmp_path: Path) -> None:
    (tmp_path / "conf" / "certs").mkdir(parents=True)
    (tmp_path / "conf" / "certs" / "ca.pem").write_text("")
    (tmp_path / "client.pem").write_text("")
    config_file = tmp_path / "conf" / "gw.yaml"
    config_file.write_text(
        "forward:\n  - {name: siem, type: syslog, host: 127.0.0.1, port: 6514, transport: tls,\n"
        f"     tls: {{ca_file: certs/ca.pem, cert_file: {tmp_path / 'client.pem'}}}}}\n"
    )
    (tls,) = [forwarder.tls for forwarder in load_config(config_file).forward]  # type: ignore[union-attr]
    assert (tls.ca_file, tls.cert_file) == (tmp_path / "conf" / "certs" / "ca.pem", tmp_path / "client.pem")


def test_a_missing_tls_file_is_named_with_where_it_was_looked_for(tmp_path: Path) -> None:
    """An upgrade trial: a CA path relative to the working directory, as an older release read it, failed with
    "cannot load the certificates: [Errno 2] No such file or directory", naming no file."""
    (tmp_path / "conf").mkdir()
    config_file = tmp_path / "conf" / "gw.yaml"
    config_file.write_text("forward:\n  - {name: siem, type: syslog, host: 127.0.0.1, port: 6514, transport: tls,\n"
                           "     tls: {ca_file: certs/ca.pem}}\n")  # fmt: skip
    expected = f"forward.siem.tls.ca_file: cannot read {tmp_path / 'conf' / 'certs' / 'ca.pem'}: no such file"
    with pytest.raises(ConfigError, match=re.escape(expected) + r" \(a relative path is read from the config"):
        load_config(config_file)


def test_unreadable_or_non_mapping_files_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(listy)


def test_a_key_written_twice_is_refused_not_merged(tmp_path: Path) -> None:
    """YAML keeps the last of two keys silently: a second detectors section dropped the first one's settings."""
    config = tmp_path / "gw.yaml"
    config.write_text("detectors:\n  http_4xx_burst: {min_errors: 5}\ntrust: {}\ndetectors:\n  token_replay: {}\n")
    with pytest.raises(ConfigError, match="line 4 column 1: the key 'detectors' is written twice"):
        load_config(config)
    config.write_text("gateway: {max_line_bytes: 100, max_line_bytes: 200}\n")
    with pytest.raises(ConfigError, match="'max_line_bytes' is written twice"):
        load_config(config)
    config.write_text("x: &base {min_errors: 5, window_secs: 60}\n".replace("x", "detectors:\n  http_4xx_burst", 1)
                      + "  http_5xx_burst: {<<: *base, min_errors: 7}\n")  # fmt: skip
    assert load_config(config).detectors.http_5xx_burst.min_errors == 7  # a merge key's value may be overridden


def test_a_count_of_proxies_is_no_boolean() -> None:
    with pytest.raises(ConfigError, match="xff_num_trusted_hops should be a valid integer"):
        parse_config({"gateway": {"xff_num_trusted_hops": True}})


def test_instance_id_makes_each_stage_a_static_group_member() -> None:
    config = parse_config({"kafka": {"instance_id": "gatewatch-1"}})
    assert static_membership(config.kafka, "ingest") == {"group_instance_id": "gatewatch-1-ingest"}
    assert static_membership(config.kafka, "detect") == {"group_instance_id": "gatewatch-1-detect"}
    assert static_membership(parse_config({}).kafka, "ingest") == {}  # unset: dynamic members, as before
    assert with_instance_id(parse_config({}), "pod-7").kafka.instance_id == "pod-7"
    with pytest.raises(ConfigError, match="--instance-id"):
        with_instance_id(config, "two words")


@pytest.mark.parametrize(
    "data",
    [
        {"kafka": {"sasl_username": "u", "sasl_password": 123456789}},  # YAML reads an all-digit password as a number
        {"redact": {"hash_key": 123456789}},
        {"forward": [{"type": "webhook", "name": "siem", "url": "https://siem.example/x",
                      "headers": {"Authorization": 123456789}}]},  # fmt: skip
    ],
)
def test_a_refused_secret_is_not_echoed(data: dict) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(data)
    assert "123456789" not in str(caught.value) and "its value not shown" in str(caught.value)
