"""Forwarders: alert lifecycle events to SIEMs and SOAR tools (syslog, CEF, webhook, Kafka).

They live under ``gatewatch/`` rather than ``detectors/`` (pure logic, no
clients) or ``ingest/sinks/`` (stores written in step with Kafka offsets): a
forwarder delivers on its own thread, at its own pace, and detection never
waits for it. One module per protocol; :mod:`gatewatch.forward.base` holds the
:class:`~gatewatch.forward.base.Forwarder` protocol and the shared queue,
retry and dead-letter machinery.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING

from gatewatch.errors import ConfigError
from gatewatch.forward.base import Forwarder, ForwarderRunner, ForwarderSet, OutcomeHook

if TYPE_CHECKING:  # gatewatch.config imports gatewatch.forward.config, so not at run time
    from gatewatch.config import GatewatchConfig
    from ingest.alerts import AlertEvent
    from gatewatch.forward.config import ForwarderConfig

__all__ = ["Forwarder", "ForwarderRunner", "ForwarderSet", "build_forwarders"]


def build_forwarders(
    config: GatewatchConfig, on_outcome: OutcomeHook | None = None, threaded: bool = True, sending: bool = True
) -> ForwarderSet | None:
    """A runner per entry of the config's ``forward`` list (None when there is none); ``threaded``: see
    :class:`ForwarderRunner`. Not ``sending`` (``resend --dry-run``): runners that only filter and count,
    opening no connection and reading no secret."""
    if not config.forward:
        return None
    runners: list[ForwarderRunner] = []
    try:
        for settings in config.forward:
            forwarder = _forwarder(settings, config) if sending else _NotSending()
            runners.append(ForwarderRunner(settings, forwarder, on_outcome, threaded))
    except BaseException:
        ForwarderSet(runners).close()
        raise
    return ForwarderSet(runners)


def _forwarder(settings: ForwarderConfig, config: GatewatchConfig) -> Forwarder:
    try:
        if settings.type == "syslog":
            from gatewatch.forward.syslog import SyslogForwarder

            return SyslogForwarder(settings)
        if settings.type == "webhook":
            from gatewatch.forward.webhook import WebhookForwarder

            return WebhookForwarder(settings)
        from gatewatch.forward.kafka import KafkaForwarder

        return KafkaForwarder(settings, config.kafka)
    except (OSError, ssl.SSLError) as error:
        raise ConfigError(f"forward.{settings.name}.tls: cannot load the certificates: {error}") from None


class _NotSending:
    """A forwarder for runners that must never send."""

    def send(self, event: AlertEvent) -> None:
        raise AssertionError(f"a dry run sent alert event {event.id}")

    def close(self) -> None:
        pass
