"""The redaction hash key: from the config, a file, or an environment variable."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from ingest.errors import ConfigError
from ingest.settings import RedactSettings

DEFAULT_HASH_KEY_ENV = "GATEWATCH_REDACT_KEY"
"""Read when the config names no key: set, every process started with it hashes alike."""


def resolve_hash_key(config: RedactSettings) -> bytes | None:
    """The HMAC key from ``hash_key``, ``hash_key_file``, the ``hash_key_env`` variable or else
    :data:`DEFAULT_HASH_KEY_ENV`; None if none is set (the caller then uses a random key per process).

    Raises :class:`ConfigError` for a key the config asks for and does not get: a file unreadable or
    empty, or ``hash_key_env`` naming a variable unset or empty, as ``store.password_env`` does. Falling
    back to a random key there would hash one secret differently in every process, without a word.
    """
    if config.hash_key is not None:
        secret: str = config.hash_key.get_secret_value()
        return secret.encode()
    if config.hash_key_file is not None:
        try:
            key = Path(config.hash_key_file).read_bytes().strip()
        except OSError as error:
            raise ConfigError(f"redact.hash_key_file: cannot read {config.hash_key_file}: {error.strerror}") from None
        if not key:
            raise ConfigError(f"redact.hash_key_file: {config.hash_key_file} is empty")
        return key
    if config.hash_key_env is not None:
        value = os.environ.get(config.hash_key_env)
        if not value:
            name = config.hash_key_env
            raise ConfigError(f"redact.hash_key_env: the environment variable {name} is not set or empty")
        return value.encode()
    value = os.environ.get(DEFAULT_HASH_KEY_ENV)
    return value.encode() if value else None


def origin_key(config: RedactSettings) -> bytes | None:
    """The key that seals the ``gatewatch-origin`` header of what gatewatch produces to an input topic
    (:func:`ingest.sources.kafka.origin_seal`), derived from the redaction hash key. Derived, not the
    key itself: a redaction marker is an HMAC of text a client writes, so with ``hash_hex_chars`` of 32
    or more a client could have gatewatch compute a seal for it. None when no key is configured: a
    random key of the process would not match after a restart, and records produced before a crash
    would lose their ids (stored twice when produced again), so headers then go unsealed and are taken
    unsealed, as before seals.
    """
    key = resolve_hash_key(config)
    return None if key is None else hmac.new(key, b"gatewatch-origin-seal key", hashlib.sha256).digest()
