"""gatewatch's exceptions. One root, so a caller can catch everything of ours::

    GatewatchError
    ├── ConfigError                the config file is missing, unreadable or invalid: exit 2
    │   └── FormatError            a log format (gateway.format, json_format, app.fields) cannot be compiled
    ├── RuleRegistrationError      a detector module is misnamed, or two claim one rule_id
    ├── SourceError                an input cannot be opened or read (file, Kafka): retried by serve
    │   └── CheckpointError        a checkpoint cannot be saved or read back
    ├── SourceAuthError            Kafka refuses gatewatch's credentials or ACLs (SASL, topic, group): stop
    ├── FencedError                another process joined Kafka's group with this one's --instance-id
    ├── WireError                  bytes read from an internal topic or a checkpoint do not decode
    ├── StoreError                 a store refused or failed a write
    │   ├── StoreUnavailableError  the store cannot be reached: pause and retry
    │   ├── StoreAuthError         the store refuses gatewatch's credentials (401/403): stop
    │   ├── StoreUnreachableError  a search client got no answer (ingest.sinks.search_clients; the sink
    │   │                          turns it into StoreUnavailableError)
    │   └── StoreRefusedError      a search client got an error status (ingest.sinks.search_clients; the
    │                              sink sorts it by status into the three above)
    ├── DeliveryError              a forwarder could not hand an alert event to its receiver
    └── StoppedError               a stage was told to stop while it waited (a second signal, shutdown)

This module is a leaf: it imports nothing of gatewatch's, so every package
(``ingest``, ``detectors``, ``gatewatch``) may raise and catch these; its
public face is :mod:`gatewatch.errors`, which re-exports it.

Outside the tree on purpose:

- bad *records* are not exceptions: parsers return dead letters instead
  (``ingest.normalize.InvalidValueError`` and the parsers' private signals
  never leave the parser that raises them);
- pydantic validators raise ``ValueError``, which is pydantic's contract: the
  config loader turns their message into a :class:`ConfigError`;
- programmer errors (``TypeError`` for a wrong argument, ``AssertionError``).
"""

from __future__ import annotations

class GatewatchError(Exception):
    """Root of every gatewatch error."""


class ConfigError(GatewatchError):
    """The configuration is invalid; the message names the dotted key and the bad value."""


class FormatError(ConfigError, ValueError):
    """A log format cannot be compiled: an unknown or malformed command operator, a bad field mapping.

    Also a ``ValueError``, so a pydantic validator that compiles a format
    reports it as the value's error.
    """


class RuleRegistrationError(GatewatchError):
    """A detector is misnamed, or two claim the same ``rule_id``."""


class SourceError(GatewatchError):
    """An input could not be opened or read."""


class SourceAuthError(GatewatchError):
    """Kafka refuses gatewatch: SASL authentication failed, or an ACL denies a topic or the group.

    Retrying cannot help, so it is not a :class:`SourceError` (which serve's
    stages retry): it unwinds to the command, which prints its one line and
    exits 2.
    """


class CheckpointError(SourceError):
    """A checkpoint could not be saved or read back (the previous whole checkpoint is kept).

    A ``SourceError`` too: the checkpoint topic is an input of the stage that
    restores from it.
    """


class FencedError(GatewatchError):
    """Kafka fenced this static group member: another process uses the same instance id."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"another process joined the consumer group as static member {instance_id!r}: "
            "give every serve process its own --instance-id (GATEWATCH_INSTANCE_ID, kafka.instance_id)"
        )
        self.instance_id = instance_id


class WireError(GatewatchError):
    """Bytes from an internal topic or a checkpoint do not decode (see :mod:`ingest.codec`).

    ``reason`` is low-cardinality (``undecodable``, ``unknown_version``,
    ``unknown_kind``; ``invalid_value`` when an event cannot be encoded): it
    becomes the dead letter's reason and a metric label.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class StoreError(GatewatchError):
    """A store rejected or failed a write."""


class StoreUnavailableError(StoreError):
    """The store does not answer; the caller should pause and retry later.

    ``retry_after_secs`` is how long to wait before the next attempt.
    """

    def __init__(self, message: str, retry_after_secs: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_secs = retry_after_secs


class StoreAuthError(StoreError):
    """The store answered 401 or 403: the credentials are wrong or lack a privilege; retrying cannot help."""


class DeliveryError(GatewatchError):
    """A forwarder's attempt failed. ``retryable``: try again (after at least ``retry_after_secs`` if set)."""

    def __init__(self, message: str, retryable: bool = True, retry_after_secs: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_secs = retry_after_secs


class StoppedError(GatewatchError):
    """A stage was asked to stop while it waited (for the store, for a delivery): unwind and exit cleanly."""
