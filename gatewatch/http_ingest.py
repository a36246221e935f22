"""HTTP ingest for ``gatewatch serve``: shippers POST batches, answered once Kafka (or the store) holds them.

``POST /v1/ingest/{gateway|app}`` on ``--listen``::

    Authorization: Bearer TOKEN       sha256(TOKEN) hex must be in http_ingest.tokens.<source>
    Content-Encoding: gzip            optional; several members (``cat a.gz b.gz``) are one body
    Idempotency-Key: KEY              optional, [A-Za-z0-9._-]{1,128}; the batch id is KEY.<sha256 of the
                                      gunzipped body, 16 hex digits>, else that sha256 (32 digits)
    body                              a JSON array (Fluent Bit ``format json``, Fluentd ``out_http`` with
                                      ``json_array true``) or one JSON value a line (NDJSON, Fluent Bit
                                      ``format json_lines``); a record is an object (the shipper's record,
                                      its log line under ``http_ingest.unwrap.<source>``) or a string (the line;
                                      one holding newlines is that many lines)

Answers (JSON): 200 ``{accepted, batch_id}``; 400 the same plus ``invalid_lines`` (1-based line numbers,
or element numbers of an array) whose records did not decode: they are produced too, as sent, and
parsed as any line (a text line is read, else a dead letter), the rest is accepted; 400 (nothing
taken) for gzip that does not decode to its end; 401 without a valid token; 408 for a body not read
in ``BODY_READ_SECS``; 413 over ``max_body_bytes`` or more records than ``max_in_flight_bytes`` holds;
415 for msgpack; 429 over ``max_in_flight_bytes``;
503 when Kafka does not acknowledge in ``produce_timeout_secs``. 429 and 503 carry ``Retry-After``.

Every record is produced to the source's input topic with acks from all in-sync
replicas, keyed by its request id when the record is a JSON object that has it
(app records, JSON gateway formats, also when the line comes as a string; text
access-log lines go unkeyed). The
header ``gatewatch-origin: http:<source>:<batch id>:<n>`` (sealed with the redaction key when
there is one, ``gatewatch-origin-seal``) gives it its id
downstream (:func:`ingest.sources.kafka.header_origin`), so a batch posted again
(a shipper's retry) overwrites itself in the store instead of being stored twice;
a batch already acknowledged by this process is answered 200 again without
producing it twice.

:class:`HttpIngestEndpoint` is everything up to the durable point; :class:`HttpIngest`
produces to Kafka, and :class:`LocalHttpIngest` feeds serve's own pipeline
(:class:`gatewatch.serve_local.LocalPipeline`) when no Kafka is configured (answered once stored and logged; 503 while the
store is down).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastapi import Request
from fastapi.responses import JSONResponse
from kafka import KafkaProducer
from kafka.errors import KafkaError, MessageSizeTooLargeError

from gatewatch.http_body import (
    MAX_GZIP_MEMBERS, DecodedBatch, TooLargeError, TooManyMembersError, TooManyRecordsError, TrailingBytesError,
    decode_body, gunzip,
)  # fmt: skip
from ingest.parsers.app_json import DEFAULT_APP_FIELDS
from ingest.redact_key import origin_key
from ingest.sources.kafka import ORIGIN_HEADER, ORIGIN_SEAL_HEADER, origin_seal
from ingest.sources.kafka_settings import client_settings

if TYPE_CHECKING:
    from gatewatch.config import GatewatchConfig
    from gatewatch.serve_local import LocalPipeline

__all__ = [
    "HttpIngest", "HttpIngestEndpoint", "IngestAnswer", "InputMessage", "LocalHttpIngest", "UnpackedBatch",
    "add_ingest_off_route", "add_routes", "input_producer_settings", "produce_all", "request_id_paths",
]  # fmt: skip

log = logging.getLogger(__name__)

SOURCES = ("gateway", "app")
# The metrics' ``source`` label of a request to a path that is no source (answered 404).
_UNKNOWN_SOURCE = "unknown"
_BATCH_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")
_REMEMBERED_BATCHES = 10_000
RECORD_BYTES = 1024
"""What a record holds of ``max_in_flight_bytes`` until its batch is durable, apart from the body's bytes."""
BODY_READ_SECS = 60.0
"""A body not read whole in this is answered 408: a client that stops sending must not hold the budget."""
TOPIC_SAFE_RECORD_BYTES = 512 * 1024
"""What an input topic takes whatever its ``max.message.bytes`` (Kafka's default: 1 MB, compressed)."""
_RECORD_OVERHEAD_BYTES = 64 * 1024  # a record's key, headers and framing, beside its value


