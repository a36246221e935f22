"""Render gateway records as Envoy would write them: text formats and JSON formats.

A gateway record is a dict keyed by Envoy command operators exactly as they
appear in a format (``"START_TIME"``, ``"REQ(X-REQUEST-ID)"``,
``"DYNAMIC_METADATA(envoy.filters.http.jwt_authn:jwt_payload:jti)"``), ``None``
for a value Envoy did not have. Rendering is the inverse of the parsers, so it
is written independently of them (it must not share their bugs).

Text: every ``%OPERATOR%``, ``%OPERATOR(args)%`` or ``%OPERATOR(args):N%`` is
replaced by the record's value, ``-`` when unset; ``%%`` is a literal ``%``.
JSON: Envoy's ``json_format`` mapping; ``typed=True`` is the v3 behaviour
(numbers stay numbers, unset is ``null``), ``typed=False`` the legacy v2
``json_format`` (every value a string, unset ``-``). A mapping value that mixes
literal text and operators is always rendered as text, as Envoy does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any, cast

import orjson

from ingest.parsers.envoy_format import ENVOY_DEFAULT_FORMAT, Literal, tokenize

JWT = "envoy.filters.http.jwt_authn:jwt_payload"
JWT_JTI = f"DYNAMIC_METADATA({JWT}:jti)"
JWT_SUB = f"DYNAMIC_METADATA({JWT}:sub)"
JWT_ORG = f"DYNAMIC_METADATA({JWT}:org)"
JWT_EXP = f"DYNAMIC_METADATA({JWT}:exp)"
JWT_IAT = f"DYNAMIC_METADATA({JWT}:iat)"

GATEWAY_OPERATORS: tuple[str, ...] = (
    "START_TIME",
    "REQ(:METHOD)",
    "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)",
    "PROTOCOL",
    "RESPONSE_CODE",
    "RESPONSE_FLAGS",
    "RESPONSE_CODE_DETAILS",
    "BYTES_RECEIVED",
    "BYTES_SENT",
    "DURATION",
    "RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)",
    "REQ(X-FORWARDED-FOR)",
    "REQ(USER-AGENT)",
    "REQ(X-REQUEST-ID)",
    "REQ(:AUTHORITY)",
    "UPSTREAM_HOST",
    "UPSTREAM_CLUSTER",
    "ROUTE_NAME",
    "DOWNSTREAM_REMOTE_ADDRESS",
    "DOWNSTREAM_PEER_URI_SAN",
    "DOWNSTREAM_TLS_VERSION",
    JWT_JTI,
    JWT_SUB,
    JWT_ORG,
    JWT_EXP,
    JWT_IAT,
)
"""Every key of a generated gateway record, in this order."""

DEMO_TEXT_FORMAT = (
    "ACCESS " + ENVOY_DEFAULT_FORMAT[:-1] + " %ROUTE_NAME% %UPSTREAM_CLUSTER% %DOWNSTREAM_REMOTE_ADDRESS% "
    '"%DOWNSTREAM_PEER_URI_SAN%" %DOWNSTREAM_TLS_VERSION% "%RESPONSE_CODE_DETAILS%" '
    f"jti=%{JWT_JTI}% sub=%{JWT_SUB}% org=%{JWT_ORG}% exp=%{JWT_EXP}%\n"
)
"""An Ambassador-style custom format: ``ACCESS`` + Envoy's default + routing, mTLS and JWT fields."""

