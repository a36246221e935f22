"""The typed values that flow between the pipeline's stages.

source -> RawRecord -> parse -> Event | DeadLetter -> correlate -> Transaction

Every value is immutable. Times are float seconds since the Unix epoch (UTC):
cheap to compare on the hot path, and turned into ISO 8601 only at the edges.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated

import msgspec


class Dataset(StrEnum):
    """Which side of a request a record was written by (or, for dead letters only, gatewatch itself)."""

    GATEWAY = "envoy.access"
    APP = "billing.app"
    INTERNAL = "gatewatch.internal"  # a message of serve's internal topics that did not decode


MAX_TS_SECS = 1e15
"""Event times beyond this (either way) are refused where events are decoded (:mod:`ingest.codec`): a
forged row could otherwise carry inf or NaN, which the pipeline's per-second ticks cannot step over."""


class Origin(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """Where a record came from: a file and the byte offset of its line, or a topic-partition and offset.

    ``stream`` names one ordered input (``file:<fingerprint of its first line>``, see
    :mod:`ingest.sources.fingerprint`, or ``gw-gateway/3``); ``offset`` is the record's position in it. Together they identify the record,
    so ids derived from them are stable across re-reads. Hashable: origins are dict keys.

    A msgspec Struct, like :class:`Event` and for its reasons: built in C (a
    frozen dataclass sets each field through ``object.__setattr__``; one Origin is
    built for every line read), and not tracked by the garbage collector.
    ``array_like``: on serve's internal topics it travels as ``[dataset, stream, offset]``.
    """

    dataset: Dataset
    stream: str
    offset: Annotated[int, msgspec.Meta(ge=0)]


class RawRecord(msgspec.Struct, frozen=True, gc=False):
    """One undecoded log line, as a source read it; a Struct for the reasons :class:`Origin` gives.

    ``created`` is when the container runtime wrote the line (Docker's
    ``time``, CRI's leading timestamp), when the line came wrapped in one.

    ``id_origin``: where the record entered gatewatch when that is not ``origin``
    (a batch posted to HTTP ingest or a file ``serve --follow`` tails, then read
    back from Kafka). Ids derive from it, so a record produced twice is stored
    once; ``origin`` stays the Kafka position, which ordering and offsets need.
    """

    origin: Origin
    line: bytes
    created: float | None = None
    id_origin: Origin | None = None


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A record that could not be parsed, kept with a low-cardinality reason.

    Reasons: ``invalid_utf8``, ``truncated``, ``oversized``, ``format_mismatch``,
    ``invalid_json``, ``invalid_value``, ``out_of_range``, ``not_an_object``, ``missing_timestamp``,
    ``store_rejected`` (a search node refused the document), and for a message
    of an internal topic (dataset ``gatewatch.internal``) ``undecodable``,
    ``unknown_version`` or ``unknown_kind``.
    """

    origin: Origin
    reason: str
    detail: str
    line: bytes

    @property
    def id(self) -> str:
        return record_id(self.origin)


def record_id(origin: Origin) -> str:
    """Deterministic id of the record at ``origin``: a replay writes the same id again.

    A hash of the input's name, then the offset in hex: unique per record and
    cheap, since consecutive records share their input.
    """
    # One dict lookup by the stream's name (an lru_cache keyed by both hashed a tuple per call: twice the cost).
    known = _STREAM_KEYS.get(origin.stream)
    if known is None or known[0] is not origin.dataset:
        known = _stream_key(origin.dataset, origin.stream)
    return f"{known[1]}-{origin.offset:x}"


_STREAM_KEYS: dict[str, tuple[Dataset, str]] = {}  # stream -> (its dataset, its hash); at most 4,096 streams


def _stream_key(dataset: Dataset, stream: str) -> tuple[Dataset, str]:
    if len(_STREAM_KEYS) >= 4096:
        _STREAM_KEYS.clear()
    digest = hashlib.blake2b(f"{dataset}\x1f{stream}".encode(), digest_size=8).hexdigest()
    known = _STREAM_KEYS[stream] = (dataset, digest)
    return known


class Event(msgspec.Struct, frozen=True, array_like=True, gc=False):
    """One parsed and normalized log record, from the gateway or from the app.

    Frozen: nothing assigns to an event after :func:`ingest.normalize.normalize`
    built it. A msgspec Struct rather than a dataclass: its ``__init__`` is C
    (measured with 37 positional arguments: a slots dataclass's, Python setting
    each attribute, cost 2x as much, a frozen one's, through ``object.__setattr__``,
    16x; an event is built at parse, and in serve again from each internal
    message that carries it), and ``gc=False`` keeps
    the garbage collector from tracking or rescanning the hundreds of thousands
    of events the reorder buffer and the join hold (an event holds strings,
    numbers and tuples of strings: it can never be part of a cycle).
    ``msgspec.structs`` has its ``fields`` and ``replace``.

    ``source_ip`` is the client the writer saw: for the gateway the downstream
    client (Envoy's remote address, else the first X-Forwarded-For hop); for the
    app the peer that connected to it (for proxied requests, the gateway pod).
    ``peer_identity`` is the mTLS identity of that peer (URI SAN / SPIFFE id).
    Fields a format does not carry are ``None``. ``created`` is the container
    runtime's timestamp of the line (ECS ``event.created``), when it had one.

    ``array_like``: serve's internal topics and checkpoints carry an event as the
    array of its values (:mod:`ingest.codec`), which msgspec encodes and decodes
    in C, straight from and into this class. The annotations bound what a
    decoded event may hold; building one checks nothing.
    """

    id: str
    dataset: Dataset
    ts: Annotated[float, msgspec.Meta(ge=-MAX_TS_SECS, le=MAX_TS_SECS)]
    origin: Origin
    request_id: str | None = None
    method: str | None = None
    path: str | None = None
    protocol: str | None = None
    status: int | None = None
    response_flags: tuple[str, ...] = ()
    response_code_details: str | None = None
    bytes_received: int | None = None
    bytes_sent: int | None = None
    duration_ms: float | None = None
    upstream_service_time_ms: float | None = None
    upstream_host: str | None = None
    upstream_cluster: str | None = None
    route_name: str | None = None
    authority: str | None = None
    user_agent: str | None = None
    forwarded_for: str | None = None
    source_ip: str | None = None
    peer_identity: str | None = None
    tls_version: str | None = None
    user_id: str | None = None
    org_id: str | None = None
    action: str | None = None
    outcome: str | None = None
    level: str | None = None
    message: str | None = None
    token_jti: str | None = None
    token_sub: str | None = None
    token_org: str | None = None
    token_exp: float | None = None
    token_iat: float | None = None
    labels: tuple[tuple[str, str], ...] = ()
    created: float | None = None

    @property
    def is_gateway(self) -> bool:
        return self.dataset is Dataset.GATEWAY

    def label(self, name: str) -> str | None:
        """The value of label ``name``, if the event has it."""
        for key, value in self.labels:
            if key == name:
                return value
        return None


MAX_REQUEST_MS = 86_400_000.0
"""The longest request a record's duration counts for (a day): the join waits for a gateway record's end, the
token rules date a Billing line back by its duration, at most this."""

AMBIGUOUS_CLIENTS_LABEL = "gatewatch.ambiguous_clients"
"""A gateway event without a client address whose line read two ways (a client header held ``" "``): the addresses
its readings give (:meth:`ingest.parsers.envoy_text.TextPattern._absorbed`), comma-separated."""


@dataclass(slots=True, init=False)
class Transaction:
    """All records of one request id: the gateway's attempts and the app's lines.

    ``gateway`` holds one event per attempt (Envoy retries log one line each);
    either side may be empty: a gateway-only transaction is normal for a request
    the gateway rejected, an app-only one means the app served a request the
    gateway never saw.

    Treated as immutable, but not ``frozen``: a frozen dataclass sets each field
    through ``object.__setattr__``, which made building one cost twice what it
    does now, once per request. Nothing assigns to a transaction after it was built.

    Its ``__init__`` is written out (``init=False``): it sets the three fields and no more.
    The :attr:`id` is hashed when it is first read, by a sink or a test: a replay that
    stores nothing never reads it, and the hash (~1 µs a request, most of it reading the
    records' ids back from memory long after they were parsed) was a fifth of ordering
    and correlating. Being derived from the three fields, it takes no part in
    comparisons.
    """

    request_id: str
    gateway: tuple[Event, ...]
    app: tuple[Event, ...]
    _id: str | None = field(default=None, repr=False, compare=False)

    def __init__(self, request_id: str, gateway: tuple[Event, ...], app: tuple[Event, ...]) -> None:
        self.request_id = request_id
        self.gateway = gateway
        self.app = app
        self._id = None

    @property
    def id(self) -> str:
        """The transaction's deterministic id (:func:`transaction_id`), hashed once, when first read."""
        txn_id = self._id
        if txn_id is None:
            txn_id = self._id = transaction_id(self.request_id, self.gateway, self.app)
        return txn_id

    @property
    def kind(self) -> str:
        if self.gateway and self.app:
            return "joined"
        return "gateway_only" if self.gateway else "app_only"

    # The two sides are walked one after the other rather than concatenated:
    # rules and sinks read these several times per transaction.

    @property
    def first_ts(self) -> float:
        first = (self.gateway or self.app)[0].ts
        for side in (self.gateway, self.app):
            for event in side:
                if event.ts < first:
                    first = event.ts
        return first

    @property
    def last_ts(self) -> float:
        last = (self.gateway or self.app)[0].ts
        for side in (self.gateway, self.app):
            for event in side:
                if event.ts > last:
                    last = event.ts
        return last

    @property
    def client_ip(self) -> str | None:
        """The client address: what the gateway saw, else the peer the app saw."""
        for event in self.gateway:
            if event.source_ip:
                return event.source_ip
        for event in self.app:
            if event.source_ip:
                return event.source_ip
        return None

    @property
    def gateway_status(self) -> int | None:
        """The status the gateway answered on its last attempt."""
        return self.gateway[-1].status if self.gateway else None

    @property
    def app_status(self) -> int | None:
        """The last status the app logged for the request."""
        for event in reversed(self.app):  # a loop, not next() of a generator: sinks read it per transaction
            if event.status is not None:
                return event.status
        return None

    def first(self, attribute: str) -> object | None:
        """The first non-empty value of ``attribute`` over gateway, then app records."""
        for side in (self.gateway, self.app):
            for event in side:
                value: object = getattr(event, attribute)
                if value is not None:
                    return value
        return None


def transaction_id(request_id: str, gateway: tuple[Event, ...], app: tuple[Event, ...]) -> str:
    """Deterministic id of the transaction of these records: the request id and its records' ids, hashed.

    The ids are hashed sorted, so the id does not depend on the order the
    records were joined in. Hashing the request id and the joined ids in one
    update hashes the same bytes as one update per id did.
    """
    if len(gateway) == 1 and len(app) == 1:  # most requests: sort two ids without building a list
        first, second = gateway[0].id, app[0].id
        ids = first + second if first <= second else second + first
    else:
        ids = "".join(sorted([e.id for e in gateway] + [e.id for e in app]))
    digest = _TRANSACTION_HASH.copy()
    digest.update((request_id + ids).encode())
    return digest.hexdigest()


# An empty 12-byte blake2b, copied for each transaction: building one from its parameters costs a
# third more than copying one, and the digest is the same as ``hashlib.blake2b(data, digest_size=12)``.
_TRANSACTION_HASH = hashlib.blake2b(digest_size=12)
