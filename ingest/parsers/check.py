"""The gateway format, checked at load: refused with its dotted key, or warned about with the fix.

Compiling tells a broken format. What compiles can still never yield an
event: a format without a date to place a record in time, or a format copied
from a page that shows it as a Go or JSON string (``\\"`` and a literal
``\\n``), which then matches no line. Or it yields events that can never be
joined: a format without the request id. All are cheaper to say once at load
than as every line's dead letter or every request's false alert.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterator, Mapping
from typing import Any

from ingest.errors import FormatError
from ingest.parsers import build_gateway_parser
from ingest.parsers.envoy_format import ENVOY_DEFAULT_FORMAT, Command, tokenize
from ingest.parsers.envoy_operators import HEADER_OPERATORS, OPERATORS, resolve
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
    if not _fills(format, json_format, "request_id"):  # what the join and gateway_bypass read
        warnings.append(
            f"{_key(format, json_format, ())} has no %REQ(X-REQUEST-ID)%: no gateway line can be joined with the "
            "app's by request id, so every request the app logs will be a gateway_bypass alert; add "
            "%REQ(X-REQUEST-ID)% to the format"
        )
    if not _fills(format, json_format, "status"):  # what both burst rules count
        warnings.append(
            f"{_key(format, json_format, ())} has no %RESPONSE_CODE%: no gateway line has a status, so "
            "http_4xx_burst and http_5xx_burst never fire; add %RESPONSE_CODE% to the format"
        )
    warnings += _near_misses(format, json_format)
    for path, text in _strings(format, json_format):
        if '\\"' in text or "\\n" in text:
            warnings.append(
                f"{_key(format, json_format, path)} contains \\\" or a literal \\n, as a Go or JSON string shows "
                'it (Istio\'s docs do): paste it with " for \\" and without the \\n, or no line will match'
            )
    return warnings


def _fills(format: str | None, json_format: Mapping[str, Any] | None, field: str) -> bool:  # noqa: A002
    """Some operator of the format fills ``field``."""
    return any(resolve(command).field == field for _, command in _commands(format, json_format))


# Envoy's other command operators (kept as labels): a name close to one gatewatch reads is no typo.
_ENVOY_OPERATORS = frozenset("""
    START_TIME_LOCAL REQUEST_HEADERS_BYTES BYTES_RETRANSMITTED PACKETS_RETRANSMITTED UPSTREAM_PROTOCOL
    CONNECTION_TERMINATION_DETAILS RESPONSE_HEADERS_BYTES RESPONSE_TRAILERS_BYTES UPSTREAM_WIRE_BYTES_SENT
    UPSTREAM_WIRE_BYTES_RECEIVED UPSTREAM_HEADER_BYTES_SENT UPSTREAM_HEADER_BYTES_RECEIVED
    DOWNSTREAM_WIRE_BYTES_SENT DOWNSTREAM_WIRE_BYTES_RECEIVED DOWNSTREAM_HEADER_BYTES_SENT
    DOWNSTREAM_HEADER_BYTES_RECEIVED REQUEST_DURATION REQUEST_TX_DURATION RESPONSE_DURATION RESPONSE_TX_DURATION
    DOWNSTREAM_HANDSHAKE_DURATION ROUNDTRIP_DURATION COMMON_DURATION UPSTREAM_HOST_NAME
    UPSTREAM_HOST_NAME_WITHOUT_PORT UPSTREAM_LOCAL_ADDRESS UPSTREAM_LOCAL_ADDRESS_WITHOUT_PORT UPSTREAM_LOCAL_PORT
    UPSTREAM_REMOTE_ADDRESS UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT UPSTREAM_REMOTE_PORT UPSTREAM_REQUEST_ATTEMPT_COUNT
    UPSTREAM_TLS_CIPHER UPSTREAM_TLS_VERSION UPSTREAM_TLS_SESSION_ID UPSTREAM_PEER_ISSUER UPSTREAM_PEER_CERT
    UPSTREAM_PEER_SUBJECT UPSTREAM_PEER_URI_SAN UPSTREAM_PEER_DNS_SAN UPSTREAM_PEER_IP_SAN UPSTREAM_LOCAL_URI_SAN
    UPSTREAM_LOCAL_DNS_SAN UPSTREAM_LOCAL_IP_SAN UPSTREAM_TRANSPORT_FAILURE_REASON UPSTREAM_CONNECTION_ID
    UPSTREAM_FILTER_STATE DOWNSTREAM_LOCAL_ADDRESS DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT DOWNSTREAM_LOCAL_PORT
    DOWNSTREAM_REMOTE_PORT DOWNSTREAM_DIRECT_REMOTE_PORT DOWNSTREAM_CONNECTION_ID DOWNSTREAM_LOCAL_URI_SAN
    DOWNSTREAM_LOCAL_DNS_SAN DOWNSTREAM_PEER_DNS_SAN DOWNSTREAM_LOCAL_IP_SAN DOWNSTREAM_PEER_IP_SAN
    DOWNSTREAM_LOCAL_SUBJECT DOWNSTREAM_PEER_SUBJECT DOWNSTREAM_PEER_ISSUER DOWNSTREAM_TLS_SESSION_ID
    DOWNSTREAM_TLS_CIPHER DOWNSTREAM_PEER_FINGERPRINT_256 DOWNSTREAM_PEER_FINGERPRINT_1 DOWNSTREAM_PEER_SERIAL
    DOWNSTREAM_PEER_CERT DOWNSTREAM_PEER_CERT_V_START DOWNSTREAM_PEER_CERT_V_END DOWNSTREAM_TRANSPORT_FAILURE_REASON
    HOSTNAME LOCAL_REPLY_BODY FILTER_CHAIN_NAME VIRTUAL_CLUSTER_NAME REQUESTED_SERVER_NAME FILTER_STATE CONNECTION_ID
    STREAM_ID GRPC_STATUS GRPC_STATUS_NUMBER CLUSTER_METADATA UPSTREAM_METADATA METADATA CEL ENVIRONMENT TRACE_ID
    UNIQUE_ID ACCESS_LOG_TYPE CUSTOM_FLAGS QUERY_PARAM
""".split())
_READ_OPERATORS = (*OPERATORS, *HEADER_OPERATORS, "PATH", "REQ_WITHOUT_QUERY", "DYNAMIC_METADATA")


def _near_misses(format: str | None, json_format: Mapping[str, Any] | None) -> list[str]:  # noqa: A002
    """An operator gatewatch does not know, spelt like one it reads: a typo that silently empties a field."""
    warnings = []
    for path, command in _commands(format, json_format):
        name = command.name
        if name in _READ_OPERATORS or name in _ENVOY_OPERATORS or name == "START_TIME":
            continue
        close = difflib.get_close_matches(name, _READ_OPERATORS, n=1, cutoff=0.85)
        if close:
            warnings.append(
                f"{_key(format, json_format, path)}: %{name}% is no operator gatewatch knows (did you mean "
                f"%{close[0]}%?): its value is kept only as a label"
            )
    return warnings


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
