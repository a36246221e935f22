"""Envoy JSON access logs: ``json_format`` (all strings, unset ``"-"``) and
``typed_json_format`` (numbers stay numbers, unset ``null``), by one parser.

The mapping is compiled once into (key path, reader) pairs. A value that is a
single ``%OPERATOR%`` is read straight from the key; a value mixing text and
operators (``"%REQ(:METHOD)% %REQ(:PATH)%"``) is read by the text compiler.

When every key fills an Event field plainly, a line is first decoded by msgspec
straight into Structs of those keys and typed by a fused reader
(:mod:`ingest.parsers.fused`); a line that does not fit them is decoded by
orjson and read by the table, which names every dead letter.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import orjson

from ingest.errors import FormatError
from ingest.normalize import InvalidValueError, normalize
from ingest.parsers.decode import DEFAULT_MAX_LINE_BYTES, Parser, decode_json_object, lenient_json_value
from ingest.parsers.envoy_format import Command, tokenize
from ingest.parsers.envoy_operators import Converted, ScalarClaim, Slot, resolve
from ingest.parsers.envoy_text import TextPattern, compile_text_pattern
from ingest.parsers.fused import Leaf, Whole, fuse
from ingest.records import DeadLetter, Event, RawRecord

__all__ = ["compile_json_format"]

_Reader = Callable[[Any, dict[str, Any]], None]


class _Mismatch(Exception):
    """A text value did not fit the format of its key."""


def compile_json_format(
    mapping: Mapping[str, Any], max_line_bytes: int = DEFAULT_MAX_LINE_BYTES, trusted_hops: int = 0
) -> Parser:
    """A parser for access logs written with the Envoy ``json_format`` / ``typed_json_format`` ``mapping``.

    Nested mappings are nested objects in the line. Values without an operator
    (constants) are ignored. Raises ``ValueError`` naming the key of a broken
    format string. ``trusted_hops``: the gateway's ``xff_num_trusted_hops``
    (:func:`ingest.normalize.gateway_values`).
    """
    top: list[tuple[str, str]] = []  # the common case: one key, value copied as is
    # Everything else, grouped by the object that holds it, so "http" is looked up once a line.
    # A reader of None copies the value as it is (most nested keys): no call a key.
    parents: dict[tuple[str, ...], list[tuple[str, str, _Reader | None]]] = {}
    top_leaves: list[Leaf | None] = []  # the same keys, in the same order, for the fused reader
    nested_leaves: dict[tuple[str, ...], list[Leaf | None]] = {}
    for path, value in _leaves(mapping, ()):
        try:
            compiled = _compile_value(value)
        except ValueError as error:
            raise FormatError(f"json_format {'.'.join(path)}: {error}") from None
        if compiled is None:
            continue
        plain = isinstance(compiled, Slot) and compiled.apply is None and not compiled.is_label
        field = compiled.field if plain and isinstance(compiled, Slot) else ""
        if plain and len(path) == 1:
            top.append((path[0], field))
            top_leaves.append(_leaf(compiled, path))
        elif plain:
            parents.setdefault(path[:-1], []).append((path[-1], field, None))
            nested_leaves.setdefault(path[:-1], []).append(_leaf(compiled, path))
        else:
            parents.setdefault(path[:-1], []).append((path[-1], "", _reader(compiled, path)))
            nested_leaves.setdefault(path[:-1], []).append(_leaf(compiled, path))
    if not top and not parents:
        raise FormatError("json_format: no command operator (such as %START_TIME%) in any value: nothing to read")
    nested = tuple((parent, tuple(children)) for parent, children in parents.items())
    plan = top_leaves + [leaf for leaves in nested_leaves.values() for leaf in leaves]
    # The line read straight into Structs; else (a key both a value and an object) from its dict.
    plain_leaves = None if None in plan else [leaf for leaf in plan if leaf is not None]
    fused = None if plain_leaves is None else fuse(plain_leaves, True, "gateway.json_format", trusted_hops=trusted_hops)

    def parse(record: RawRecord) -> Event | DeadLetter:
        obj = decode_json_object(record, max_line_bytes)
        if isinstance(obj, DeadLetter):
            return obj
        if fused is not None and (event := fused(obj, record.origin, record.created)) is not None:
            return event
        get = obj.get
        fields: dict[str, Any] = {}
        for key, field in top:
            value = get(key)
            if value is not None and value != "-" and value != "":
                fields[field] = value
        try:
            for parent, children in nested:
                holder = _lookup(obj, parent)
                if type(holder) is not dict:
                    continue
                holder_get = holder.get
                for key, field, read in children:
                    value = holder_get(key)
                    if value is not None and value != "-" and value != "":
                        if read is None:
                            fields[field] = value
                        else:
                            read(value, fields)
        except InvalidValueError as error:
            return DeadLetter(record.origin, "invalid_value", str(error), record.line)
        except _Mismatch as error:
            return DeadLetter(record.origin, "format_mismatch", str(error), record.line)
        return normalize(fields, record.origin, record.line, record.created, trusted_hops)

    # The common line is read straight into Structs by the whole parser, which hands the others to parse().
    if plain_leaves is None:
        return parse
    whole = Whole(parse, max_line_bytes)
    name = "gateway.json_format"
    return fuse(plain_leaves, True, name, raw_json=True, whole=whole, trusted_hops=trusted_hops) or parse


def json_labelled_values(mapping: Mapping[str, Any]) -> Callable[[str], list[tuple[str, str]]]:
    """What :meth:`TextPattern.labelled_values` is for a text format: the text values a line of
    ``mapping`` holds for its label operators, each as decoded and as its JSON string writes it."""
    labels = [(path, slot.field) for path, value in _leaves(mapping, ())
              if isinstance(slot := _compile_value(value), Slot) and slot.is_label]  # fmt: skip

    def labelled_values(text: str) -> list[tuple[str, str]]:
        try:
            obj = orjson.loads(text)
        except orjson.JSONDecodeError as error:  # 1e400 (read as the parser reads it), else not JSON
            obj = lenient_json_value(text.encode("utf-8", "surrogateescape"), error)
        except ValueError:  # a line that was not UTF-8 (surrogates)
            return []
        found = []
        for path, label in labels:
            value = _lookup(obj, path)
            if isinstance(value, str) and value:
                found += [(label, value), (label, orjson.dumps(value).decode()[1:-1])]
        return found

    return labelled_values


def _leaf(compiled: Slot | TextPattern, path: tuple[str, ...]) -> Leaf | None:
    """The fused reader's view of a key, or None if only the general path reads it."""
    if not isinstance(compiled, Slot) or compiled.is_label:
        return None
    if compiled.apply is None:
        return Leaf(path, compiled.field)
    if isinstance(compiled.apply, Converted):
        return Leaf(path, compiled.field, convert=compiled.apply.convert)
    if isinstance(compiled.apply, ScalarClaim):
        return Leaf(path, compiled.field, scalar_only=True)
    return None