DEMO_JSON_FORMAT: dict[str, Any] = {
    "time": "%START_TIME%",
    "log_type": "access",  # a pure literal, as Ambassador configs often add
    "http": {
        "method": "%REQ(:METHOD)%",
        "path": "%REQ(X-ENVOY-ORIGINAL-PATH?:PATH)%",
        "protocol": "%PROTOCOL%",
        "authority": "%REQ(:AUTHORITY)%",
        "user_agent": "%REQ(USER-AGENT)%",
        "status": "%RESPONSE_CODE%",
        "flags": "%RESPONSE_FLAGS%",
        "details": "%RESPONSE_CODE_DETAILS%",
    },
    "bytes": {"received": "%BYTES_RECEIVED%", "sent": "%BYTES_SENT%"},
    "duration_ms": "%DURATION%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "route": "%ROUTE_NAME%",
    "upstream": {
        "cluster": "%UPSTREAM_CLUSTER%",
        "host": "%UPSTREAM_HOST%",
        "service_time_ms": "%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)%",
    },
    "downstream": {
        "address": "%DOWNSTREAM_REMOTE_ADDRESS%",
        "forwarded_for": "%REQ(X-FORWARDED-FOR)%",
        "peer_uri_san": "%DOWNSTREAM_PEER_URI_SAN%",
        "tls_version": "%DOWNSTREAM_TLS_VERSION%",
    },
    "jwt": {
        "jti": f"%{JWT_JTI}%",
        "sub": f"%{JWT_SUB}%",
        "org": f"%{JWT_ORG}%",
        "exp": f"%{JWT_EXP}%",
        "iat": f"%{JWT_IAT}%",
    },
}
"""A nested ``json_format`` mapping carrying the same fields as :data:`DEMO_TEXT_FORMAT` (and ``iat``)."""

_HEADER_OPERATORS = frozenset({"REQ", "RESP", "TRAILER"})
# Operators a format may spell differently from the record's keys.
_ALIASES = {
    "REQ(:PATH)": "REQ(X-ENVOY-ORIGINAL-PATH?:PATH)",
    "REQ(HOST)": "REQ(:AUTHORITY)",
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": "DOWNSTREAM_REMOTE_ADDRESS",
}

# A compiled format: literal text (str) or an operator (key, max_length, arg for START_TIME).
_Part = str | tuple[str, int | None, str | None]


def _parse(fmt: str) -> list[_Part]:
    """Split ``fmt`` into literals and operators (the parsers' own grammar); ``ValueError`` if malformed."""
    return [
        token.text
        if isinstance(token, Literal)
        else (_record_key(token.name, token.arg), token.max_length, token.arg if token.name == "START_TIME" else None)
        for token in tokenize(fmt)
    ]


def _record_key(name: str, arg: str | None) -> str:
    if name == "START_TIME":
        return "START_TIME"
    if arg is None:
        key = name
    elif name in _HEADER_OPERATORS:
        key = f"{name}({arg.upper()})"  # header names are case-insensitive
    else:
        key = f"{name}({arg})"
    return _ALIASES.get(key, key)


def _start_time(iso: str, strftime: str) -> str:
    # Envoy's START_TIME(...) extensions: %s epoch seconds, %<N>f N fraction digits.
    moment = datetime.fromisoformat(iso)
    micros = f"{moment.microsecond:06d}000"
    out = strftime.replace("%s", str(int(moment.timestamp())))
    for digits in range(1, 10):
        out = out.replace(f"%{digits}f", micros[:digits])
    return moment.strftime(out.replace("%f", micros))


def _plain(operator: tuple[str, int | None, str | None]) -> bool:
    """Whether the operator's text is the record's value as is (no truncation, strftime or derivation)."""
    key, max_length, arg = operator
    return max_length is None and arg is None and key not in _DERIVED


_DERIVED = frozenset({"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"})


def _value(record: Mapping[str, Any], key: str, arg: str | None) -> Any:
    value = record.get(key)
    if value is None and key == "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
        address = record.get("DOWNSTREAM_REMOTE_ADDRESS")
        value = None if address is None else address.rsplit(":", 1)[0]
    elif arg and value is not None:
        value = _start_time(value, arg)
    return value


def _generated(source: str, namespace: dict[str, Any]) -> Callable[[Mapping[str, Any]], Any]:
    # Like dataclasses and namedtuple, the per-record hot path is generated code:
    # one f-string or one dict display instead of a Python loop over the fields.
    # The source holds only indices; every key and literal travels in ``namespace``.
    exec(source, namespace)  # noqa: S102
    return namespace["render"]


