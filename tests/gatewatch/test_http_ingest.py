"""HTTP ingest without Kafka: body formats, tokens, limits and answers that never reach the producer.

What Kafka acknowledges (200/400 after produce, the ids downstream, a retried
batch stored once) is tested against a real broker and a real ``serve`` in
tests/integration/test_http_ingest_kafka.py.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import os
import threading
from typing import Any

import httpx
import orjson
import pytest
from fastapi import FastAPI
from kafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from gatewatch.config import parse_config
from gatewatch.http_body import TooLargeError, TrailingBytesError, decode_body, gunzip
from gatewatch.http_ingest import TOPIC_SAFE_RECORD_BYTES, HttpIngest, _TokenCheck, add_routes
from gatewatch.metrics import ServeMetrics
from gatewatch.topology import build_parsers, parse_records
from ingest.records import Dataset, Origin, RawRecord, record_id
from ingest.sources.kafka import ORIGIN_HEADER, ORIGIN_SEAL_HEADER, header_origin, origin_seal

TOKEN = "s3cret-gateway-token"
APP_TOKEN = "another-one-for-the-app"
GATEWAY_LINE = '[2026-03-02T09:00:00.000Z] "GET /v1/invoices HTTP/1.1" 200 - 0 120 5 4 "203.0.113.7" "curl/8.5.0" "rid-1" "billing" "10.1.0.20:8080"'


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _config(**http_ingest: Any) -> Any:
    tokens = {"gateway": [_sha(TOKEN)], "app": [_sha(APP_TOKEN)]}
    return parse_config({"http_ingest": {"tokens": tokens, **http_ingest}})


# -- bodies --------------------------------------------------------------------------------


def test_fluent_bit_json_array_unwraps_log_and_leaves_text_lines_unkeyed() -> None:
    body = orjson.dumps([{"date": 1772442000.123, "log": GATEWAY_LINE}, {"date": 1772442001.0, "log": "x"}])
    batch = decode_body(body, "log", None)
    assert batch.values == [GATEWAY_LINE.encode(), b"x"]
    assert batch.keys == [None, None] and batch.invalid_lines == []


def test_json_lines_are_keyed_by_the_request_id_whether_the_shipper_parsed_the_line_or_not() -> None:
    app = {"ts": "2026-03-02T09:00:00Z", "request_id": "rid-7", "status": 200}
    body = b"\n".join([
        orjson.dumps({"date": 1.0, "log": orjson.dumps(app).decode()}),  # the line as text under log
        orjson.dumps({"date": 1.0, **app}),  # Fluent Bit's json parser made it the record
        orjson.dumps({"log": {"request_id": "rid-9"}}),  # a map under log
        b"",
    ])  # fmt: skip
    batch = decode_body(body, "log", ("request_id",))
    assert batch.keys == [b"rid-7", b"rid-7", b"rid-9"]
    assert orjson.loads(batch.values[0]) == app
    assert orjson.loads(batch.values[1]) == {"date": 1.0, **app}  # the record itself is the log record


def test_an_ecs_log_object_under_log_leaves_the_record_whole() -> None:
    # ecs-logging libraries nest logger and origin under "log"; taking that object for the line lost the record.
    ecs = {"@timestamp": "2026-03-02T09:00:00Z", "log.level": "info", "http.request.id": "rid-5",
           "log": {"logger": "billing", "origin": {"file": {"line": 12}}}}  # fmt: skip
    batch = decode_body(orjson.dumps([ecs]), "log", ("http.request.id",))
    assert [orjson.loads(v) for v in batch.values] == [ecs] and batch.keys == [b"rid-5"]
    parsed = {"log": {"level": "info", "request_id": "rid-6"}}  # a line a shipper decoded: more than log.* fields
    assert decode_body(orjson.dumps(parsed), "log", ("request_id",)).keys == [b"rid-6"]


def test_ndjson_lines_that_do_not_decode_are_listed_and_still_produced() -> None:
    body = b'{"log": "a"}\r\nnot json\n\n"a bare line"\n[1, 2]\n{"log": "b"'
    batch = decode_body(body, "log", None)
    assert batch.values == [b"a", b"not json", b"a bare line", b"[1, 2]", b'{"log": "b"']
    assert batch.invalid_lines == [2, 5, 6]  # physical lines, blank ones counted


def test_fluentd_array_without_unwrap_sends_each_record_as_it_is() -> None:
    records = [{"message": "m1", "request_id": "r1"}, 7]
    batch = decode_body(orjson.dumps(records), None, ("request_id",))
    assert [orjson.loads(v) for v in batch.values] == records
    assert batch.keys == [b"r1", None] and batch.invalid_lines == [2]


def test_a_json_line_given_as_a_string_is_keyed_by_its_request_id() -> None:
    app = orjson.dumps({"ts": "2026-03-02T09:00:00Z", "request_id": "rid-3", "status": 200}).decode()
    body = orjson.dumps([app, "a text line", '{"request_id": "rid-4"', '{"request_id": "-"}'])
    batch = decode_body(body, None, ("request_id",))
    assert batch.values == [app.encode(), b"a text line", b'{"request_id": "rid-4"', b'{"request_id": "-"}']
    assert batch.keys == [b"rid-3", None, None, None] and batch.invalid_lines == []
    lines = decode_body(orjson.dumps(app) + b"\n" + orjson.dumps({"log": app}), "log", ("request_id",))
    assert lines.keys == [b"rid-3", b"rid-3"]  # an NDJSON line that is a JSON string, and one under unwrap
    assert decode_body(body, None, None).keys == [None] * 4  # text gateway format: lines are not read


def test_a_broken_array_keeps_its_elements_up_to_the_break() -> None:
    batch = decode_body(b'[{"log": "a"}, {"log": ', "log", None)
    assert batch.values == [b"a", b'{"log":'] and batch.invalid_lines == [2]
    batch = decode_body(b'[{"log": "a"}] trailing', "log", None)
    assert batch.values == [b"a", b"trailing"] and batch.invalid_lines == [2]


def test_one_element_orjson_refuses_costs_that_element_only() -> None:
    # A red-team trial: one lone surrogate escape (or 1e400) in an array of 3,000 records lost all of them.
    elements = [b'{"log": "line %d"}' % i for i in range(3)]
    odd = [b'{"msg": "cut \\ud800", "n": 1e400}', b'{"a": NaN}']
    body = b"[" + b", ".join([*elements[:1], *odd, *elements[1:]]) + b"]"
    batch = decode_body(body, "log", None)
    assert batch.values == [b"line 0", b'{"msg": "cut \\ud800", "n": 1e400}', b'{"a": NaN}', b"line 1", b"line 2"]
    assert batch.invalid_lines == [3]  # NaN is no JSON; the lone surrogate and 1e400 the parsers read
    # An element no JSON reader takes ends at the next comma or bracket outside strings and brackets.
    body = b'[{"log": "a"}, {nope: [1, "x,]"]}, "not \\q", {"log": "b"}]'
    batch = decode_body(body, "log", None)
    assert batch.values == [b"a", b'{nope: [1, "x,]"]}', b'"not \\q"', b"b"] and batch.invalid_lines == [2, 3]
    assert decode_body(b"[]", "log", None).values == []


def test_request_id_path_of_a_json_gateway_format_and_of_configured_app_fields() -> None:
    from gatewatch.http_ingest import request_id_paths

    config = parse_config({
        "gateway": {"json_format": {"time": "%START_TIME%", "req": {"id": "%REQ(X-REQUEST-ID)%"}}},
        "app": {"fields": {"request_id": "http.request_id"}},
    })  # fmt: skip
    assert request_id_paths(config, "gateway") == ("req", "id")
    assert request_id_paths(config, "app") == ("http", "request_id")
    assert request_id_paths(parse_config({}), "gateway") is None  # text format: not read


def test_gunzip_stops_at_the_limit_and_refuses_a_cut_stream() -> None:
    bomb = gzip.compress(b"\n" * 5_000_000)
    assert len(bomb) < 10_000
    with pytest.raises(TooLargeError):
        gunzip(bomb, 1_000_000)
    assert gunzip(bomb, 5_000_000) == b"\n" * 5_000_000
    with pytest.raises(Exception, match="truncated"):
        gunzip(gzip.compress(b"abc" * 1000)[:-12], 1_000_000)


def test_gunzip_reads_every_member_under_one_limit_and_refuses_trailing_bytes() -> None:
    first, second = gzip.compress(b'"a"\n' * 100), gzip.compress(b'"b"\n' * 100)
    assert gunzip(first + second, 1_000_000) == b'"a"\n' * 100 + b'"b"\n' * 100
    assert gunzip(first + gzip.compress(b"") + second, 800) == b'"a"\n' * 100 + b'"b"\n' * 100
    with pytest.raises(TooLargeError):  # each member is under the limit, the two are not
        gunzip(first + second, 799)
    with pytest.raises(TrailingBytesError):
        gunzip(first + b'"not gzip"\n', 1_000_000)
    with pytest.raises(TrailingBytesError):
        gunzip(first + b"\0" * 8, 1_000_000)  # padding too: gzip -d only warns, Python refuses
    with pytest.raises(Exception, match="truncated"):
        gunzip(first + second[:-12], 1_000_000)


# -- tokens and ids ------------------------------------------------------------------------


def test_tokens_are_per_source_and_bearer_only() -> None:
    check = _TokenCheck(_config().http_ingest.tokens)
    assert check.allows("gateway", f"Bearer {TOKEN}")
    assert check.allows("gateway", f"bearer  {TOKEN} ")
    assert not check.allows("app", f"Bearer {TOKEN}")
    assert not check.allows("gateway", f"Bearer {TOKEN}x")
    assert not check.allows("gateway", f"Basic {TOKEN}")
    assert not check.allows("gateway", None)
    assert not check.allows("gateway", "Bearer ")


def test_a_token_pasted_where_its_digest_goes_is_refused_without_being_shown() -> None:
    # A newcomer's trial: the error echoed the bearer token itself, and did not say what to give instead.
    from gatewatch.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        parse_config({"http_ingest": {"tokens": {"gateway": ["gwT0ken-7f3c-secret"]}}})
    assert "gwT0ken" not in str(caught.value) and "(its value not shown)" in str(caught.value)
    assert "printf %s TOKEN | sha256sum" in str(caught.value)
    upper = hashlib.sha256(b"t").hexdigest().upper()  # sha256sum writes lower case; others may not
    assert parse_config({"http_ingest": {"tokens": {"app": [upper]}}}).http_ingest.tokens.app == [upper.lower()]


def test_a_configured_token_that_is_not_a_sha256_digest_is_refused() -> None:
    from gatewatch.errors import ConfigError

    with pytest.raises(ConfigError, match="http_ingest.tokens.gateway.0"):
        parse_config({"http_ingest": {"tokens": {"gateway": ["my-plain-token"]}}})
    with pytest.raises(ConfigError, match="http_ingest.max_body: unknown key"):
        parse_config({"http_ingest": {"max_body": 1}})


LINE = b'{"ts": "2026-03-02T09:00:00Z", "request_id": "r1", "status": 200}'


def _sealed(
    origin: bytes, topic: str = "gw-app", key: bytes = b"k", value: bytes = LINE
) -> list[tuple[str, bytes | None]]:
    return [("other", b"x"), (ORIGIN_HEADER, origin), (ORIGIN_SEAL_HEADER, origin_seal(key, topic, origin, value))]


def _origin(headers: list[tuple[str, bytes | None]], key: bytes | None = b"k") -> object:
    return header_origin(headers, Dataset.APP, "gw-app", LINE, key)


def test_the_origin_header_gives_the_id_and_the_kafka_origin_stays() -> None:
    entry = _origin(_sealed(b"http:app:0123abcd:7"))
    assert entry == Origin(Dataset.APP, "http:app:0123abcd", 7)
    assert _origin(_sealed(b"file:00ff:120")) == Origin(Dataset.APP, "file:00ff", 120)
    assert _origin(_sealed(b"gw-app/0:7")) is None  # only http/file origins
    assert _origin(_sealed(b"http:app:x:-1")) is None
    assert _origin([("other", b"x")]) is None  # a shipper's message

    kafka_origin = Origin(Dataset.APP, "gw-app/2", 41)
    good = b'{"ts": "2026-03-02T09:00:00Z", "request_id": "r1", "status": 200}'
    events, dead = parse_records(
        build_parsers(parse_config({})),
        [RawRecord(kafka_origin, good, id_origin=entry),
         RawRecord(kafka_origin, b"{", id_origin=Origin(Dataset.APP, "http:app:b", 2))],
    )
    assert events[0].id == record_id(entry) and events[0].origin == kafka_origin
    assert dead[0].origin == Origin(Dataset.APP, "http:app:b", 2) and dead[0].reason == "truncated"


def test_an_origin_header_gatewatch_did_not_seal_is_not_taken() -> None:
    """Any producer to an input topic could set the header, and so choose the ids of its records."""
    forged = b"file:00ff:12"
    for headers in (
        [(ORIGIN_HEADER, forged)],  # no seal
        _sealed(forged, key=b"not gatewatch's key"),
        _sealed(forged, topic="gw-gateway"),  # a seal of another topic's message
        [(ORIGIN_HEADER, forged), (ORIGIN_SEAL_HEADER, origin_seal(b"k", "gw-app", b"file:00ff:1", LINE))],
        _sealed(forged, value=b"the genuine record's line"),  # a genuine header and seal copied onto another record
    ):
        assert _origin(headers) is False
    # With no redaction key configured nothing is sealed (a random key would not survive a restart): taken as is.
    assert _origin([(ORIGIN_HEADER, forged)], key=None) == Origin(Dataset.APP, "file:00ff", 12)


# -- answers before Kafka ------------------------------------------------------------------


class _Producer:
    """Stands in for a broker that never answers (``send`` times out)."""

    def __init__(self) -> None:
        self.sent = 0

    def send(self, topic: str, **kwargs: Any) -> Any:
        self.sent += 1
        raise KafkaTimeoutError("no broker answered")

    def close(self, timeout: float | None = None) -> None:
        pass


class _Client:
    """Posts to the ingest routes in process (httpx's ASGI transport), one request at a time."""

    def __init__(self, **http_ingest: Any) -> None:
        self.metrics, self.producer = ServeMetrics(), _Producer()
        self.app = FastAPI()
        add_routes(self.app, HttpIngest(_config(**http_ingest), self.metrics, producer=self.producer))

    def post(self, path: str, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://gatewatch") as client:
                return await client.post(path, content=content, headers=headers)

        return asyncio.run(send())


def test_answers_that_need_no_broker() -> None:
    client = _Client(max_body_bytes=1000)
    metrics, producer = client.metrics, client.producer
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.post("/v1/ingest/gateway", content=b'"x"').status_code == 401
    answer = client.post("/v1/ingest/app", content=b'"x"', headers=auth)
    assert answer.status_code == 401 and answer.headers["www-authenticate"] == "Bearer"
    assert client.post("/v1/ingest/other", content=b'"x"', headers=auth).status_code == 404
    assert client.post("/v1/ingest/gateway", content=b"x" * 1001, headers=auth).status_code == 413
    gzipped = gzip.compress(b'"x"\n' * 300)
    assert len(gzipped) < 1000
    answer = client.post("/v1/ingest/gateway", content=gzipped, headers={**auth, "Content-Encoding": "gzip"})
    assert answer.status_code == 413  # 1200 bytes once gunzipped
    answer = client.post("/v1/ingest/gateway", content=b"not gzip", headers={**auth, "Content-Encoding": "gzip"})
    assert answer.status_code == 400
    answer = client.post("/v1/ingest/gateway", content=b"\x81", headers={**auth, "Content-Type": "application/msgpack"})
    assert answer.status_code == 415
    answer = client.post("/v1/ingest/gateway", content=b'"x"', headers={**auth, "Idempotency-Key": "a/b"})
    assert answer.status_code == 400
    assert producer.sent == 0
    assert metrics.registry.get_sample_value(
        "gatewatch_http_ingest_requests_total", {"source": "gateway", "code": "413"}
    ) == 2  # fmt: skip


def test_a_source_without_tokens_is_answered_with_what_to_configure() -> None:
    # A trial: a shipper pointed at a serve without http_ingest.tokens got FastAPI's bare 404 "Not Found".
    from gatewatch.http_ingest import add_ingest_off_route

    client = _Client(tokens={"gateway": [_sha(TOKEN)]})
    answer = client.post("/v1/ingest/app", content=b'"x"', headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 404 and "set http_ingest.tokens.app" in answer.json()["error"]
    assert client.post("/v1/ingest/gateway", content=b'"x"').status_code == 401  # its tokens are still asked for
    client.app = FastAPI()
    add_ingest_off_route(client.app)  # serve mounts this when no source has tokens
    for source in ("gateway", "app"):
        answer = client.post(f"/v1/ingest/{source}", content=b'"x"')
        assert answer.status_code == 404 and f"set http_ingest.tokens.{source}" in answer.json()["error"]
    assert "unknown source" in client.post("/v1/ingest/x", content=b'"x"').json()["error"]


def test_requests_to_unknown_sources_share_one_metric_label() -> None:
    client = _Client()
    auth = {"Authorization": f"Bearer {TOKEN}"}
    for n in range(40):
        assert client.post(f"/v1/ingest/{n:04x}{'x' * 200}", content=b'"x"').status_code == 404
    assert client.post("/v1/ingest/metrics", content=b'"x"', headers=auth).status_code == 404
    assert client.post("/v1/ingest/gateway", content=b'"x"').status_code == 401
    sources = {
        sample.labels["source"]
        for family in client.metrics.registry.collect()
        if family.name.startswith("gatewatch_http_ingest_")
        for sample in family.samples
        if "source" in sample.labels
    }
    assert sources == {"unknown", "gateway"}
    requests = client.metrics.registry.get_sample_value
    assert requests("gatewatch_http_ingest_requests_total", {"source": "unknown", "code": "404"}) == 41
    assert requests("gatewatch_http_ingest_duration_seconds_count", {"source": "unknown"}) == 41


class _Acknowledging(_Producer):
    """A broker that acknowledges every record at once."""

    def __init__(self) -> None:
        super().__init__()
        self.values: list[bytes] = []

    def send(self, topic: str, **kwargs: Any) -> Any:
        self.sent += 1
        self.values.append(kwargs["value"])
        return self

    def get(self, timeout: float | None = None) -> None:
        return None


def test_a_gzip_body_of_several_members_is_taken_whole_and_trailing_bytes_are_refused() -> None:
    producer = _Acknowledging()
    app = FastAPI()
    add_routes(app, HttpIngest(_config(), ServeMetrics(), producer=producer))
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Encoding": "gzip"}

    async def post(body: bytes) -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gatewatch") as client:
            return await client.post("/v1/ingest/gateway", content=body, headers=headers)

    answer = asyncio.run(post(gzip.compress(b'"a"\n') + gzip.compress(b'"b"\n')))  # cat a.gz b.gz
    assert answer.status_code == 200 and answer.json()["accepted"] == 2
    assert producer.values == [b"a", b"b"]
    answer = asyncio.run(post(gzip.compress(b'"c"\n') + b'"d"\n'))
    assert answer.status_code == 400 and "not a gzip member" in answer.json()["error"]
    assert producer.values == [b"a", b"b"]  # nothing of a refused body is produced


def test_a_batch_kafka_does_not_acknowledge_is_answered_503_with_retry_after() -> None:
    client = _Client(produce_timeout_secs=0.5)
    metrics, producer = client.metrics, client.producer
    answer = client.post("/v1/ingest/gateway", content=b'"x"\n"y"', headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.status_code == 503 and answer.headers["retry-after"] == "5"
    assert producer.sent == 1
    assert metrics.registry.get_sample_value("component_errors_total", {"stage": "http_ingest", "error_type": "kafka"})


def test_bodies_beyond_the_in_flight_budget_are_answered_429_and_the_budget_comes_back() -> None:
    class Stuck(_Producer):
        """The broker is slow: ``send`` waits until released."""

        def __init__(self) -> None:
            super().__init__()
            self.entered, self.release = threading.Event(), threading.Event()

        def send(self, topic: str, **kwargs: Any) -> Any:
            self.entered.set()
            self.release.wait(timeout=30)
            return super().send(topic, **kwargs)

    producer = Stuck()
    app = FastAPI()
    # One batch holds its 160 bytes and 40 records of RECORD_BYTES: 41,120 of 50,000; a second one does not fit.
    add_routes(app, HttpIngest(_config(max_in_flight_bytes=50_000), ServeMetrics(), producer=producer))
    auth = {"Authorization": f"Bearer {TOKEN}"}
    body = b'"x"\n' * 40  # 160 bytes

    async def scenario() -> tuple[int, int, str | None, int]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://gatewatch") as client:
            first = asyncio.create_task(client.post("/v1/ingest/gateway", content=body, headers=auth))
            while not producer.entered.is_set():
                await asyncio.sleep(0.01)
            second = await client.post("/v1/ingest/gateway", content=body, headers=auth)
            producer.release.set()
            answered = await first
            third = await client.post("/v1/ingest/gateway", content=body, headers=auth)
            return answered.status_code, second.status_code, second.headers.get("retry-after"), third.status_code

    first, second, retry_after, third = asyncio.run(scenario())
    assert (second, retry_after) == (429, "1")
    assert first == third == 503  # both reached the (unanswering) broker: the budget was given back


def test_gzip_of_many_empty_members_is_refused_at_once() -> None:
    # A red-team trial: 2 MiB of empty members took 27 s (a copy of the rest a member), six tied up every worker.
    import time

    from gatewatch.http_body import MAX_GZIP_MEMBERS, TooManyMembersError

    empty = gzip.compress(b"")
    started = time.process_time()
    with pytest.raises(TooManyMembersError):
        gunzip(empty * (2 * 1024 * 1024 // len(empty)), 10_000_000)
    assert time.process_time() - started < 1.0
    assert gunzip(gzip.compress(b'"a"\n') * MAX_GZIP_MEMBERS, 10_000_000) == b'"a"\n' * MAX_GZIP_MEMBERS


def test_decoding_stops_at_the_most_records_a_batch_may_hold() -> None:
    # A verification run: several refused bodies at once were each decoded whole first (2 GB for six).
    from gatewatch.http_body import TooManyRecordsError

    with pytest.raises(TooManyRecordsError):
        decode_body(b"0\n" * 5_000_000, None, None, max_records=1000)
    with pytest.raises(TooManyRecordsError):
        decode_body(b"[" + b"0," * 2000 + b"0]", None, None, max_records=1000)
    assert len(decode_body(b'"x"\n' * 1000, None, None, max_records=1000).values) == 1000


def test_records_hold_the_in_flight_budget_so_tiny_lines_cannot_blow_up_memory() -> None:
    # A red-team trial: a 10 MiB body of "0\n" lines is five million records (3.1 GB, the pipeline stalled).
    from gatewatch.http_ingest import RECORD_BYTES

    client = _Client(max_in_flight_bytes=100 * RECORD_BYTES)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    answer = client.post("/v1/ingest/gateway", content=b"0\n" * 101, headers=auth)
    assert answer.status_code == 413 and "send smaller batches" in answer.json()["error"]
    assert client.producer.sent == 0
    answer = client.post("/v1/ingest/gateway", content=b'"x"\n' * 90, headers=auth)
    assert answer.status_code == 503 and client.producer.sent == 1  # it fits: on to the (unanswering) broker


def test_a_declared_length_is_not_a_reservation_a_chunked_body_can_pass() -> None:
    # Content-Length: 1 with Transfer-Encoding: chunked reserved 1 byte, then read the whole chunked body.
    config = _config(max_in_flight_bytes=50_000, max_body_bytes=5_000)
    endpoint = HttpIngest(config, ServeMetrics(), producer=_Producer())
    reserved: list[int] = []
    real_take = endpoint._budget.take
    endpoint._budget.take = lambda size: reserved.append(size) or real_take(size)  # type: ignore[method-assign]
    headers = {"authorization": f"Bearer {TOKEN}", "content-length": "1", "transfer-encoding": "chunked"}

    async def chunks() -> Any:
        yield b'"x"\n' * 10

    answer = asyncio.run(endpoint.handle("gateway", headers.get, chunks()))
    assert answer.status == 503 and reserved[0] == 40  # read whole, and held as read, not the 1 byte declared


def test_stalled_uploads_hold_only_what_they_sent() -> None:
    # A red-team trial: six clients declaring 10 MiB and then sending nothing held the whole budget for a minute.
    endpoint = HttpIngest(_config(max_in_flight_bytes=50_000, max_body_bytes=20_000), ServeMetrics(), _Producer())
    headers = {"authorization": f"Bearer {TOKEN}", "content-length": "20000"}
    stop = asyncio.Event()

    async def stalled() -> Any:
        yield b'"x"\n' * 100
        await stop.wait()

    async def chunks() -> Any:
        yield b'"x"\n' * 10

    async def scenario() -> tuple[int, int, int]:
        uploads = [asyncio.create_task(endpoint.handle("gateway", headers.get, stalled())) for _ in range(10)]
        await asyncio.sleep(0.05)
        held = endpoint._budget.used_bytes
        answer = await endpoint.handle("gateway", {"authorization": f"Bearer {TOKEN}"}.get, chunks())
        stop.set()
        await asyncio.gather(*uploads)
        return held, answer.status, endpoint._budget.used_bytes

    held, status, left = asyncio.run(scenario())
    assert held == 10 * 400 and status == 503  # not 429: on to the (unanswering) broker
    assert left == 0


def test_a_body_that_stops_arriving_is_answered_408_and_gives_the_budget_back(monkeypatch: pytest.MonkeyPatch) -> None:
    import gatewatch.http_ingest

    monkeypatch.setattr(gatewatch.http_ingest, "BODY_READ_SECS", 0.2)
    endpoint = HttpIngest(_config(), ServeMetrics(), producer=_Producer())

    async def stalled() -> Any:
        yield b'"x"\n'
        await asyncio.sleep(60)

    answer = asyncio.run(endpoint.handle("gateway", {"authorization": f"Bearer {TOKEN}"}.get, stalled()))
    assert answer.status == 408 and endpoint._budget.used_bytes == 0


def test_a_string_holding_two_lines_is_two_records() -> None:
    # A red-team trial: one JSON string with two access lines parsed as one event mixing both requests' fields.
    batch = decode_body(b'[{"log": "first line\\nsecond line\\n"}, "third\\r\\nfourth", {"log": "fifth\\n"}]', "log", None)
    assert batch.values == [b"first line", b"second line", b"third", b"fourth", b"fifth"]
    assert batch.invalid_lines == []


def _post_gateway(config: Any, producer: _Acknowledging, body: bytes) -> httpx.Response:
    app = FastAPI()
    add_routes(app, HttpIngest(config, ServeMetrics(), producer=producer))

    async def post() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gatewatch") as client:
            return await client.post("/v1/ingest/gateway", content=body, headers={"Authorization": f"Bearer {TOKEN}"})

    return asyncio.run(post())


def test_a_record_up_to_max_line_bytes_is_produced_whole_and_a_longer_one_is_oversized_as_in_replay() -> None:
    # A 600 KB line (a User-Agent of 300,000 quotes, JSON-escaped) was cut at 512 KiB: a "truncated" dead letter
    # in serve where replay read it, and the stolen token's second use it carried went unseen.
    config = _config()
    limit = config.gateway.max_line_bytes  # 1 MiB by default
    long_line = GATEWAY_LINE.replace("curl/8.5.0", "q" * 600_000)
    too_long = GATEWAY_LINE.replace("curl/8.5.0", "q" * limit)
    producer = _Acknowledging()
    body = orjson.dumps({"log": long_line}) + b"\n" + orjson.dumps({"log": too_long})
    answer = _post_gateway(_config(unwrap={"gateway": "log", "app": "log"}), producer, body)
    assert answer.status_code == 200, answer.text
    assert producer.values[0] == long_line.encode()
    assert len(producer.values[1]) == limit + 1  # what replay's reader keeps of a longer line
    parsers = build_parsers(config)
    records = [RawRecord(Origin(Dataset.GATEWAY, "http:gateway", n), value) for n, value in enumerate(producer.values)]
    events, dead_letters = parse_records(parsers, records)
    assert len(events) == 1 and [letter.reason for letter in dead_letters] == ["oversized"]


def test_a_record_the_topic_refuses_for_its_size_is_produced_again_cut_instead_of_failing_its_batch() -> None:
    class SmallTopic(_Acknowledging):
        """A topic whose max.message.bytes is below the record (lz4 could not make it fit)."""

        def send(self, topic: str, **kwargs: Any) -> Any:
            if len(kwargs["value"]) > 600_000:
                self.sent += 1
                return _Refused()
            return super().send(topic, **kwargs)

    class _Refused:
        def get(self, timeout: float | None = None) -> None:
            raise MessageSizeTooLargeError("the broker refused it")

    producer = SmallTopic()
    incompressible = orjson.dumps({"log": GATEWAY_LINE.replace("curl/8.5.0", os.urandom(350_000).hex())})
    answer = _post_gateway(_config(unwrap={"gateway": "log", "app": "log"}), producer, incompressible + b'\n"next"')
    assert answer.status_code == 200, answer.text  # not 503 on every retry, for ever
    assert [len(value) for value in producer.values] == [4, TOPIC_SAFE_RECORD_BYTES]
    assert producer.values[1].startswith(b"[2026-03-02T09:00:00.000Z]")  # its start, for the dead letter
