"""Fused reading (JSON, and text once its regex matched): find, check and type a line's fields in one pass.

A parser's general path finds values into a dict (a loop over the compiled key
table, or a regex's groups zipped with their names), then
:func:`ingest.normalize.normalize` walks that dict again to type each value and
builds the Event from it by keywords. All of it is per-field Python work, the
bulk of a record's cost. For a format whose every value fills a known Event
field, this module writes one function, once, that reads each value and types
it into a local variable, then calls the Event's constructor with positional
arguments (as ``dataclasses`` writes ``__init__``): no table, no dict, no
second walk.

It only ever takes the common road. Whenever a line is not plain (no
timestamp of its own nor from the container runtime, a value that does not
type, an object where a scalar belongs), the function returns ``None`` and the
parser runs its general path, so every dead letter keeps its exact reason and
detail.

A JSON reader (``raw_json=True``) also decodes the line itself, with msgspec,
into Structs written from the same leaves: only the keys a leaf names are
built, each checked against the type its field takes (text, or a number or
text), in C. A line that does not decode that way (not JSON, a list where
text belongs, a key the leaves do not name holding bytes that are not
UTF-8) goes the general path, which decodes it with orjson and names the
reason. msgspec skips the keys no leaf names: it checks their syntax but not
the range of their numbers, so ``1e400`` under such a key no longer costs the
line (RFC 8259 sets no range, and the value was never read).

The parsers use the reader as their whole parser (``whole``): it takes the record,
and instead of returning ``None`` it calls the general path itself, so the common
line costs one Python call. In a text format, operators whose values repeat
together are read as one :class:`Run`, through a bounded cache.
"""

from __future__ import annotations

import keyword
import re
import sys
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

import msgspec

from ingest.normalize import (
    _COERCE,
    MAX_TS,
    MIN_TS,
    _TEXT_FIELDS,
    SHARED_TEXT_FIELDS,
    InvalidValueError,
    _to_str,
    gateway_values,
    parse_timestamp,
)
from ingest.parsers.decode import Parser
from ingest.parsers.fused_values import FAST, FROM_DIGITS, IN_RANGE_FROM_DIGITS, TYPED, Absent
from ingest.records import Dataset, Event, record_id

Fused = Callable[..., Event | None]
"""``(decoded object, regex match or raw JSON line, origin, created=None) -> event``, or ``None``: take
the general path. ``created``: the container runtime's time of the line (:attr:`RawRecord.created`)."""

RUN_CACHE_ENTRIES = 4096
"""Texts of a :class:`Run` remembered, per run and reader; past it the cache starts afresh."""
RUN_CACHE_MAX_CHARS = 256
"""Longest text of a :class:`Run` remembered (a longer one is read, not kept): at most ~1.5 MB a run."""

_DEFAULTS = {f.name: f.default for f in msgspec.structs.fields(Event)}


@dataclass(frozen=True, slots=True)
class Leaf:
    """One key of the line: where it sits, the Event field it fills, how its value is read.

    ``path``: keys from the decoded object down to the value; an ``int`` indexes a tuple
    (a regex's groups). ``convert`` turns the value into the field's value before it is typed;
    ``scalar_only`` leaves a line whose value is an object, a list or a bool to
    the general path (which keeps such a value as a label). ``digits``: the value, when set,
    is decimal digits (a regex group matched by ``\\d+``), so the reader need not check it.
    ``repeats``: a converted value that still repeats from line to line (an app's peer, logged
    without a port but now and then), so its object may be read through a cache as unconverted
    ones are (see :func:`_cached_objects`).
    """

    path: tuple[str | int, ...]
    field: str
    convert: Callable[[Any], Any] | None = None
    scalar_only: bool = False
    digits: bool = False
    repeats: bool = False


