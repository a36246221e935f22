"""The one table of Envoy command operators gatewatch reads, and how each is read.

A row maps an operator to the :class:`~ingest.records.Event` field it fills and
the :class:`Kind` of text it writes; both the text and the JSON parsers compile
from these rows. An operator with no row is kept as a label named after it
(``%UPSTREAM_LOCAL_ADDRESS%`` -> ``upstream_local_address``,
``%REQ(X-TENANT)%`` -> ``req.x-tenant``), so a new format never fails to
compile for naming an operator gatewatch does not know.

Kept as labels on purpose (checked against Envoy's operator list): other
durations and byte counts (``REQUEST_DURATION``, ``UPSTREAM_WIRE_BYTES_SENT``,
...: ``DURATION`` and ``BYTES_*`` are the fields rules read); local and
direct-peer addresses and ports (the client is ``DOWNSTREAM_REMOTE_ADDRESS``,
the upstream ``UPSTREAM_HOST``, which ``UPSTREAM_REMOTE_ADDRESS`` repeats);
TLS details other than the peer's URI SAN and the version; metadata and
filter state outside jwt_authn's payload; ``START_TIME_LOCAL`` and
``EMIT_TIME`` (not when the request started, and local time has no offset);
and diagnostics (``CONNECTION_TERMINATION_DETAILS``,
``UPSTREAM_TRANSPORT_FAILURE_REASON``, ``REQUESTED_SERVER_NAME``,
``GRPC_STATUS``, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, NamedTuple

import orjson

from ingest.addresses import client_address
from ingest.errors import FormatError
from ingest.parsers.envoy_format import Command
from ingest.parsers.envoy_time import DEFAULT_START_TIME, compile_start_time
from ingest.records import Event


class Kind(Enum):
    """How an operator's value looks in a text line: ``(unquoted, quoted, cut short)`` regexes.

    The third fragment matches a value cut off by the end of a truncated line.
    No fragment has a capturing group, nor matches Envoy's ``-`` for "not set"
    specially: the text compiler adds that alternative.
    """

    NUMBER = (r"\d+", r"\d+", r"\d*")
    TEXT = (r"\S+", r'[^"]*', r"\S*")
    TIME = (DEFAULT_START_TIME, DEFAULT_START_TIME, r"[\dT:.+\-Z]*")
    # Dynamic metadata prints objects as JSON, quotes and all.
    JSON = (r"\{.*?\}|\S+", r'\{.*?\}|[^"]*', r".*")


Apply = Callable[[str, Any, dict[str, Any]], None]
"""Per-line reader for a value that needs more than a copy: ``(field, value, fields)``."""


class Operator(NamedTuple):
    """A row: the Event field filled (``None``: a label named after the operator)."""

    field: str | None
    kind: Kind = Kind.TEXT
    apply: Apply | None = None


class Converted:
    """An :data:`Apply` storing ``convert(value)`` under the slot's field (fused JSON readers call ``convert``)."""

    __slots__ = ("convert",)

    def __init__(self, convert: Callable[[Any], Any]) -> None:
        self.convert = convert

    def __call__(self, field: str, value: Any, fields: dict[str, Any]) -> None:
        converted = self.convert(value)
        if converted is not None:  # None: no value (a path as a client address), as the fused readers skip it
            fields[field] = converted


# Envoy's long response flag names (RESPONSE_FLAGS_LONG), stored as the short
# codes so detectors see one spelling; unknown (custom) flags are kept as logged.
LONG_FLAGS: dict[str, str] = {
    "DownstreamConnectionTermination": "DC",
    "FailedLocalHealthCheck": "LH",
    "NoHealthyUpstream": "UH",
    "UpstreamRequestTimeout": "UT",
    "LocalReset": "LR",
    "UpstreamRemoteReset": "UR",
    "UpstreamConnectionFailure": "UF",
    "UpstreamConnectionTermination": "UC",
    "UpstreamOverflow": "UO",
    "UpstreamRetryLimitExceeded": "URX",
    "NoRouteFound": "NR",
    "DelayInjected": "DI",
    "FaultInjected": "FI",
    "RateLimited": "RL",
    "UnauthorizedExternalService": "UAEX",
    "RateLimitServiceError": "RLSE",
    "StreamIdleTimeout": "SI",
    "InvalidEnvoyRequestHeaders": "IH",
    "DownstreamProtocolError": "DPE",
    "UpstreamMaxStreamDurationReached": "UMSDR",
    "ResponseFromCacheFilter": "RFCF",
    "NoFilterConfigFound": "NFCF",
    "DurationTimeout": "DT",
    "UpstreamProtocolError": "UPE",
    "NoClusterFound": "NC",
    "OverloadManagerTerminated": "OM",
    "DnsResolutionFailed": "DF",
    "DropOverload": "DO",
    "DownstreamRemoteReset": "DR",
    "UnconditionalDropOverload": "UDO",
}