@lru_cache(maxsize=64)
def compile_text(fmt: str) -> Callable[[Mapping[str, Any]], str]:
    """Compile ``fmt`` once; the returned function renders one record.

    Raises ``ValueError`` if ``fmt`` holds a ``%`` that starts no operator.
    """
    parts = _parse(fmt)
    if all(isinstance(p, str) or _plain(p) for p in parts):
        # The hot path (files with millions of lines): no truncation, no strftime.
        literals: list[str] = []
        keys: list[str] = []
        pieces: list[str] = []
        for part in parts:
            if isinstance(part, str):
                literals.append(part)
                pieces.append(f"{{L[{len(literals) - 1}]}}")
            else:
                keys.append(part[0])
                i = len(keys) - 1
                pieces.append(f"{{'-' if (v{i} := g(K[{i}])) is None else v{i}}}")
        source = 'def render(record):\n    g = record.get\n    return f"' + "".join(pieces) + '"\n'
        return _generated(source, {"L": tuple(literals), "K": tuple(keys)})

    def render(record: Mapping[str, Any]) -> str:
        out = []
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            key, max_length, arg = part
            value = _value(record, key, arg)
            text = "-" if value is None else str(value)
            out.append(text if max_length is None else text[:max_length])
        return "".join(out)

    return render


def render_text(record: Mapping[str, Any], fmt: str) -> str:
    """``record`` in the Envoy text format ``fmt`` (unset values as ``-``)."""
    return compile_text(fmt)(record)


def compile_json(mapping: Mapping[str, Any], typed: bool = True) -> Callable[[Mapping[str, Any]], bytes]:
    """Compile a ``json_format`` mapping once; the returned function renders one record as JSON bytes.

    Like Envoy, the output's keys are sorted. No trailing newline. Raises
    ``ValueError`` for a malformed operator in a value.
    """
    namespace: dict[str, Any] = {"dumps": orjson.dumps, "OPTION": orjson.OPT_SORT_KEYS, "K": [], "C": [], "F": []}
    expression = _mapping_expression(mapping, typed, namespace)
    source = f"def render(record):\n    g = record.get\n    return dumps({expression}, option=OPTION)\n"
    return _generated(source, namespace)


def render_json(record: Mapping[str, Any], mapping: Mapping[str, Any], typed: bool = True) -> bytes:
    """``record`` in the Envoy ``json_format`` ``mapping``: typed (v3) or all strings (legacy)."""
    key = (orjson.dumps(mapping, option=orjson.OPT_SORT_KEYS), typed)
    render = _JSON_CACHE.get(key)
    if render is None:
        if len(_JSON_CACHE) > 64:
            _JSON_CACHE.clear()
        render = _JSON_CACHE[key] = compile_json(mapping, typed)
    return render(record)


_JSON_CACHE: dict[tuple[bytes, bool], Callable[[Mapping[str, Any]], bytes]] = {}


def _mapping_expression(mapping: Mapping[str, Any], typed: bool, namespace: dict[str, Any]) -> str:
    items = [f"{str(name)!r}: {_value_expression(value, typed, namespace)}" for name, value in mapping.items()]
    return "{" + ", ".join(items) + "}"


def _value_expression(template: Any, typed: bool, namespace: dict[str, Any]) -> str:
    """Python source computing one JSON value of the mapping from ``record`` (bound as ``g = record.get``)."""
    if isinstance(template, Mapping):
        return _mapping_expression(template, typed, namespace)
    parts = _parse(template) if isinstance(template, str) else None
    if parts is None or all(isinstance(p, str) for p in parts):
        literal = "".join(cast(list[str], parts)) if parts is not None else template
        namespace["C"].append(literal)  # a literal, kept as is
        return f"C[{len(namespace['C']) - 1}]"
    if len(parts) == 1 and not isinstance(parts[0], str):
        key, max_length, arg = parts[0]
        if _plain(parts[0]):
            namespace["K"].append(key)
            i = len(namespace["K"]) - 1
            if typed:
                return f"g(K[{i}])"  # numbers stay numbers, unset is null
            return f"('-' if (v{i} := g(K[{i}])) is None else str(v{i}))"
        namespace["F"].append(_single(key, max_length, arg, typed))
    else:
        # Text around operators: always a string, unset operators as "-".
        namespace["F"].append(compile_text(template))
    return f"F[{len(namespace['F']) - 1}](record)"


def _single(key: str, max_length: int | None, arg: str | None, typed: bool) -> Callable[[Mapping[str, Any]], Any]:
    def value_of(record: Mapping[str, Any]) -> Any:
        value = _value(record, key, arg)
        if value is None:
            return None if typed else "-"
        if max_length is not None:
            value = str(value)[:max_length]
        return value if typed else str(value)

    return value_of