@dataclass(frozen=True, slots=True)
class Whole:
    """What makes a fused reader the whole parser of a record (see :func:`fuse`).

    ``general``: the parser's general path, which gets every record the reader does not take,
    and names its dead letter; ``match``: a text format's regex (the reader's ``obj`` is its match
    of the line's text), ``None`` for a raw JSON reader.
    """

    general: Parser
    max_line_bytes: int
    match: Callable[[str], re.Match[str] | None] | None = None


@dataclass(frozen=True, slots=True)
class Run:
    """Text operators that follow each other in a text format (literals between them), read as one.

    ``group``: the regex group holding the whole run's text; ``leaves``: its operators, each a
    regex group of its own (``path == (group number,)``), each filling a field of
    :data:`~ingest.normalize.SHARED_TEXT_FIELDS` that no other leaf fills.

    Such values repeat together (the client's X-Forwarded-For and user agent, authority, host,
    route and cluster, a token's subject and org), so the reader looks the run's text up in a
    cache of the interned values it held before: one text made and hashed instead of one per
    operator, and no group of the run made at all when the text was seen. The same text always
    held the same values: the regex has no back references, and a run's operators only look
    past it at the literal that follows it, which every match of the line has there.
    """

    group: int
    leaves: tuple[Leaf, ...]


@overload
def fuse(
    leaves: Sequence[Leaf],
    dash_is_absent: bool,
    name: str = "json",
    *,
    empty_is_absent: bool = True,
    raw_json: bool = False,
    refuse_keys: Collection[str] = (),
    runs: Sequence[Run] = (),
    whole: None = None,
    trusted_hops: int = 0,
) -> Fused | None: ...


@overload
def fuse(
    leaves: Sequence[Leaf],
    dash_is_absent: bool,
    name: str = "json",
    *,
    empty_is_absent: bool = True,
    raw_json: bool = False,
    refuse_keys: Collection[str] = (),
    runs: Sequence[Run] = (),
    whole: Whole,
    trusted_hops: int = 0,
) -> Parser | None: ...


