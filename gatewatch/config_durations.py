"""Every ``*_secs`` setting of a loaded config held between 0 and a year, detector sections included."""

from __future__ import annotations

import math

from pydantic import BaseModel

from gatewatch.errors import ConfigError

__all__ = ["MAX_DURATION_SECS", "check_durations"]

MAX_DURATION_SECS = 366 * 86_400.0
"""Longest ``*_secs`` setting accepted: every window, timeout and lateness is shorter than a year.
No ``*_secs`` may be negative either (detector sections included); most must be above 0."""


def check_durations(model: BaseModel, path: str = "") -> None:
    """Every ``*_secs`` value from 0 to :data:`MAX_DURATION_SECS`: those of each section, of each forwarder in
    ``forward`` and of a mapping such as ``alerts.resolve_after_secs`` (per rule) alike.

    Checked over the loaded model rather than declared on each field, so a detector's ``Config`` (in
    ``detectors/``) is held to it too. A value left past the limit fails far from the config: a resolve time of
    1e12 s ended a replay with "year 33714 is out of range", a forwarder's drain time in an OverflowError.
    """
    for name in type(model).model_fields:
        _check_value(getattr(model, name), f"{path}{name}", name.endswith("_secs"))


def _check_value(value: object, key: str, is_duration: bool) -> None:
    """``value`` at ``key``; ``is_duration``: it is, or is held in, a ``*_secs`` setting."""
    if isinstance(value, BaseModel):
        check_durations(value, f"{key}.")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_value(item, f"{key}.{index}", is_duration)
    elif isinstance(value, dict):
        for name, item in value.items():
            _check_value(item, f"{key}.{name}", is_duration)
    elif is_duration and isinstance(value, (int, float)) and not isinstance(value, bool):
        if not (math.isfinite(value) and 0 <= value <= MAX_DURATION_SECS):
            raise ConfigError(
                f"invalid config: {key}: must be a duration from 0 to {MAX_DURATION_SECS:.0f} s (got {value!r})"
            )