@dataclass(frozen=True, slots=True)
class IngestAnswer:
    """The HTTP status, JSON body and extra headers of one request's answer."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)


def request_id_paths(config: GatewatchConfig, source: str) -> tuple[str, ...] | None:
    """The dotted path of the request id in a JSON record of ``source``, or None (text lines: not read)."""
    if source == "app":
        dotted = {**DEFAULT_APP_FIELDS, **config.app.fields}.get("request_id")
        return tuple(dotted.split(".")) if dotted else None
    json_format = config.gateway.json_format
    if not json_format:
        return None
    for path, operator in _leaves(json_format, ()):
        if isinstance(operator, str) and operator.strip().upper() == "%REQ(X-REQUEST-ID)%":
            return path
    return None


def input_producer_settings(config: GatewatchConfig) -> dict[str, Any]:
    """What a producer to the input topics needs to carry a record of ``max_line_bytes`` whole (plus the byte
    that makes a longer one ``oversized``): a request that size, and lz4 so that it fits a topic's default
    1 MB ``max.message.bytes`` (log lines compress several times; lz4 costs little CPU)."""
    longest = max(config.gateway.max_line_bytes, config.app.max_line_bytes) + 1
    return {"max_request_size": longest + _RECORD_OVERHEAD_BYTES, "compression_type": "lz4"}


@dataclass(frozen=True, slots=True)
class InputMessage:
    """One record for an input topic: its value, key and ``gatewatch-origin`` header, and the key of its seal."""

    topic: str
    value: bytes
    key: bytes | None
    origin: bytes
    origin_key: bytes | None  # seals the origin (origin_key(config.redact)); None: no seal


def produce_all(producer: KafkaProducer, messages: list[InputMessage], deadline: float) -> int:
    """Produce ``messages`` and wait for every acknowledgement until ``deadline`` (monotonic); KafkaError if one fails.

    A record the broker refuses for its size (the topic's ``max.message.bytes`` is below it, even
    compressed) is produced again cut to :data:`TOPIC_SAFE_RECORD_BYTES`: downstream a dead letter with
    its start and origin, where it used to fail its whole batch on every retry. Returns how many were cut.
    """
    futures = [_send(producer, message) for message in messages]
    refused: list[InputMessage] = []
    for message, future in zip(messages, futures, strict=True):
        try:
            future.get(timeout=max(0.0, deadline - time.monotonic()))
        except MessageSizeTooLargeError:
            refused.append(message)
    cut = [InputMessage(m.topic, m.value[:TOPIC_SAFE_RECORD_BYTES], m.key, m.origin, m.origin_key) for m in refused]
    for future in [_send(producer, message) for message in cut]:
        future.get(timeout=max(0.0, deadline - time.monotonic()))
    for message in refused:
        log.warning("input_record_cut topic=%s bytes=%d kept=%d hint=\"the topic's max.message.bytes is below this "
                    "record: raise it to max_line_bytes\"", message.topic, len(message.value),
                    TOPIC_SAFE_RECORD_BYTES)  # fmt: skip
    return len(refused)


def _send(producer: KafkaProducer, message: InputMessage) -> Any:
    headers = [(ORIGIN_HEADER, message.origin)]
    if message.origin_key is not None:
        seal = origin_seal(message.origin_key, message.topic, message.origin, message.value)
        headers.append((ORIGIN_SEAL_HEADER, seal))
    return producer.send(message.topic, value=message.value, key=message.key, headers=headers)


def _leaves(mapping: dict[str, Any], prefix: tuple[str, ...]) -> Iterator[tuple[tuple[str, ...], Any]]:
    for key, value in mapping.items():
        if isinstance(value, dict):
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key), value


class _TokenCheck:
    """Bearer tokens per source, kept as sha256 digests and compared in constant time."""

    def __init__(self, tokens: Any) -> None:
        self._digests = {source: [bytes.fromhex(d) for d in getattr(tokens, source)] for source in SOURCES}

    def configured(self, source: str) -> bool:
        return bool(self._digests.get(source))

    def allows(self, source: str, authorization: str | None) -> bool:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return False
        presented = hashlib.sha256(token.strip().encode()).digest()
        allowed = False
        for digest in self._digests.get(source, ()):  # every one, so the time does not tell which matched
            allowed |= hmac.compare_digest(presented, digest)
        return allowed


class _Budget:
    """Bytes of bodies in flight; a request that would pass the limit is refused, never queued."""

    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0

    def take(self, size: int) -> bool:
        # Only the event loop's thread calls take/give: no lock needed.
        if self.used_bytes + size > self.limit_bytes and self.used_bytes > 0:
            return False
        self.used_bytes += size
        return True

    def give(self, size: int) -> None:
        self.used_bytes -= size


class _Held:
    """What one request holds of the budget: its body's bytes as they arrive, then what unpacking needs."""

    def __init__(self, budget: _Budget) -> None:
        self._budget = budget
        self.bytes = 0

    def grow(self, size: int) -> bool:
        if not self._budget.take(size):
            return False
        self.bytes += size
        return True

    def release(self) -> None:
        self._budget.give(self.bytes)
        self.bytes = 0