def fuse(
    leaves: Sequence[Leaf],
    dash_is_absent: bool,
    name: str = "json",
    *,
    empty_is_absent: bool = True,
    raw_json: bool = False,
    refuse_keys: Collection[str] = (),
    runs: Sequence[Run] = (),
    whole: Whole | None = None,
    trusted_hops: int = 0,
) -> Fused | Parser | None:
    """The fused reader of ``leaves`` (in the general path's order: a later leaf wins), or
    ``None`` when a leaf fills no Event field (a label), which only the general path keeps.

    ``dash_is_absent``: ``"-"`` means "not set" (Envoy), besides ``null``; ``empty_is_absent``:
    so does ``""`` (the JSON parsers drop it; a text line's ``""`` is kept, as normalize keeps
    it); ``name`` tells profiles and tracebacks which reader ran.

    ``raw_json``: the reader takes the line's bytes and decodes them itself (see the module's
    docstring); ``None`` too when the leaves cannot be one Struct (a key both a value and an
    object). ``refuse_keys``: top-level keys whose presence sends a line to the general path.
    ``runs``: a text format's runs of shared text (see :class:`Run`), read besides ``leaves``.
    ``whole``: the reader is written as the whole parser, ``parse(record) -> event or dead
    letter``. It takes the record itself: it checks the line's length, decodes the line (and
    matches a text format's regex), and hands any record it does not take to ``whole.general``
    instead of returning ``None``. So a line costs one Python call, not three (the parser, the
    text's decoding, the reader), and every dead letter is still the general path's.
    ``trusted_hops``: the gateway's ``xff_num_trusted_hops``, for :func:`gateway_values`.
    """
    names: dict[str, Any] = {"parse_timestamp": parse_timestamp, "_to_str": _to_str, "Event": Event,
                             "InvalidValueError": InvalidValueError, "intern": sys.intern, "record_id": record_id,
                             "gateway_values": gateway_values, "GATEWAY": Dataset.GATEWAY,
                             "MIN_TS": MIN_TS, "MAX_TS": MAX_TS, "UNSET": msgspec.UNSET,
                             "fromisoformat": datetime.fromisoformat}  # fmt: skip
    if not leaves and not runs:
        return None  # nothing to read: the general path's dead letters say so
    absent = Absent(dash_is_absent, empty_is_absent)
    run_fields = {leaf.field for run in runs for leaf in run.leaves}
    filled = ({leaf.field for leaf in leaves} | run_fields) - {"ts"}
    if not filled <= _TEXT_FIELDS | _COERCE.keys():
        return None  # a label: only the general path keeps those
    line_type: type[msgspec.Struct] | None = None
    attributes: dict[tuple[str | int, ...], str] = {}
    objects: dict[str, type[msgspec.Struct]] = {}  # top-level objects read through a cache
    fillers: dict[str, int] = {}
    for leaf in leaves:
        fillers[leaf.field] = fillers.get(leaf.field, 0) + 1
    if raw_json:
        built = _line_struct(leaves, refuse_keys, _cached_objects(leaves, fillers))
        if built is None:
            return None
        line_type, attributes, objects = built
    derived = ("status", "source_ip", "forwarded_for")  # gateway_values(): source_ip may come from forwarded_for
    if "forwarded_for" in filled:
        filled.add("source_ip")
    # A regex group's text filling a field no other leaf fills is stored as it is, "-" and all
    # absent values being None already: the assignment needs no test, its local no default.
    stored = {
        leaf.field for leaf in leaves
        if type(leaf.path[0]) is int and len(leaf.path) == 1 and fillers[leaf.field] == 1 and leaf.convert is None
        and not absent.empty and not absent.dash and (leaf.field == "ts" or leaf.field in _TEXT_FIELDS)
    } | run_fields  # fmt: skip
    # Each other filled field is a local holding its Event default until a value replaces it.
    lines = ["def fused(obj, origin, created=None):"]
    if line_type is not None:  # the line's bytes: decoded here, as _decoded_line() says
        names.update(decode=msgspec.json.Decoder(line_type).decode, DecodeError=msgspec.DecodeError)
        lines = ["def fused(line, origin, created=None):", *_decoded_line()]
    if whole is not None:
        names.update(general=whole.general, match=whole.match)
        lines = ["def fused(record):", *_record_lines(whole, raw_json), *lines[1:]]
    lines += [] if "ts" in stored else ["    t = None"]
    lines += [f"    f_{field} = {_DEFAULTS[field]!r}" for field in sorted(filled - stored)]
    if refuse_keys:
        present = " or ".join(f"obj.{attributes[(key,)]} is not UNSET" for key in refuse_keys)
        lines += [f"    if {present}:  # {', '.join(map(repr, refuse_keys))}", "        return None"]
    lines.append("    try:")
    for number, run in enumerate(runs):  # a run's text, then its values: cached, else read (see Run)
        names[f"run_cached_{number}"], names[f"run_read_{number}"] = _run_reader(run)
        lines += [
            f"        x = obj[{run.group}]",
            f"        v = run_cached_{number}(x)",
            "        if v is None:",
            f"            v = run_read_{number}(obj, x)",
            f"        {', '.join(f'f_{leaf.field}' for leaf in run.leaves)}, = v",
        ]
    groups: dict[tuple[str | int, ...], list[tuple[int, Leaf]]] = {}
    for index, leaf in enumerate(leaves):
        groups.setdefault(leaf.path[:-1], []).append((index, leaf))
    for parent, members in groups.items():
        indent = "        "
        if len(parent) == 1 and parent[0] in objects:  # its raw text: values cached, else read
            key = str(parent[0])
            number = list(objects).index(key)
            cached, read = _object_reader(key, members, objects[key], absent, names, attributes)
            names[f"object_cached_{number}"], names[f"object_read_{number}"] = cached, read
            lines += [
                f"{indent}x = obj.{attributes[parent]}  # {key!r}",
                f"{indent}if x:",  # an empty Raw: the line lacks the key
                f"{indent}    x = bytes(x)",
                f"{indent}    v = object_cached_{number}(x)",
                f"{indent}    if v is None:",
                f"{indent}        v = object_read_{number}(x)",
                f"{indent}        if v is None:",
                f"{indent}            return None",
                f"{indent}    {', '.join(f'f_{leaf.field}' for _, leaf in members)}, = v",
            ]
            continue
        lines.append(f"{indent}h = obj")
        for depth, part in enumerate(parent, 1):
            if raw_json:  # a Struct, or None where the line lacks the object
                guard = " if h is not None else None" if depth > 1 else ""
                lines.append(f"{indent}h = h.{attributes[parent[:depth]]}{guard}  # {part!r}")
            else:
                lines.append(f"{indent}h = h.get({part!r}) if type(h) is dict else None")
        if parent:
            lines.append(f"{indent}if {'h is not None' if raw_json else 'type(h) is dict'}:")
            indent += "    "
        for index, leaf in members:
            if leaf.field in stored:
                lines += _stored_lines(leaf, indent)
            else:
                lines += _leaf_lines(index, leaf, absent, indent, names, attributes.get(leaf.path))
    # gateway_values() changes a status of 0 and a missing source_ip where forwarded_for is set:
    # called only then (in most lines neither holds), so a new rule there must widen this test.
    changes = [
        *(["f_status == 0"] if "status" in filled else []),
        *(["f_source_ip is None and f_forwarded_for is not None"] if "forwarded_for" in filled else []),
    ]
    arguments = ", ".join(
        {"id": "record_id(origin)", "dataset": "origin.dataset", "ts": "ts", "origin": "origin",
         "created": "created"}.get(
            name, f"f_{name}" if name in filled else repr(default)
        )
        for name, default in _DEFAULTS.items()
    )
    lines += [
        "    except InvalidValueError:",
        "        return None",
        "    if t is not None:",
        "        try:",
        # parse_timestamp's common case without its two calls: an extended ISO 8601 date with
        # an offset (a naive one is UTC, which parse_timestamp knows).
        f"            if {'' if 'ts' in stored else 'type(t) is str and '}t[4:5] == '-':",  # a stored t is text
        "                moment = fromisoformat(t)",
        "                ts = moment.timestamp() if moment.tzinfo is not None else parse_timestamp(t)",
        "            else:",
        "                ts = parse_timestamp(t)",
        "        except ValueError:",  # InvalidValueError, or fromisoformat's: the general path names it
        "            return None",
        "    elif created is not None:",  # no time of its own: the runtime's stands in, as in normalize
        "        ts = created",
        "    else:",
        "        return None",
        "    if not MIN_TS <= ts < MAX_TS:",  # out of range: normalize dead-letters it with the reason
        "        return None",
        "    if created is not None and not MIN_TS <= created < MAX_TS:",  # normalize drops an absurd one
        "        created = None",
        *(
            [
                f"    if origin.dataset is GATEWAY and ({' or '.join(changes)}):",
                f"        {', '.join(f'f_{n}' if n in filled else '_' for n in derived[:2])} = "
                f"gateway_values({', '.join(f'f_{n}' if n in filled else 'None' for n in derived)}, "
                f"{int(trusted_hops)})",
            ]
            if changes
            else []
        ),
        f"    return Event({arguments})",
    ]
    if whole is not None:  # a record the reader does not take goes to the general path at once
        lines = [line.replace("return None", "return general(record)") for line in lines]
    scope: dict[str, Any] = {}
    exec(compile("\n".join(lines), f"<fused reader: {name}>", "exec"), names, scope)  # noqa: S102 (our own text)
    fused: Fused | Parser = scope["fused"]
    fused.source = "\n".join(lines)  # type: ignore[union-attr]  # for a reader of tracebacks
    return fused