FORWARDED_FOR_TRUNCATED_LABEL = "gatewatch.forwarded_for_truncated"
"""The label holding an X-Forwarded-For that reached its format's length limit, as logged
(see :class:`CutForwardedFor`)."""


class CutForwardedFor:
    """An :data:`Apply` for ``%REQ(X-FORWARDED-FOR):N%``: a value as long as ``N`` bytes may have been cut.

    Envoy cuts a value's end, and the end of X-Forwarded-For is where the entries proxies
    appended sit; what is left is what the client wrote, so a client that pads the header
    would choose its own address. Such a value is kept only as the label
    :data:`FORWARDED_FOR_TRUNCATED_LABEL`: the event names no client from it. A shorter value
    is the whole header, read as usual.
    """

    __slots__ = ("max_length",)

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length

    def __call__(self, field: str, value: Any, fields: dict[str, Any]) -> None:
        text = value if isinstance(value, str) else str(value)
        if len(text.encode("utf-8", "replace")) >= self.max_length:  # Envoy counts bytes
            fields[FORWARDED_FOR_TRUNCATED_LABEL] = text
        else:
            fields[field] = value


def short_flags(value: Any) -> str:
    """``UpstreamConnectionFailure,UpstreamRetryLimitExceeded`` -> ``UF,URX``."""
    return ",".join(LONG_FLAGS.get(flag, flag) for flag in str(value).split(","))


OPERATORS: dict[str, Operator] = {
    "START_TIME": Operator("ts", Kind.TIME),
    "PROTOCOL": Operator("protocol"),
    "RESPONSE_CODE": Operator("status", Kind.NUMBER),
    "RESPONSE_FLAGS": Operator("response_flags"),
    "RESPONSE_FLAGS_LONG": Operator("response_flags", apply=Converted(short_flags)),
    "RESPONSE_CODE_DETAILS": Operator("response_code_details"),
    "BYTES_RECEIVED": Operator("bytes_received", Kind.NUMBER),
    "BYTES_SENT": Operator("bytes_sent", Kind.NUMBER),
    "DURATION": Operator("duration_ms", Kind.NUMBER),
    "UPSTREAM_HOST": Operator("upstream_host"),
    "UPSTREAM_CLUSTER": Operator("upstream_cluster"),
    # The cluster's own name, never alt_stat_name: what Istio's default formats log.
    "UPSTREAM_CLUSTER_RAW": Operator("upstream_cluster"),
    "ROUTE_NAME": Operator("route_name"),
    # A unix socket's path or a pipe is no client address: the client is then read from X-Forwarded-For.
    "DOWNSTREAM_REMOTE_ADDRESS": Operator("source_ip", apply=Converted(client_address)),
    "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT": Operator("source_ip", apply=Converted(client_address)),
    # The TCP peer, not the client: Envoy may have taken the remote address from XFF.
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS": Operator(None),
    "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": Operator(None),
    "DOWNSTREAM_PEER_URI_SAN": Operator("peer_identity"),
    "DOWNSTREAM_TLS_VERSION": Operator("tls_version"),
}
"""Operators without an argument (and START_TIME's default form)."""