@dataclass(frozen=True, slots=True)
class UnpackedBatch:
    """A request body gunzipped and split into records, with the answer it gets once durable."""

    source: str
    batch_id: str
    batch: DecodedBatch
    body_bytes: int
    status: int  # 200, or 400 when some records did not decode
    answer: dict[str, Any]


class HttpIngestEndpoint:
    """What every HTTP ingest does before a batch is durable: tokens, limits, the in-flight budget, decoding.

    :meth:`handle` is called by the FastAPI route for each request (on the event
    loop); a subclass makes the batch durable in :meth:`_deliver` (Kafka:
    :class:`HttpIngest`; the local pipeline: :mod:`gatewatch.serve_local`).
    """

    def __init__(self, config: GatewatchConfig, metrics: Any) -> None:
        settings = config.http_ingest
        self.settings = settings
        self.metrics = metrics
        self._unwrap = {source: getattr(settings.unwrap, source) for source in SOURCES}
        self._max_line_bytes = {"gateway": config.gateway.max_line_bytes, "app": config.app.max_line_bytes}
        self._key_paths = {source: request_id_paths(config, source) for source in SOURCES}
        self._tokens = _TokenCheck(settings.tokens)
        self._budget = _Budget(settings.max_in_flight_bytes)

    def close(self) -> None:
        """Release what the endpoint holds (called once, after the HTTP server stopped)."""

    async def handle(self, source: str, headers: Callable[[str], str | None], chunks: Any) -> IngestAnswer:
        """Answer one POST: ``headers(name)`` reads a request header, ``chunks`` is the body's async iterator."""
        started = time.monotonic()
        answer = await self._handle(source, headers, chunks)
        # The path segment is the client's: anything but a known source is one label value, so
        # tokenless posts to /v1/ingest/<random> cannot grow the metric's label set.
        label = source if source in SOURCES else _UNKNOWN_SOURCE
        self.metrics.record_http_request(label, answer.status, time.monotonic() - started)
        return answer

    async def _handle(self, source: str, headers: Callable[[str], str | None], chunks: Any) -> IngestAnswer:
        if source not in SOURCES:
            return IngestAnswer(404, {"error": f"unknown source {source!r}: gateway or app"})
        if not self._tokens.configured(source):
            return IngestAnswer(404, {"error": ingest_off(source)})
        if not self._tokens.allows(source, headers("authorization")):
            return IngestAnswer(401, {"error": "missing or unknown bearer token"}, {"WWW-Authenticate": "Bearer"})
        content_type = (headers("content-type") or "").split(";")[0].strip().lower()
        if content_type in ("application/msgpack", "application/x-msgpack"):
            return IngestAnswer(415, {"error": "msgpack is not taken: send JSON (Fluent Bit: format json_lines)"})
        encoding = (headers("content-encoding") or "identity").strip().lower()
        if encoding not in ("identity", "gzip"):
            return IngestAnswer(415, {"error": f"Content-Encoding {encoding!r}: only gzip"})
        limit = self.settings.max_body_bytes
        length = _int_or_none(headers("content-length"))
        if length is not None and length > limit:
            return IngestAnswer(413, {"error": f"body of {length} bytes > max_body_bytes {limit}"})
        batch_id = headers("idempotency-key")
        if batch_id is not None and not _BATCH_ID.fullmatch(batch_id):
            return IngestAnswer(400, {"error": "Idempotency-Key must match [A-Za-z0-9._-]{1,128}"})
        # The body holds the budget as it arrives, not what it declares: a client that stops sending holds
        # only what it sent (six stalled 10 MiB uploads held all 64 MiB for a minute). A length counts only
        # without Transfer-Encoding, which a server reads instead of it.
        declared = length if headers("transfer-encoding") is None else None
        held = _Held(self._budget)
        too_many = IngestAnswer(429, {"error": "too many bytes in flight"}, {"Retry-After": "1"})
        try:
            try:
                body = await asyncio.wait_for(
                    _read(chunks, limit if declared is None else declared, held), BODY_READ_SECS
                )
            except TooLargeError:
                return IngestAnswer(413, {"error": f"body larger than its Content-Length or max_body_bytes {limit}"})
            except TimeoutError:
                return IngestAnswer(408, {"error": f"the body did not arrive within {BODY_READ_SECS:g} s"})
            if body is None or (encoding == "gzip" and not held.grow(limit)):  # gunzipped, it may reach the limit
                return too_many
            loop = asyncio.get_running_loop()
            unpacked = await loop.run_in_executor(None, self._unpack, source, body, encoding == "gzip", batch_id)
            del body
            if isinstance(unpacked, IngestAnswer):
                return unpacked
            return await self._deliver_held(unpacked)
        finally:
            held.release()

    async def _deliver_held(self, unpacked: UnpackedBatch) -> IngestAnswer:
        # Records cost memory apart from the body's bytes (a 10 MiB body of 2-byte lines is five million):
        # each one holds RECORD_BYTES of the budget until the batch is durable (_unpack refused a batch
        # that alone holds more).
        held = len(unpacked.batch.values) * RECORD_BYTES
        if not self._budget.take(held):
            return IngestAnswer(429, {"error": "too many records in flight"}, {"Retry-After": "1"})
        try:
            return await self._deliver(unpacked)
        finally:
            self._budget.give(held)

    async def _deliver(self, unpacked: UnpackedBatch) -> IngestAnswer:
        """Make the batch durable and answer; the bytes reserved for it stay taken until this returns."""
        raise NotImplementedError

    def _unpack(self, source: str, body: bytes, gzipped: bool, batch_id: str | None) -> IngestAnswer | UnpackedBatch:
        """Gunzip and decode ``body`` (CPU work: call it off the event loop); an answer if it cannot be."""
        limit = self.settings.max_body_bytes
        if gzipped:
            try:
                body = gunzip(body, limit)
            except TooLargeError:
                return IngestAnswer(413, {"error": f"body larger than max_body_bytes {limit} once gunzipped"})
            except zlib.error:
                return IngestAnswer(400, {"error": "Content-Encoding gzip, but the body is not gzip"})
            except TooManyMembersError:
                return IngestAnswer(400, {"error": f"more than {MAX_GZIP_MEMBERS} gzip members in one body"})
            except TrailingBytesError as error:
                return IngestAnswer(400, {"error": f"Content-Encoding gzip, but the last {error.args[0]} bytes "
                                                   "of the body are not a gzip member"})  # fmt: skip
        # A key names the batch its client means, the digest what it holds: a key used again for other
        # records (a shipper's counter after a restart, two shippers counting alike) is another batch,
        # never taken for the first one (answered "duplicate", or stored under its ids) and so lost.
        digest = hashlib.sha256(body).hexdigest()
        batch_id = f"{batch_id}.{digest[:16]}" if batch_id else digest[:32]
        max_records = self._budget.limit_bytes // RECORD_BYTES
        try:
            batch = decode_body(
                body, self._unwrap[source], self._key_paths[source], max_records, self._max_line_bytes[source]
            )
        except TooManyRecordsError:
            refused = f"more than {max_records} records: more than max_in_flight_bytes holds at {RECORD_BYTES} bytes"
            return IngestAnswer(413, {"error": refused + " a record; send smaller batches"})
        answer: dict[str, Any] = {"batch_id": batch_id, "accepted": len(batch.values) - len(batch.invalid_lines)}
        if batch.invalid_lines:
            answer["invalid_lines"] = batch.invalid_lines
        return UnpackedBatch(source, batch_id, batch, len(body), 400 if batch.invalid_lines else 200, answer)