def _leaves(mapping: Mapping[str, Any], prefix: tuple[str, ...]) -> list[tuple[tuple[str, ...], Any]]:
    leaves: list[tuple[tuple[str, ...], Any]] = []
    for key, value in mapping.items():
        if isinstance(value, Mapping):
            leaves.extend(_leaves(value, (*prefix, str(key))))
        else:
            leaves.append(((*prefix, str(key)), value))
    return leaves


def _compile_value(value: Any) -> Slot | TextPattern | None:
    if not isinstance(value, str):
        return None  # a typed constant (number, bool): nothing to read
    tokens = tokenize(value)
    commands = [token for token in tokens if isinstance(token, Command)]
    if not commands:
        return None
    if len(tokens) == 1:
        return resolve(commands[0])
    return compile_text_pattern(value, whole_line=False)


def _reader(compiled: Slot | TextPattern, path: tuple[str, ...]) -> _Reader:
    """How to read a value that is not copied as it is: text to match, an operator to apply, a label."""
    if isinstance(compiled, TextPattern):
        extract = compiled.extract
        where = ".".join(path)

        def read_text(value: Any, fields: dict[str, Any]) -> None:
            found = extract(value if isinstance(value, str) else str(value))
            if found is None:
                raise _Mismatch(f"{where}: value does not fit {compiled.format!r}")
            fields.update(found)

        return read_text
    field, apply = compiled.field, compiled.apply
    if apply is not None:
        return lambda value, fields: apply(field, value, fields)

    def read_label(value: Any, fields: dict[str, Any]) -> None:
        # typed_json_format writes metadata and filter state as objects.
        fields[field] = orjson.dumps(value).decode() if isinstance(value, (dict, list, bool)) else value

    return read_label


def _lookup(obj: dict[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = obj
    for key in path:
        if type(value) is not dict:
            return None
        value = value.get(key)
    return value
