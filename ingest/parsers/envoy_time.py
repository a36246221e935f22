"""Reading ``%START_TIME(<strftime>)%`` values back into epoch seconds.

Envoy formats START_TIME with ``std::put_time`` in UTC plus its own
specifiers: ``%s`` (epoch seconds) and ``%f`` / ``%1f`` .. ``%9f`` (fraction
digits, ``%f`` meaning 9), and absl's ``%E<n>S`` / ``%E*S`` (seconds with a
fraction) and ``%Ez`` (``+hh:mm``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from ingest.errors import FormatError
from ingest.normalize import InvalidValueError, shown

DEFAULT_START_TIME = r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:Z|[+-]\d{2}:?\d{2})?"
"""Envoy's default START_TIME (``2016-12-21T20:37:38.123Z``) and ISO 8601 look-alikes."""

_MONTHS = {name: number for number, name in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
)}
_MONTH_NAMES = {
    "January": 1, "February": 2, "March": 3, "April": 4, "May": 5, "June": 6, "July": 7,
    "August": 8, "September": 9, "October": 10, "November": 11, "December": 12,
}

# Specifier -> (group name or None when the value is not needed, regex).
_SPECIFIERS: dict[str, tuple[str | None, str]] = {
    "Y": ("year", r"\d{4}"),
    "y": ("year2", r"\d{2}"),
    "m": ("month", r"\d{2}"),
    "d": ("day", r"\d{2}"),
    "e": ("day", r" ?\d{1,2}"),
    "j": ("yday", r"\d{3}"),
    "H": ("hour", r"\d{2}"),
    "M": ("minute", r"\d{2}"),
    "S": ("second", r"\d{2}"),
    "b": ("mon", r"[A-Z][a-z]{2}"),
    "h": ("mon", r"[A-Z][a-z]{2}"),
    "B": ("monthname", r"[A-Z][a-z]+"),
    "a": (None, r"[A-Z][a-z]{2}"),
    "A": (None, r"[A-Z][a-z]+"),
    "z": ("offset", r"Z|[+-]\d{2}:?\d{2}"),
    "Ez": ("offset", r"Z|[+-]\d{2}:\d{2}"),
    "Z": (None, r"[A-Za-z]+"),
    "s": ("epoch", r"-?\d+"),
    "f": ("fraction", r"\d{9}"),
    "E*S": ("secfrac", r"\d{2}(?:\.\d+)?"),
    "t": (None, r"\t"),
    "n": (None, r"\n"),
    "%": (None, "%"),
}
_COMPOSITES = {"T": "%H:%M:%S", "F": "%Y-%m-%d", "D": "%m/%d/%y", "R": "%H:%M"}
_SPECIFIER = re.compile(r"%(E\*S|E[1-9]S|Ez|[1-9]f|.)", re.DOTALL)


def compile_start_time(strftime: str) -> tuple[str, Callable[[str], float] | None]:
    """The regex fragment matching ``%START_TIME(strftime)%`` values, and their reader.

    The fragment has no capturing group, so it can sit in a larger pattern;
    the reader turns one matched value into epoch seconds (UTC unless the
    format carries an offset) and raises ``InvalidValueError`` for an
    impossible date. The reader is ``None`` when the format names no date
    (neither ``%s`` nor a year, month and day: ``%H:%M:%S``, ``%f``): such a
    value cannot place a record in time. Raises ``ValueError`` for a
    specifier this module cannot read.
    """
    for short, expanded in _COMPOSITES.items():
        strftime = strftime.replace(f"%{short}", expanded)
    outer: list[str] = []
    inner: list[str] = []
    seen: set[str] = set()
    index = 0
    for match in _SPECIFIER.finditer(strftime):
        outer.append(re.escape(strftime[index:match.start()]))
        inner.append(re.escape(strftime[index:match.start()]))
        index = match.end()
        spec = match.group(1)
        group, pattern = _spec(spec, strftime)
        outer.append(f"(?:{pattern})")
        if group is None or group in seen:
            inner.append(f"(?:{pattern})")
        else:
            seen.add(group)
            inner.append(f"(?P<{group}>{pattern})")
    outer.append(re.escape(strftime[index:]))
    inner.append(re.escape(strftime[index:]))
    has_month = bool(seen & {"month", "mon", "monthname"})
    has_year = bool(seen & {"year", "year2"})
    has_day = "day" in seen or "yday" in seen
    if "epoch" not in seen and not (has_year and ((has_month and has_day) or "yday" in seen)):
        return "".join(outer), None
    reader = re.compile("".join(inner)).fullmatch

    def read(value: object) -> float:
        found = reader(value if isinstance(value, str) else str(value))
        if found is None:
            raise InvalidValueError(f"START_TIME {shown(value)} does not match ({strftime})")
        return _epoch(found.groupdict())

    return "".join(outer), read


