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

import logging
import threading
from types import SimpleNamespace
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import AuthorizationError, KafkaError, SaslAuthenticationFailedError

from ingest.errors import SourceAuthError, SourceError
from ingest.settings import KafkaSettings
from ingest.sinks.search_auth import read_secret
from ingest.sources.kafka_client import BOUNDED_BACKOFF

__all__ = ["check_login", "client_settings", "denied_topics", "refusal", "unreachable"]

LOGIN_TIMEOUT_SECS = 30.0


def client_settings(kafka: KafkaSettings, servers: list[str] | None = None) -> dict[str, Any]:
    """kafka-python connection settings from the ``kafka`` config section (``servers`` replaces its bootstrap list).

    Raises :class:`~ingest.errors.ConfigError` naming the key when a
    credential variable is unset or its file unreadable.
    """
    settings: dict[str, Any] = {
        "bootstrap_servers": list(servers or kafka.bootstrap_servers),
        **BOUNDED_BACKOFF,  # back within ~1 s of a restarted broker, not up to 36 s (see kafka_client)
        **dict(kafka.security),
    }
    env, file = settings.pop("ssl_password_env", None), settings.pop("ssl_password_file", None)
    if env is not None or file is not None:  # kafka-python takes the password itself
        where = SimpleNamespace(ssl_password=None, ssl_password_env=env, ssl_password_file=file)
        settings["ssl_password"] = read_secret(where, "ssl_password", "kafka.security")
    username = read_secret(kafka, "sasl_username", "kafka")
    if username is not None:
        settings["sasl_plain_username"] = username
        settings["sasl_plain_password"] = read_secret(kafka, "sasl_password", "kafka")
    return settings


def refusal(error: BaseException, kafka: KafkaSettings, what: str) -> SourceAuthError | None:
    """The one-line :class:`SourceAuthError` when ``error`` is Kafka refusing gatewatch, else None.

    A refused SASL login or an ACL that denies a topic, the group or the
    cluster does not heal by retrying: the caller raises this instead of the
    :class:`~ingest.errors.SourceError` it would retry.
    """
    if isinstance(error, SaslAuthenticationFailedError):
        return _refused(kafka, "refused the SASL login", what)
    if isinstance(error, AuthorizationError):
        return _refused(kafka, f"denied it ({type(error).__name__.removesuffix('Error')}: {error})", what)
    return None


def unreachable(kafka: KafkaSettings, error: BaseException) -> SourceError:
    """The one line for brokers gatewatch could not talk to: a wrong address, or a protocol their listener
    does not speak (SASL or TLS against a plain listener only shows as a failed bootstrap)."""
    protocol = dict(kafka.security).get("security_protocol", "PLAINTEXT")
    return SourceError(
        f"cannot connect to Kafka at {','.join(kafka.bootstrap_servers)}: {error} (check the address, and that "
        f"the listener there speaks kafka.security.security_protocol {protocol})"
    )


def denied_topics(kafka: KafkaSettings, topics: set[str], what: str) -> SourceAuthError:
    """The one-line :class:`SourceAuthError` for topics the ACLs deny (see ``kafka_client.unauthorized_topics``)."""
    return _refused(kafka, f"denied it (TopicAuthorizationFailed: {', '.join(sorted(topics))})", what)


def _refused(kafka: KafkaSettings, cause: str, what: str) -> SourceAuthError:
    user = read_secret(kafka, "sasl_username", "kafka")
    return SourceAuthError(
        f"Kafka at {','.join(kafka.bootstrap_servers)} {cause} while {what} as kafka.sasl_username {user!r}: "
        f"check the user, its password and the ACLs that grant it the topics and the group {kafka.group_id!r}"
    )


class _LoginWatch(logging.Handler):
    """Sees the SASL failure kafka-python logs: it only logs it, then retries the bootstrap until a timeout."""

    def __init__(self, refused: threading.Event, answered: threading.Event) -> None:
        super().__init__(logging.WARNING)
        self.refused, self.answered = refused, answered

    def emit(self, record: logging.LogRecord) -> None:
        if isinstance(record.args, tuple) and any(isinstance(a, SaslAuthenticationFailedError) for a in record.args):
            self.refused.set()
            self.answered.set()


def check_login(kafka: KafkaSettings, timeout_secs: float = LOGIN_TIMEOUT_SECS) -> None:
    """Stop at once when the broker refuses the SASL login, instead of retrying until some timeout.

    Does nothing without SASL. Raises :class:`SourceAuthError` (one line, no
    secret) when the broker refuses the credentials; any other failure is left
    to the clients built next, which report it as before.
    """
    settings = client_settings(kafka)
    if "sasl_mechanism" not in settings and "sasl_plain_username" not in settings:
        return
    refused, answered = threading.Event(), threading.Event()
    watch = _LoginWatch(refused, answered)

    def probe() -> None:
        try:
            KafkaAdminClient(client_id=f"gatewatch-{kafka.group_id}-login", bootstrap_timeout_ms=int(timeout_secs * 1000),
                             **settings).close()  # fmt: skip
        except SaslAuthenticationFailedError:
            refused.set()
        except KafkaError:
            pass
        finally:
            answered.set()

    kafka_log = logging.getLogger("kafka")
    kafka_log.addHandler(watch)
    try:
        # A daemon thread: on a refused login the process stops while the client still waits for its timeout.
        threading.Thread(target=probe, name="gatewatch-kafka-login", daemon=True).start()
        answered.wait(timeout_secs + 5)
    finally:
        kafka_log.removeHandler(watch)
    if refused.is_set():
        raise SourceAuthError(
            f"Kafka at {','.join(settings['bootstrap_servers'])} refused the SASL login "
            f"({settings.get('sasl_mechanism', 'PLAIN')}) of kafka.sasl_username {settings.get('sasl_plain_username')!r}: "
            "check the user, its password and its SCRAM credentials on the broker"
        )
