"""gatewatch's exceptions: the tree drawn in :mod:`ingest.errors`, re-exported here.

The classes live in the leaf module :mod:`ingest.errors` so that ``ingest`` and
``detectors`` can raise them without importing ``gatewatch`` (see
tests/test_layering.py); callers outside those packages import them from here.
"""

from __future__ import annotations

from ingest.errors import (
    CheckpointError,
    ConfigError,
    DeliveryError,
    FencedError,
    FormatError,
    GatewatchError,
    RuleRegistrationError,
    SourceAuthError,
    SourceError,
    StoppedError,
    StoreAuthError,
    StoreError,
    StoreUnavailableError,
    WireError,
)

__all__ = [
    "CheckpointError",
    "ConfigError",
    "DeliveryError",
    "FencedError",
    "FormatError",
    "GatewatchError",
    "RuleRegistrationError",
    "SourceAuthError",
    "SourceError",
    "StoppedError",
    "StoreAuthError",
    "StoreError",
    "StoreUnavailableError",
    "WireError",
]
