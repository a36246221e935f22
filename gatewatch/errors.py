"""gatewatch's exceptions. One root, so a caller can catch everything of ours::

    GatewatchError
    ├── ConfigError            the config file is missing, unreadable or invalid
    ├── SourceError            an input cannot be opened or read (file, Kafka)
    ├── FencedError            another process joined Kafka's group with this one's --instance-id
    ├── WireError              bytes read from an internal topic or a checkpoint do not decode
    ├── StoreError             a store refused or failed a write
    │   ├── StoreUnavailableError   the store cannot be reached: pause and retry
    │   └── StoreAuthError          the store refuses gatewatch's credentials (401/403): stop
    └── DeliveryError          a forwarder could not hand an alert event to its receiver

Bad *records* are not exceptions: parsers return dead letters instead.
"""


class GatewatchError(Exception):
    """Root of every gatewatch error."""


class ConfigError(GatewatchError):
    """The configuration is invalid; the message names the dotted key and the bad value."""


class SourceError(GatewatchError):
    """An input could not be opened or read."""


class FencedError(GatewatchError):
    """Kafka fenced this static group member: another process uses the same instance id."""

    def __init__(self, instance_id: str) -> None:
        super().__init__(
            f"another process joined the consumer group as static member {instance_id!r}: "
            "give every serve process its own --instance-id (GATEWATCH_INSTANCE_ID, kafka.instance_id)"
        )


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


class DeliveryError(GatewatchError):
    """A forwarder's attempt failed. ``retryable``: try again (after at least ``retry_after_secs`` if set)."""

    def __init__(self, message: str, retryable: bool = True, retry_after_secs: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.retry_after_secs = retry_after_secs


class StoreAuthError(StoreError):
    """The store answered 401 or 403: the credentials are wrong or lack a privilege; retrying cannot help."""
