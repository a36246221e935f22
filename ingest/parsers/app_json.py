"""The Billing service's JSON log lines: gatewatch field -> dotted path into the object.

A line is first decoded by msgspec straight into Structs of the configured paths
and typed by a fused reader (:mod:`ingest.parsers.fused`); a line that does not
fit them (a literal dotted key, a value of another type) is decoded by orjson and
read by the general path, which names every dead letter.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ingest.addresses import without_port
from ingest.errors import FormatError
from ingest.normalize import normalize
from ingest.parsers.decode import DEFAULT_MAX_LINE_BYTES, Parser, decode_json_object
from ingest.parsers.fused import Leaf, Whole, fuse
from ingest.records import DeadLetter, Event, RawRecord

__all__ = ["APP_FIELDS", "DEFAULT_APP_FIELDS", "DEPRECATED_APP_FIELDS", "canonical_app_fields", "compile_app_parser"]

APP_FIELDS: Mapping[str, str] = MappingProxyType({
    "ts": "ts",
    "request_id": "request_id",
    "method": "method",
    "path": "path",
    "status": "status",
    "latency_ms": "duration_ms",
    "user_id": "user_id",
    "org_id": "org_id",
    "action": "action",
    "outcome": "outcome",
    "token.jti": "token_jti",
    "token.sub": "token_sub",
    "token.org": "token_org",
    "token.exp": "token_exp",  # epoch seconds or ISO 8601
    "token.iat": "token_iat",
    "peer.ip": "source_ip",
    "peer.spiffe_id": "peer_identity",
    "level": "level",
    "msg": "message",
})
"""The documented Billing field names (the keys of ``app.fields``) -> the Event field each fills."""

DEFAULT_APP_FIELDS: Mapping[str, str] = MappingProxyType({name: name for name in APP_FIELDS})
"""Where the Billing app writes each field: by default, at the path its documented name spells."""

DEPRECATED_APP_FIELDS: Mapping[str, str] = MappingProxyType({
    event_field: name for name, event_field in APP_FIELDS.items() if event_field != name
})
"""Names gatewatch 0.1 accepted (its internal field names) -> the documented name that replaces each."""


def canonical_app_fields(fields: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``fields`` keyed by documented names only, and one notice per deprecated name it used.

    Raises ``ValueError`` naming an unknown key (with the valid names), or a
    field given under both its deprecated and its documented name.
    """
    canonical: dict[str, str] = {}
    notices: list[str] = []
    for key, path in fields.items():
        name = DEPRECATED_APP_FIELDS.get(key, key)
        if name not in APP_FIELDS:
            raise FormatError(f"unknown field {key!r}; the fields are: {', '.join(APP_FIELDS)}")
        if name != key:
            if name in fields:
                raise FormatError(f"{key!r} and {name!r} are the same field; keep {name!r}")
            notices.append(f"app.fields.{key} is deprecated: rename it to {name!r}")
        canonical[name] = path
    return canonical, notices


_MISSING = object()


def _text_without_port(value: Any) -> Any:
    # Only text: anything else is typed (and refused, for an object) as any other field's value is.
    return without_port(value) if type(value) is str else value


_CONVERT = {"source_ip": _text_without_port}


def compile_app_parser(fields: Mapping[str, str], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES) -> Parser:
    """A parser for app JSON lines; ``fields`` overrides single entries of :data:`DEFAULT_APP_FIELDS`.

    A path ``a.b`` reads the top-level key ``"a.b"`` if the line has one, else
    ``b`` inside the object ``a``. Mapping a field to ``""`` drops it. Null and
    empty-string values count as absent. Raises ``ValueError`` for a name that
    is not one of :data:`APP_FIELDS` (deprecated names are translated).
    """
    overrides, _ = canonical_app_fields(fields)
    merged = {APP_FIELDS[name]: path for name, path in {**DEFAULT_APP_FIELDS, **overrides}.items() if path}
    flat = tuple((field, path) for field, path in merged.items() if "." not in path)
    dotted = tuple((field, path, tuple(path.split("."))) for field, path in merged.items() if "." in path)
    dotted_keys = frozenset(path for _, path, _ in dotted)
    # Dotted paths grouped by their parent object, so "token" is looked up once per line.
    parents: dict[tuple[str, ...], list[tuple[str, str]]] = {}
    for field, _, parts in dotted:
        parents.setdefault(parts[:-1], []).append((field, parts[-1]))
    groups = tuple((parent, tuple(children)) for parent, children in parents.items())
    # The peer's port is dropped here as make_event drops it on the general path; its values repeat.
    leaves = [Leaf((key,), field, _CONVERT.get(field), repeats=True) for field, key in flat] + [
        Leaf((*parent, key), field, _CONVERT.get(field), repeats=True)
        for parent, children in groups for field, key in children
    ]
    # When a key is both a value and an object, no line is read into Structs: from its dict, then.
    fused = fuse(leaves, dash_is_absent=False, name="app.fields")

    def parse(record: RawRecord) -> Event | DeadLetter:
        obj = decode_json_object(record, max_line_bytes)
        if isinstance(obj, DeadLetter):
            return obj
        # A literal "token.jti" key wins over {"token": {"jti": ...}}: the general path knows how.
        if fused is not None and dotted_keys.isdisjoint(obj):
            if (event := fused(obj, record.origin, record.created)) is not None:
                return event
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
        return normalize(found, record.origin, record.line, record.created)

    # The common line is read straight into Structs by the whole parser, which hands the others
    # (a literal "token.jti" key among them) to parse().
    whole = Whole(parse, max_line_bytes)
    line_parser = fuse(leaves, False, "app.fields", raw_json=True, refuse_keys=dotted_keys, whole=whole)
    return line_parser or parse
