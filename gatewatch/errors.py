"""gatewatch's exceptions. One root, so a caller can catch everything of ours::

    GatewatchError
    ├── ConfigError            the config file is missing, unreadable or invalid
    ├── SourceError            an input cannot be opened or read (file, Kafka)
    └── StoreError             a store refused or failed a write
        └── StoreUnavailableError   the store cannot be reached: pause and retry

Bad *records* are not exceptions: parsers return dead letters instead.
"""


class GatewatchError(Exception):
    """Root of every gatewatch error."""


class ConfigError(GatewatchError):
    """The configuration is invalid; the message names the dotted key and the bad value."""


class SourceError(GatewatchError):
    """An input could not be opened or read."""


class StoreError(GatewatchError):
    """A store rejected or failed a write."""


class StoreUnavailableError(StoreError):
    """The store does not answer; the caller should pause and retry later.

    ``retry_after_secs`` is how long to wait before the next attempt.
    """

    def __init__(self, message: str, retry_after_secs: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after_secs = retry_after_secs
