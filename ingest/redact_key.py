"""The redaction hash key: from the config, a file, or an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

from ingest.errors import ConfigError
from ingest.settings import RedactSettings


def resolve_hash_key(config: RedactSettings) -> bytes | None:
    """The HMAC key from ``hash_key``, ``hash_key_file`` or the ``hash_key_env`` variable; None if unset."""
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
    if config.hash_key_env and (value := os.environ.get(config.hash_key_env)):
        return value.encode()
    return None