def _run_reader(
    run: Run,
) -> tuple[Callable[[str], tuple[str | None, ...] | None], Callable[[re.Match[str], str], tuple[str | None, ...]]]:
    """The cache of ``run``'s texts (its ``get``) and what reads a text it lacks from the match."""
    cache: dict[str, tuple[str | None, ...]] = {}
    numbers = [leaf.path[0] for leaf in run.leaves]
    intern = sys.intern

    def read(match: re.Match[str], text: str) -> tuple[str | None, ...]:
        values = tuple(None if (value := match[number]) is None else intern(value) for number in numbers)
        if len(text) <= RUN_CACHE_MAX_CHARS:
            if len(cache) >= RUN_CACHE_ENTRIES:
                cache.clear()  # bounded, whatever the variety; a steady stream refills it at once
            cache[text] = values
        return values

    return cache.get, read


def _record_lines(whole: Whole, raw_json: bool) -> list[str]:
    """The start of a reader that is the whole parser: the record's line, checked (and for a text
    format, decoded and matched into ``obj``), its origin and runtime time; ``None`` (which
    :func:`fuse` makes a call of the general path) for a line the reader cannot take."""
    lines = [
        "    line = record.line",
        f"    if len(line) > {whole.max_line_bytes}:",  # oversized: the general path says so
        "        return None",
    ]
    if not raw_json:  # decode_line()'s text (its dead letters are the general path's), matched
        lines += [
            "    try:",
            "        text = line.decode().rstrip()",
            "    except UnicodeDecodeError:",
            "        return None",
            '    if "\\n" in text:',  # two lines a shipper put in one record: the general path refuses them
            "        return None",
            "    obj = match(text)",
            "    if obj is None:",
            "        return None",
        ]
    return [*lines, "    origin = record.origin", "    created = record.created"]