def start_time_has_date(strftime: str) -> bool:
    """Whether ``%START_TIME(strftime)%`` values name a moment (``%s``, or a year, month and day)."""
    return compile_start_time(strftime)[1] is not None


def _spec(spec: str, strftime: str) -> tuple[str | None, str]:
    if spec in _SPECIFIERS:
        return _SPECIFIERS[spec]
    if spec[0].isdigit():  # %3f: that many fraction digits
        return "fraction", rf"\d{{{spec[0]}}}"
    if spec.startswith("E") and spec.endswith("S"):  # %E3S: seconds with that many fraction digits
        return "secfrac", rf"\d{{2}}\.\d{{{spec[1]}}}"
    raise FormatError(f"START_TIME({strftime}): unsupported specifier %{spec}")


def _epoch(parts: dict[str, str | None]) -> float:
    fraction = parts.get("fraction")
    secfrac = parts.get("secfrac")
    if secfrac is not None:
        second, _, fraction = secfrac.partition(".")
        parts["second"] = second
    if parts.get("epoch") is not None:
        seconds = int(parts["epoch"] or 0)
    else:
        seconds = _date_seconds(parts)
    if not fraction:
        return float(seconds)
    # Through text, so that 1527590590 and "528" give exactly 1527590590.528.
    return float(f"{seconds}.{fraction}") if seconds >= 0 else seconds + int(fraction) / 10 ** len(fraction)


def _date_seconds(parts: dict[str, str | None]) -> int:
    if parts.get("year"):
        year = int(parts["year"] or 0)
    else:  # POSIX %y: 69-99 are 1969-1999, 00-68 are 2000-2068
        year2 = int(parts["year2"] or 0)
        year = year2 + (1900 if year2 >= 69 else 2000)
    try:
        if parts.get("yday"):
            moment = datetime(year, 1, 1, tzinfo=timezone.utc) + timedelta(days=int(parts["yday"] or 1) - 1)
        else:
            moment = datetime(year, _month(parts), int(parts["day"] or 0), tzinfo=timezone.utc)
        moment = moment.replace(
            hour=int(parts.get("hour") or 0),
            minute=int(parts.get("minute") or 0),
            second=int(parts.get("second") or 0),
        )
    except ValueError as error:
        raise InvalidValueError(f"START_TIME: {error}") from None
    return int(moment.timestamp()) - _offset_seconds(parts.get("offset"))


def _month(parts: dict[str, str | None]) -> int:
    if parts.get("month"):
        return int(parts["month"] or 0)
    name = parts.get("mon") or parts.get("monthname") or ""
    month = _MONTHS.get(name) or _MONTH_NAMES.get(name)
    if month is None:
        raise InvalidValueError(f"START_TIME: unknown month {name!r}")
    return month


def _offset_seconds(offset: str | None) -> int:
    if not offset or offset == "Z":
        return 0
    digits = offset[1:].replace(":", "")
    seconds = int(digits[:2]) * 3600 + int(digits[2:]) * 60
    return -seconds if offset[0] == "-" else seconds