class HttpIngest(HttpIngestEndpoint):
    """HTTP ingest into Kafka: a batch is answered once the broker acknowledged every record.

    The blocking produce runs in a worker thread, so /metrics and other posts go on meanwhile.
    """

    def __init__(self, config: GatewatchConfig, metrics: Any, producer: KafkaProducer | None = None) -> None:
        super().__init__(config, metrics)
        self.topics = {"gateway": config.kafka.topics.gateway, "app": config.kafka.topics.app}
        self._origin_key = origin_key(config.redact)
        self._acknowledged: OrderedDict[str, None] = OrderedDict()  # source:batch id, oldest first
        self._lock = threading.Lock()
        kafka = config.kafka
        self._producer = producer or KafkaProducer(
            client_id=f"gatewatch-{kafka.group_id}-http-ingest",
            acks="all",
            linger_ms=2,
            batch_size=1024 * 1024,  # a 1,000-record batch leaves in a few produce requests, not dozens
            max_block_ms=int(self.settings.produce_timeout_secs * 1000),
            **input_producer_settings(config),
            **client_settings(kafka),
        )

    def close(self) -> None:
        try:
            self._producer.close(timeout=5)
        except KafkaError:
            pass

    async def _deliver(self, unpacked: UnpackedBatch) -> IngestAnswer:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, self._ingest, unpacked)

    def _ingest(self, unpacked: UnpackedBatch) -> IngestAnswer:
        """Produce one batch; runs in a worker thread (produce waits for the broker)."""
        source = unpacked.source
        batch, batch_id, status, answer = unpacked.batch, unpacked.batch_id, unpacked.status, unpacked.answer
        remembered = f"{source}:{batch_id}"
        with self._lock:
            if remembered in self._acknowledged:
                return IngestAnswer(status, {**answer, "duplicate": True})
        topic = self.topics[source]
        prefix = f"http:{source}:{batch_id}:"
        deadline = time.monotonic() + self.settings.produce_timeout_secs
        messages = [
            InputMessage(topic, value, key, f"{prefix}{n}".encode(), self._origin_key)
            for n, (value, key) in enumerate(zip(batch.values, batch.keys, strict=True), start=1)
        ]
        try:
            if produce_all(self._producer, messages, deadline):
                self.metrics.record_error("http_ingest", "record_too_large")
        except KafkaError as error:
            self.metrics.record_error("http_ingest", "kafka")
            log.warning("http_ingest_failed source=%s batch_id=%s records=%d error=%r", source, batch_id,
                        len(batch.values), str(error))  # fmt: skip
            return IngestAnswer(503, {"error": "Kafka did not acknowledge the batch: retry"}, {"Retry-After": "5"})
        with self._lock:
            self._acknowledged[remembered] = None
            if len(self._acknowledged) > _REMEMBERED_BATCHES:
                self._acknowledged.popitem(last=False)
        self.metrics.record_http_received(source, len(batch.values), unpacked.body_bytes, len(batch.invalid_lines))
        return IngestAnswer(status, answer)