def _decoded_line() -> list[str]:
    """The start of a reader of a raw JSON line: ``obj``, the Structs ``decode`` makes of ``line``,
    or ``None`` returned for a line that does not decode (written into the reader, not a call a line)."""
    return [
        # msgspec leaves the text of keys it skips unchecked: bytes that are not UTF-8
        # anywhere in the line must stay an invalid_utf8 dead letter (the general path).
        "    if not line.isascii():",
        "        try:",
        "            line.decode()",
        "        except UnicodeDecodeError:",
        "            return None",
        "    try:",
        "        obj = decode(line)",
        "    except (DecodeError, RecursionError):",  # RecursionError: nesting past the C stack's budget
        "        return None",
    ]


# What a Struct field accepts, by the Event field it fills: the JSON types the fused reader
# types itself (msgspec and orjson read them to equal values). Anything else (a bool, an
# object, a list, a number where text goes) fails validation: the general path reads the line.
_TEXT_VALUE = str | None
_NUMBER_VALUE = int | float | str | None


def _line_struct(
    leaves: Sequence[Leaf], refuse_keys: Collection[str], cached: Collection[str] = ()
) -> tuple[type[msgspec.Struct], dict[tuple[str | int, ...], str], dict[str, type[msgspec.Struct]]] | None:
    """The Struct a JSON line decodes into (nested Structs for nested objects), the
    attribute that holds each path's value, and the Struct of each ``cached`` top-level object,
    which the line's Struct holds as raw JSON (``msgspec.Raw``); ``None`` if a key is both a
    value and an object."""
    tree: dict[str, Any] = {}  # key -> subtree, or the leaf that reads it
    for leaf in leaves:
        node = tree
        for part in leaf.path[:-1]:
            child = node.setdefault(str(part), {})
            if not isinstance(child, dict):
                return None
            node = child
        if str(leaf.path[-1]) in node:
            return None
        node[str(leaf.path[-1])] = leaf
    for key in refuse_keys:
        if key in tree:
            return None
        tree[key] = None  # present at all: refused
    attributes: dict[tuple[str | int, ...], str] = {}
    objects: dict[str, type[msgspec.Struct]] = {}

    def struct(node: dict[str, Any], path: tuple[str, ...]) -> type[msgspec.Struct]:
        members: list[tuple[str, Any, Any]] = []
        plain = {key for key in node if key.isidentifier() and not keyword.iskeyword(key) and not key.startswith("_")}
        for number, (key, value) in enumerate(node.items()):
            # The key itself when it makes a plain attribute name, else a numbered one.
            attribute = key if key in plain else f"key_{number}"
            while attribute != key and attribute in plain:
                attribute += "_"
            attributes[(*path, key)] = attribute
            if value is None:
                kind: Any = object
                default: Any = msgspec.UNSET
            elif isinstance(value, dict) and not path and key in cached:
                objects[key] = struct(value, (key,))
                kind, default = msgspec.Raw, msgspec.Raw()  # empty: the line lacks the key
            elif isinstance(value, dict):
                kind, default = struct(value, (*path, key)) | None, None
            else:
                kind = _NUMBER_VALUE if value.field == "ts" or value.field in FAST else _TEXT_VALUE
                default = None
            members.append((attribute, kind, msgspec.field(default=default, name=key)))
        return msgspec.defstruct(f"Line_{len(attributes)}", members, gc=False, module=__name__)

    return struct(tree, ()), attributes, objects


