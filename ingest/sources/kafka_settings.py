"""What every kafka-python client gatewatch builds connects with: one place, so none is left out.

Consumers, producers, the admin client, the checkpoint store, the alerts and
forward producers, HTTP ingest and ``serve --follow`` all start from
:func:`client_settings`: ``kafka.bootstrap_servers``, ``kafka.security`` as is,
and the SASL user and password read from ``kafka.sasl_username`` /
``kafka.sasl_password`` or their ``_env`` / ``_file`` variants (read like
``store.username`` / ``store.password``). The password is never logged: these
settings are only handed to clients, never formatted.
"""

from __future__ import annotations

from typing import Any

from ingest.sinks.search_auth import read_secret

__all__ = ["client_settings"]


def client_settings(kafka: Any, servers: list[str] | None = None) -> dict[str, Any]:
    """kafka-python connection settings from the ``kafka`` config section (``servers`` replaces its bootstrap list).

    Raises :class:`~gatewatch.errors.ConfigError` naming the key when a
    credential variable is unset or its file unreadable.
    """
    settings: dict[str, Any] = {
        "bootstrap_servers": list(servers or kafka.bootstrap_servers),
        **dict(kafka.security),
    }
    username = read_secret(kafka, "sasl_username", "kafka")
    if username is not None:
        settings["sasl_plain_username"] = username
        settings["sasl_plain_password"] = read_secret(kafka, "sasl_password", "kafka")
    return settings
