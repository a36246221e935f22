"""The config model is declared class by class: every rule has its section, and nothing can change it."""

from __future__ import annotations

import typing

import pytest
from pydantic import BaseModel, ValidationError

from detectors import registry
from gatewatch.config import DetectorsConfig, GatewatchConfig, parse_config


def test_every_rule_has_its_section_with_its_own_settings() -> None:
    # The sections are written out, no longer built from the registry: a new rule must add its line.
    rules = registry()
    assert list(DetectorsConfig.model_fields) == sorted(rules)
    for rule_id, cls in rules.items():
        assert DetectorsConfig.model_fields[rule_id].annotation is cls.Config
        assert type(DetectorsConfig().section(rule_id)) is cls.Config


def test_a_rule_setting_is_read_through_its_declared_type() -> None:
    config = parse_config({"detectors": {"token_replay": {"enabled": False}}})
    assert config.detectors.token_replay.enabled is False
    assert config.detectors.section("token_replay") is config.detectors.token_replay
    with pytest.raises(AttributeError):
        config.detectors.section("no_such_rule")


def test_no_section_is_typed_any() -> None:
    hints = typing.get_type_hints(GatewatchConfig)
    assert typing.Any not in hints.values()
    for name, hint in hints.items():
        if name in GatewatchConfig.model_fields and name != "forward":  # forward: a list of forwarder kinds
            assert isinstance(hint, type) and issubclass(hint, BaseModel), name


@pytest.mark.parametrize(
    "change",
    [
        lambda c: setattr(c, "gateway", None),
        lambda c: setattr(c.kafka, "group_id", "other"),
        lambda c: setattr(c.detectors.http_5xx_burst, "enabled", False),
    ],
    ids=["gateway", "kafka.group_id", "detectors.http_5xx_burst.enabled"],
)
def test_a_loaded_config_cannot_be_changed(change: typing.Callable[[GatewatchConfig], None]) -> None:
    config = parse_config({})
    with pytest.raises(ValidationError, match="frozen"):
        change(config)
