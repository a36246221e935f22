"""What ``ingest`` reads of the config, declared as protocols.

The config model lives in :mod:`gatewatch.config`, which ``ingest`` may not
import (tests/test_layering.py). Each function here that takes a config
section names the protocol of what it reads; the frozen sections of
:class:`gatewatch.config.GatewatchConfig` satisfy them, and mypy checks that
where ``gatewatch`` passes them in — a misspelt or retyped key fails there.
Every member is read-only, as the config is frozen.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from pydantic import SecretStr


class KafkaTopicNames(Protocol):
    """``kafka.topics``."""

    @property
    def gateway(self) -> str: ...
    @property
    def app(self) -> str: ...


class KafkaUnwrapKeys(Protocol):
    """``kafka.unwrap``: how each topic's messages wrap the log line (None: not at all)."""

    @property
    def gateway(self) -> str | None: ...
    @property
    def app(self) -> str | None: ...


class KafkaSettings(Protocol):
    """``kafka``: the brokers, the group, the topics and the credentials (``sasl_*``, read by name)."""

    @property
    def bootstrap_servers(self) -> list[str]: ...
    @property
    def group_id(self) -> str: ...
    @property
    def instance_id(self) -> str | None: ...
    @property
    def security(self) -> Mapping[str, Any]: ...
    @property
    def topics(self) -> KafkaTopicNames: ...
    @property
    def unwrap(self) -> KafkaUnwrapKeys: ...


class StoreSettings(Protocol):
    """``store``: index naming, retention and bulk size (credentials and TLS are read by name)."""

    @property
    def index_prefix(self) -> str: ...
    @property
    def retention_days(self) -> int: ...
    @property
    def bulk_max_docs(self) -> int: ...


class RedactSettings(Protocol):
    """``redact``: what is replaced in every record, and the key of the hashes."""

    @property
    def enabled(self) -> bool: ...
    @property
    def query_params(self) -> list[str]: ...
    @property
    def json_keys(self) -> list[str]: ...
    @property
    def headers(self) -> list[str]: ...
    @property
    def hash_key(self) -> SecretStr | None: ...
    @property
    def hash_key_file(self) -> Path | None: ...
    @property
    def hash_key_env(self) -> str | None: ...
    @property
    def hash_hex_chars(self) -> int: ...


class HasRedact(Protocol):
    """A whole config, of which only ``redact`` is read."""

    @property
    def redact(self) -> RedactSettings: ...