HEADERS: dict[tuple[str, str], str] = {
    ("REQ", ":method"): "method",
    # The path as the client sent it, before a rewrite, with the alternatives either way round. (The
    # original path alone, "-" unless rewritten, stays a label beside a format's %REQ(:PATH)%.)
    ("REQ", "x-envoy-original-path?:path"): "path",
    ("REQ", ":path?x-envoy-original-path"): "path",
    ("REQ", ":path"): "path",
    ("REQ", "x-request-id"): "request_id",
    ("REQ", ":authority"): "authority",
    ("REQ", "host"): "authority",  # Envoy serves Host from :authority
    ("REQ", ":authority?host"): "authority",
    ("REQ", "host?:authority"): "authority",
    ("REQ", "user-agent"): "user_agent",
    ("REQ", "x-forwarded-for"): "forwarded_for",
    ("RESP", "x-envoy-upstream-service-time"): "upstream_service_time_ms",
}
"""``%REQ(X)%`` / ``%RESP(X)%`` / ``%TRAILER(X)%`` by (operator, header lowercased) -> field."""

JWT_NAMESPACE = "envoy.filters.http.jwt_authn"
JWT_CLAIMS: dict[str, str] = {
    "jti": "token_jti",
    "sub": "token_sub",
    "org": "token_org",
    "org_id": "token_org",
    "exp": "token_exp",
    "iat": "token_iat",
}
"""JWT claim -> field, for ``%DYNAMIC_METADATA(envoy.filters.http.jwt_authn:<payload>[:<claim>])%``."""

HEADER_OPERATORS = {
    "REQ": "REQ", "RESP": "RESP", "TRAILER": "TRAILER",
    # Envoy 1.37's full names (Cilium's Gateway default format uses them): the same operators.
    "REQUEST_HEADER": "REQ", "RESPONSE_HEADER": "RESP", "RESPONSE_TRAILER": "TRAILER",
}  # fmt: skip
"""Header operator as written -> the short name fields and labels are known by."""
_EVENT_FIELDS = frozenset(Event.__struct_fields__)


@dataclass(frozen=True, slots=True)
class Slot:
    """One compiled operator: which field its value fills and how to find and read it."""

    command: str
    field: str
    kind: Kind
    apply: Apply | None = None
    pattern: str | None = None  # replaces the kind's fragments (START_TIME with a strftime)
    is_label: bool = False

    def fragment(self, quoted: bool) -> str:
        """The regex matching this operator's value, enclosed in double quotes or not."""
        if self.pattern is not None:
            return self.pattern
        return self.kind.value[1] if quoted else self.kind.value[0]

    @property
    def partial(self) -> str:
        """The regex matching this operator's value cut short by the end of the line."""
        return r"[\w:./+\- ]*" if self.pattern is not None else self.kind.value[2]


def resolve(command: Command) -> Slot:
    """The slot for ``command``; raises ``ValueError`` for a malformed argument."""
    name, arg = command.name, command.arg
    if name in HEADER_OPERATORS:
        name = HEADER_OPERATORS[name]
        header = _header(command)
        field = HEADERS.get((name, header))
        if field is None:
            return Slot(command.text, _label(f"{name.lower()}.{header}"), Kind.TEXT, is_label=True)
        if field == "forwarded_for" and command.max_length is not None:
            return Slot(command.text, field, Kind.TEXT, CutForwardedFor(command.max_length))
        return Slot(command.text, field, Kind.TEXT)
    if name in ("PATH", "REQ_WITHOUT_QUERY"):
        return _path(command)
    if name == "DYNAMIC_METADATA":
        return _metadata(command, _required(command))
    if name == "METADATA" and (arg or "").startswith("DYNAMIC:"):
        return _metadata(command, (arg or "")[len("DYNAMIC:"):])
    if name == "START_TIME" and arg:
        try:
            pattern, read = compile_start_time(arg)
        except ValueError as error:
            raise FormatError(f"format: {error} at position {command.position}") from None
        if read is None:  # no date (%H:%M:%S, %f): the time comes from the wrapper, if any
            return Slot(command.text, "start_time", Kind.TIME, None, pattern, is_label=True)
        return Slot(command.text, "ts", Kind.TIME, Converted(read), pattern)
    operator = OPERATORS.get(name)
    if operator is None or operator.field is None:
        label = name.lower() if arg is None else f"{name.lower()}.{arg.lower()}"
        return Slot(command.text, _label(label), Kind.TEXT, is_label=True)
    return Slot(command.text, operator.field, operator.kind, operator.apply)


