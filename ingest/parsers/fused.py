"""Fused JSON reading: find, check and type a line's fields in one straight pass.

A JSON parser's general path finds values into a dict (a loop over the
compiled key table), then :func:`ingest.normalize.normalize` walks that dict
again to type each value. Both loops are per-field Python work, the bulk of a
record's cost. For a mapping whose every leaf fills a known Event field, this
module writes one function, once, that reads each key and types its value in
place (as ``dataclasses`` writes ``__init__``): no table, no second dict, no
second walk.

It only ever takes the common road. Whenever a line is not plain (no
timestamp, a value that does not type, an object where a scalar belongs, a
runtime timestamp to carry), the function returns ``None`` and the parser runs
its general path, so every dead letter keeps its exact reason and detail.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from ingest.normalize import (
    _COERCE,
    MAX_TS,
    MIN_TS,
    _TEXT_FIELDS,
    SHARED_TEXT_FIELDS,
    InvalidValueError,
    _to_str,
    make_event,
    parse_timestamp,
)
from ingest.records import Event, Origin

Fused = Callable[[dict[str, Any], Origin], Event | None]
"""``(decoded object, origin) -> event``, or ``None``: take the general path for this line."""


@dataclass(frozen=True, slots=True)
class Leaf:
    """One key of the line: where it sits, the Event field it fills, how its value is read.

    ``convert`` turns the value into the field's value before it is typed;
    ``scalar_only`` leaves a line whose value is an object, a list or a bool to
    the general path (which keeps such a value as a label).
    """

    path: tuple[str, ...]
    field: str
    convert: Callable[[Any], Any] | None = None
    scalar_only: bool = False


def fuse(leaves: Sequence[Leaf], dash_is_absent: bool, name: str = "json") -> Fused | None:
    """The fused reader of ``leaves`` (in the general path's order: a later leaf wins), or
    ``None`` when a leaf fills no Event field (a label), which only the general path keeps.

    ``dash_is_absent``: ``"-"`` means "not set" (Envoy), besides ``null`` and ``""``; ``name``
    tells profiles and tracebacks which reader ran.
    """
    names: dict[str, Any] = {"parse_timestamp": parse_timestamp, "_to_str": _to_str, "make_event": make_event,
                             "InvalidValueError": InvalidValueError, "intern": sys.intern,
                             "MIN_TS": MIN_TS, "MAX_TS": MAX_TS}  # fmt: skip
    absent = "x is None or x == '-' or x == ''" if dash_is_absent else "x is None or x == ''"
    lines = ["def fused(obj, origin):", "    v = {}", "    t = None", "    try:"]
    groups: dict[tuple[str, ...], list[tuple[int, Leaf]]] = {}
    for index, leaf in enumerate(leaves):
        if leaf.field != "ts" and leaf.field not in _TEXT_FIELDS and leaf.field not in _COERCE:
            return None
        groups.setdefault(leaf.path[:-1], []).append((index, leaf))
    for parent, members in groups.items():
        indent = "        "
        lines.append(f"{indent}h = obj")
        for part in parent:
            lines.append(f"{indent}h = h.get({part!r}) if type(h) is dict else None")
        if parent:
            lines.append(f"{indent}if type(h) is dict:")
            indent += "    "
        for index, leaf in members:
            lines += _leaf_lines(index, leaf, absent, indent, names)
    lines += [
        "    except InvalidValueError:",
        "        return None",
        "    if t is None:",
        "        return None",
        "    try:",
        "        ts = parse_timestamp(t)",
        "    except InvalidValueError:",
        "        return None",
        "    if not MIN_TS <= ts < MAX_TS:",  # out of range: normalize dead-letters it with the reason
        "        return None",
        "    return make_event(v, ts, origin)",
    ]
    scope: dict[str, Any] = {}
    exec(compile("\n".join(lines), f"<fused reader: {name}>", "exec"), names, scope)  # noqa: S102 (our own text)
    fused: Fused = scope["fused"]
    fused.source = "\n".join(lines)  # type: ignore[attr-defined]  # for a reader of tracebacks
    return fused


def _leaf_lines(index: int, leaf: Leaf, absent: str, indent: str, names: dict[str, Any]) -> list[str]:
    lines = [f"{indent}x = h.get({leaf.path[-1]!r})", f"{indent}if not ({absent}):"]
    inner = indent + "    "
    if leaf.scalar_only:
        lines.append(f"{inner}if type(x) is dict or type(x) is list or type(x) is bool:")
        lines.append(f"{inner}    return None")
    if leaf.convert is not None:
        names[f"convert_{index}"] = leaf.convert
        lines.append(f"{inner}x = convert_{index}(x)")
    field = leaf.field
    if field == "ts":
        lines.append(f"{inner}t = x")
        return lines
    lines.append(f"{inner}if x is not None:")
    if field in SHARED_TEXT_FIELDS:
        lines.append(f"{inner}    v[{field!r}] = intern(x) if type(x) is str else _to_str(x)")
    elif field in _TEXT_FIELDS:
        lines.append(f"{inner}    v[{field!r}] = x if type(x) is str else _to_str(x)")
    else:
        names[f"coerce_{field}"] = _COERCE[field]
        lines.append(f"{inner}    v[{field!r}] = coerce_{field}(x)")
    return lines