def _cached_objects(leaves: Sequence[Leaf], fillers: dict[str, int]) -> set[str]:
    """The top-level objects of a JSON line read through a cache of their raw text (see
    :func:`_object_reader`): those whose values repeat together from line to line, as a token's
    claims or the app's peer do. An object whose value changes with each request (a time, an id,
    a path, a size, a duration, an address with its port: a converted value, unless its leaf
    ``repeats``) would only fill the cache; an object holding another object, or a field another
    leaf fills too, is read plainly."""
    by_object: dict[str, list[Leaf]] = {}
    for leaf in leaves:
        if len(leaf.path) >= 2:
            by_object.setdefault(str(leaf.path[0]), []).append(leaf)
    return {
        key for key, members in by_object.items()
        if all(len(leaf.path) == 2 and (leaf.convert is None or leaf.repeats) and fillers[leaf.field] == 1
               and leaf.field not in _PER_REQUEST_FIELDS for leaf in members)
    }  # fmt: skip


# Fields whose values differ from request to request (or nearly so): an object holding one is
# not worth a cache of its raw text.
_PER_REQUEST_FIELDS = frozenset({
    "ts", "request_id", "path", "bytes_received", "bytes_sent", "duration_ms", "upstream_service_time_ms",
})  # fmt: skip


def _object_reader(
    key: str,
    members: Sequence[tuple[int, Leaf]],
    struct: type[msgspec.Struct],
    absent: Absent,
    names: dict[str, Any],
    attributes: dict[tuple[str | int, ...], str],
) -> tuple[Callable[[bytes], tuple[Any, ...] | None], Callable[[bytes], tuple[Any, ...] | None]]:
    """The cache of a top-level object's raw JSON (its ``get``) and what reads one it lacks:
    the typed values of ``members`` (their fields' defaults where absent), or ``None`` when
    the object does not decode or a value does not type (the general path reads the line).

    The same raw text always reads to the same values: they depend on nothing else of the line.
    Bounded like a :class:`Run`'s cache (entries, and the length of a text kept)."""
    cache: dict[bytes, tuple[Any, ...]] = {}
    fields = [leaf.field for _, leaf in members]
    lines = [
        "def read(raw):",
        "    try:",
        "        h = decode(raw)",
        "    except (DecodeError, RecursionError):",  # not an object (the line's Struct took any value)
        "        return None",
        *(f"    f_{field} = {_DEFAULTS[field]!r}" for field in fields),
        "    if h is not None:",
        "        try:",
    ]
    for index, leaf in members:
        lines += _leaf_lines(index, leaf, absent, "            ", names, attributes.get(leaf.path))
    lines += [
        "        except InvalidValueError:",
        "            return None",
        f"    values = ({', '.join(f'f_{field}' for field in fields)},)",
        "    if len(raw) <= RUN_CACHE_MAX_CHARS:",
        "        if len(cache) >= RUN_CACHE_ENTRIES:",
        "            cache.clear()",
        "        cache[raw] = values",
        "    return values",
    ]
    scope: dict[str, Any] = {}
    own = {**names, "decode": msgspec.json.Decoder(struct | None).decode, "DecodeError": msgspec.DecodeError,
           "cache": cache, "RUN_CACHE_MAX_CHARS": RUN_CACHE_MAX_CHARS, "RUN_CACHE_ENTRIES": RUN_CACHE_ENTRIES}  # fmt: skip
    exec(compile("\n".join(lines), f"<fused reader of {key!r}>", "exec"), own, scope)  # noqa: S102 (our own text)
    read: Callable[[bytes], tuple[Any, ...] | None] = scope["read"]
    return cache.get, read