def jwt_claims(field: str, value: Any, fields: dict[str, Any]) -> None:
    """Fill token fields from a JWT payload logged as a JSON object.

    A payload that is not an object (cut by ``:Z``, say) is kept as a label.
    """
    payload = value
    if isinstance(value, str):
        try:
            payload = orjson.loads(value)
        except orjson.JSONDecodeError:
            payload = None
    if not isinstance(payload, dict):
        fields[field] = value if isinstance(value, str) else orjson.dumps(value).decode()
        return
    claims = _claims(payload)
    if not claims:  # the whole namespace: {"<payload key>": {claims}}
        for nested in payload.values():
            if isinstance(nested, dict) and (claims := _claims(nested)):
                break
    fields.update(claims)


def _claims(payload: dict[str, Any]) -> dict[str, Any]:
    return {
        JWT_CLAIMS[claim]: value
        for claim, value in payload.items()
        if claim in JWT_CLAIMS and isinstance(value, (str, int, float)) and not isinstance(value, bool)
    }


class ScalarClaim:
    """A JWT claim: a scalar fills the slot's field; an object, a list or a bool becomes ``label``.

    typed_json_format renders a structured claim (``{"id": ..}``) as an object:
    not a token field, but no reason to lose the record either.
    """

    __slots__ = ("label",)

    def __init__(self, label: str) -> None:
        self.label = label

    def __call__(self, field: str, value: Any, fields: dict[str, Any]) -> None:
        if isinstance(value, (dict, list, bool)):
            fields[self.label] = orjson.dumps(value).decode()
        else:
            fields[field] = value


_PATH_OPTIONS = (frozenset({"", "WQ", "NQ"}), frozenset({"", "ORIG", "PATH", "ORIG_OR_PATH"}))
"""``%PATH(X:Y)%``'s options as Envoy accepts them: with or without the query; original path, :path, or either."""


def _path(command: Command) -> Slot:
    """``%PATH(X:Y)%`` (Envoy >= 1.33) and ``%REQ_WITHOUT_QUERY(H?A)%``: the path, with or without its
    query string; without it, it is still the path rules read. Options Envoy would refuse, or
    REQ_WITHOUT_QUERY of another header, keep the value as a label."""
    if command.name == "REQ_WITHOUT_QUERY":
        header = _header(command)
        if HEADERS.get(("REQ", header)) == "path":
            return Slot(command.text, "path", Kind.TEXT)
        return Slot(command.text, _label(f"req_without_query.{header}"), Kind.TEXT, is_label=True)
    query, _, source = (command.arg or "").partition(":")
    if query in _PATH_OPTIONS[0] and source in _PATH_OPTIONS[1]:
        return Slot(command.text, "path", Kind.TEXT)
    return Slot(command.text, _label(f"path.{(command.arg or '').lower()}"), Kind.TEXT, is_label=True)


def _metadata(command: Command, arg: str) -> Slot:
    namespace, _, path = arg.partition(":")
    keys = path.split(":") if path else []
    label = _label(f"{command.name.lower()}.{arg.lower()}")
    if namespace == JWT_NAMESPACE:
        if len(keys) >= 2 and keys[-1] in JWT_CLAIMS:
            return Slot(command.text, JWT_CLAIMS[keys[-1]], Kind.TEXT, ScalarClaim(label))
        if len(keys) <= 1:
            return Slot(command.text, label, Kind.JSON, jwt_claims, is_label=True)
    return Slot(command.text, label, Kind.JSON, is_label=True)


def _header(command: Command) -> str:
    header = _required(command).lower()
    names = header.split("?")
    if len(names) > 2 or not all(names):
        raise FormatError(
            f"format: {command.text} at position {command.position}: expected HEADER or HEADER?ALTERNATIVE"
        )
    return header


def _required(command: Command) -> str:
    if not command.arg:
        raise FormatError(f"format: {command.name} at position {command.position} needs an argument")
    return command.arg


def _label(name: str) -> str:
    # A label must never be read back as an Event field by normalize().
    return f"envoy.{name}" if name in _EVENT_FIELDS else name