async def _read(chunks: Any, limit: int, held: _Held) -> bytes | None:
    """The body, each chunk held in the budget as it arrives; ``None`` when the budget cannot hold the next one."""
    parts: list[bytes] = []
    size = 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise TooLargeError
        if not held.grow(len(chunk)):
            return None
        parts.append(chunk)
    return b"".join(parts)


def _int_or_none(text: str | None) -> int | None:
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def ingest_off(source: str) -> str:
    return (f"HTTP ingest of {source} records is off on this serve: set http_ingest.tokens.{source} "
            "(sha256 digests of bearer tokens; README: HTTP ingest)")  # fmt: skip


def add_ingest_off_route(app: Any) -> None:
    """Mount ``POST /v1/ingest/{source}`` answering 404 with what to configure, for a serve without HTTP ingest:
    a shipper pointed at it is told why, not given FastAPI's bare "Not Found"."""

    @app.post("/v1/ingest/{source}")
    async def ingest_is_off(source: str) -> JSONResponse:
        message = ingest_off(source) if source in SOURCES else f"unknown source {source!r}: gateway or app"
        return JSONResponse({"error": message}, status_code=404)


def add_routes(app: Any, ingest: HttpIngestEndpoint) -> None:
    """Mount ``POST /v1/ingest/{source}`` on the FastAPI ``app``."""

    @app.post("/v1/ingest/{source}")
    async def ingest_batch(source: str, request: Request) -> JSONResponse:
        answer = await ingest.handle(source, request.headers.get, request.stream())
        return JSONResponse(answer.body, status_code=answer.status, headers=answer.headers)


class LocalHttpIngest(HttpIngestEndpoint):
    """HTTP ingest into the local pipeline: answered once the batch is stored and in the batch log."""

    def __init__(self, config: GatewatchConfig, metrics: Any, pipeline: LocalPipeline) -> None:
        super().__init__(config, metrics)
        self._pipeline = pipeline

    async def _deliver(self, unpacked: UnpackedBatch) -> IngestAnswer:
        offered = self._pipeline.offer(unpacked)
        if isinstance(offered, IngestAnswer):
            return offered
        future, duplicate = offered
        try:
            # Shielded: a timed-out request must not cancel the batch, which its retry waits for.
            durable = await asyncio.wait_for(
                asyncio.shield(asyncio.wrap_future(future)), self.settings.produce_timeout_secs
            )
        except TimeoutError:
            durable = False
        if not durable:
            self.metrics.record_error("http_ingest", "not_durable")
            return IngestAnswer(503, {"error": "the batch is not stored yet: retry"}, self._pipeline.retry_after())
        return IngestAnswer(unpacked.status, {**unpacked.answer, "duplicate": True} if duplicate else unpacked.answer)
