"""The gateway format, checked at load: refused with its dotted key, or warned about with the fix.

Compiling tells a broken format. What compiles can still never yield an
event: a format without a date to place a record in time, or a format copied
from a page that shows it as a Go or JSON string (``\\"`` and a literal
``\\n``), which then matches no line. Or it yields events that can never be
joined: a format without the request id. All are cheaper to say once at load
than as every line's dead letter or every request's false alert.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from ingest.errors import FormatError
from ingest.parsers import build_gateway_parser
from ingest.parsers.envoy_format import ENVOY_DEFAULT_FORMAT, Command, tokenize
from ingest.parsers.envoy_operators import resolve
from ingest.parsers.envoy_time import start_time_has_date

__all__ = ["check_gateway_format", "format_time"]

_JSON_ERROR = re.compile(r"json_format (?P<key>[^:]*): (?:format: )?(?P<message>.*)", re.DOTALL)


def format_time(format: str | None, json_format: Mapping[str, Any] | None) -> tuple[str, str]:  # noqa: A002
    """``(state, key)``: ``dated``, ``undated`` (a START_TIME without a date) or ``absent``, and where."""
    state, where = "absent", _key(format, json_format, ())
    for path, command in _commands(format, json_format):
        if command.name == "START_TIME":
            if command.arg is None or start_time_has_date(command.arg):
                return "dated", _key(format, json_format, path)
            state, where = "undated", _key(format, json_format, path)
    return state, where


def check_gateway_format(
    format: str | None,  # noqa: A002 -- Envoy's option name
    json_format: Mapping[str, Any] | None,
    *,
    runtime_time: bool,
) -> list[str]:
    """Warnings for a format that compiles; raises ``ValueError`` (one line, dotted key) for one that cannot work.

    ``runtime_time``: lines arrive wrapped by a container runtime that dates
    them (``unwrap: docker`` or ``cri``), so the format needs no date.
    """
    try:
        build_gateway_parser(format, json_format)
    except ValueError as error:
        raise FormatError(_located(str(error))) from None
    warnings: list[str] = []
    state, key = format_time(format, json_format)
    if state == "undated" and not runtime_time:
        raise FormatError(
            f"{key}: its %START_TIME(...)% has no date (it needs %s, or a year, month and day), so no line can be "
            "placed in time; log a full START_TIME, or read container logs with gateway.unwrap (or "
            "kafka.unwrap.gateway) docker or cri to date each line by the runtime's timestamp"
        )
    if state == "absent" and not runtime_time:
        warnings.append(
            f"{key} has no %START_TIME%: every line will be a missing_timestamp dead letter; add "
            "%START_TIME% to the format, or read container logs with gateway.unwrap: docker or cri"
        )
    if not _logs_request_id(format, json_format):
        warnings.append(
            f"{_key(format, json_format, ())} has no %REQ(X-REQUEST-ID)%: no gateway line can be joined with the "
            "app's by request id, so every request the app logs will be a gateway_bypass alert; add "
            "%REQ(X-REQUEST-ID)% to the format"
        )
    for path, text in _strings(format, json_format):
        if '\\"' in text or "\\n" in text:
            warnings.append(
                f"{_key(format, json_format, path)} contains \\\" or a literal \\n, as a Go or JSON string shows "
                'it (Istio\'s docs do): paste it with " for \\" and without the \\n, or no line will match'
            )
    return warnings


def _logs_request_id(format: str | None, json_format: Mapping[str, Any] | None) -> bool:  # noqa: A002
    """Some operator of the format fills ``request_id``, the key the join and gateway_bypass read."""
    return any(resolve(command).field == "request_id" for _, command in _commands(format, json_format))


def _commands(
    format: str | None, json_format: Mapping[str, Any] | None  # noqa: A002
) -> Iterator[tuple[tuple[str, ...], Command]]:
    """Each operator of the format, with the path of its ``json_format`` key (``()`` for a text format)."""
    for path, text in _strings(format, json_format):
        try:
            tokens = tokenize(text)
        except ValueError:
            continue  # compiling reports it
        yield from ((path, token) for token in tokens if isinstance(token, Command))


def _located(message: str) -> str:
    found = _JSON_ERROR.match(message)
    if found is not None:
        return f"gateway.json_format.{found['key']}: {found['message']}"
    return "gateway." + message if message.startswith("format:") else f"gateway: {message}"


def _key(format: str | None, json_format: Mapping[str, Any] | None, path: tuple[str, ...]) -> str:  # noqa: A002
    if json_format is None:
        return "gateway.format"
    return ".".join(("gateway.json_format", *path))


def _strings(
    format: str | None, json_format: Mapping[str, Any] | None  # noqa: A002
) -> Iterator[tuple[tuple[str, ...], str]]:
    if json_format is None:
        yield (), ENVOY_DEFAULT_FORMAT if format is None else format
        return
    stack: list[tuple[tuple[str, ...], Any]] = [((), json_format)]
    while stack:
        path, value = stack.pop()
        if isinstance(value, Mapping):
            stack.extend(((*path, str(k)), v) for k, v in reversed(list(value.items())))
        elif isinstance(value, str):
            yield path, value
