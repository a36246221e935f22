"""The Billing service's JSON log lines: gatewatch field -> dotted path into the object."""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ingest.normalize import normalize
from ingest.parsers.decode import DEFAULT_MAX_LINE_BYTES, Parser, decode_json_object
from ingest.records import DeadLetter, Event, RawRecord

__all__ = ["DEFAULT_APP_FIELDS", "compile_app_parser"]

DEFAULT_APP_FIELDS: Mapping[str, str] = MappingProxyType({
    "ts": "ts",
    "request_id": "request_id",
    "method": "method",
    "path": "path",
    "status": "status",
    "duration_ms": "latency_ms",
    "user_id": "user_id",
    "org_id": "org_id",
    "action": "action",
    "outcome": "outcome",
    "token_jti": "token.jti",
    "token_sub": "token.sub",
    "token_org": "token.org",
    "token_exp": "token.exp",  # epoch seconds
    "token_iat": "token.iat",
    "source_ip": "peer.ip",
    "peer_identity": "peer.spiffe_id",
    "level": "level",
    "message": "msg",
})
"""Where the Billing app writes each field. A field that is not an Event field becomes a label."""

_MISSING = object()


def compile_app_parser(fields: Mapping[str, str], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Parser:
    """A parser for app JSON lines; ``fields`` overrides single entries of :data:`DEFAULT_APP_FIELDS`.

    A path ``a.b`` reads the top-level key ``"a.b"`` if the line has one, else
    ``b`` inside the object ``a``. Mapping a field to ``""`` drops it. Null and
    empty-string values count as absent.
    """
    merged = {name: path for name, path in {**DEFAULT_APP_FIELDS, **fields}.items() if path}
    flat = tuple((field, path) for field, path in merged.items() if "." not in path)
    dotted = tuple((field, path, tuple(path.split("."))) for field, path in merged.items() if "." in path)
    dotted_keys = frozenset(path for _, path, _ in dotted)
    # Dotted paths grouped by their parent object, so "token" is looked up once per line.
    parents: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for field, _, parts in dotted:
        parents.setdefault(parts[:-1], []).append((field, parts[-1]))
    groups = tuple((parent, tuple(children)) for parent, children in parents.items())

    def parse(record: RawRecord) -> Event | DeadLetter:
        obj = decode_json_object(record, max_line_bytes)
        if isinstance(obj, DeadLetter):
            return obj
        get = obj.get
        found = {field: value for field, key in flat if (value := get(key)) is not None and value != ""}
        if dotted_keys.isdisjoint(obj):
            for parent, children in groups:
                inner: Any = obj
                for part in parent:
                    inner = inner.get(part) if type(inner) is dict else None
                if type(inner) is dict:
                    inner_get = inner.get
                    for field, key in children:
                        value = inner_get(key)
                        if value is not None and value != "":
                            found[field] = value
        else:  # a literal "token.jti" key wins over {"token": {"jti": ...}}
            for field, key, parts in dotted:
                value = get(key, _MISSING)
                if value is _MISSING:
                    value = obj
                    for part in parts:
                        value = value.get(part) if type(value) is dict else None
                if value is not None and value != "":
                    found[field] = value
        return normalize(found, record.origin, record.line)

    return parse