def _leaf_lines(
    index: int, leaf: Leaf, absent: Absent, indent: str, names: dict[str, Any], attribute: str | None = None
) -> list[str]:
    key = leaf.path[-1]
    field = leaf.field
    if attribute is not None:  # a Struct decoded from the line: its value is already of its field's JSON type
        read = f"h.{attribute}"
        text = field != "ts" and field not in FAST  # typed _TEXT_VALUE
    else:
        read = f"h[{key}]" if type(key) is int else f"h.get({key!r})"
        text = type(key) is int  # a regex group: text, or None
    lines = [f"{indent}x = {read}"]
    if field in TYPED and not text and leaf.convert is None:
        # A typed JSON number in range first: it is its own value (as the tests below would find),
        # without comparing a number to "" and "-".
        for number, (condition, value) in enumerate(TYPED[field]):
            lines += [f"{indent}{'elif' if number else 'if'} {condition}:", f"{indent}    f_{field} = {value}"]
        lines.append(f"{indent}elif {absent.test(text)}:")
    else:
        lines.append(f"{indent}if {absent.test(text)}:")
    inner = indent + "    "
    if leaf.scalar_only and attribute is None:  # a Struct's field never holds an object, a list or a bool
        lines.append(f"{inner}if type(x) is dict or type(x) is list or type(x) is bool:")
        lines.append(f"{inner}    return None")
    if leaf.convert is not None:
        names[f"convert_{index}"] = leaf.convert
        lines.append(f"{inner}x = convert_{index}(x)")
        text = False  # whatever the conversion returns
        if field != "ts":
            lines.append(f"{inner}if x is not None:")
            inner += "    "
    if field == "ts":
        lines.append(f"{inner}t = x")
        return lines
    if field in SHARED_TEXT_FIELDS:
        lines.append(f"{inner}f_{field} = intern(x)" + ("" if text else " if type(x) is str else _to_str(x)"))
    elif field in _TEXT_FIELDS:
        lines.append(f"{inner}f_{field} = x" + ("" if text else " if type(x) is str else _to_str(x)"))
    elif field in FAST:
        names[f"coerce_{field}"] = _COERCE[field]
        convert, longest = FROM_DIGITS[field]
        if text and leaf.digits and field in IN_RANGE_FROM_DIGITS:
            lines.append(f"{inner}f_{field} = {convert} if len(x) <= {longest} else coerce_{field}(x)")
        else:
            digits = "" if text and leaf.digits else ("" if text else "type(x) is str and ") + "x.isdecimal() and "
            lines.append(f"{inner}if {digits}len(x) <= {longest}:")
            lines.append(f"{inner}    x = {convert}")
            lines.append(f"{inner}f_{field} = {FAST[field]} else coerce_{field}(x)")
    else:
        names[f"coerce_{field}"] = _COERCE[field]
        lines.append(f"{inner}f_{field} = coerce_{field}(x)")
    return lines


def _stored_lines(leaf: Leaf, indent: str) -> list[str]:
    """A regex group stored in its field as it is: text, or None (absent)."""
    target = "t" if leaf.field == "ts" else f"f_{leaf.field}"
    if leaf.field not in SHARED_TEXT_FIELDS:
        return [f"{indent}{target} = h[{leaf.path[0]}]"]
    return [f"{indent}x = h[{leaf.path[0]}]", f"{indent}{target} = intern(x) if x is not None else None"]
