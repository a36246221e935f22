"""Container logs as Kubernetes nodes keep them: Docker json-file and CRI wrappers, split lines joined."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gatewatch.config import load_config
from gatewatch.replay import replay
from gatewatch.topology import build_parsers
from ingest.records import Dataset, Event, Origin, RawRecord
from ingest.sources.files import read_lines
from ingest.sources.kafka import KafkaSource

# Istio's current default text format (pilot/pkg/model/telemetry_logging.go), and a line it wrote for the
# bookinfo sample (published in ssup2/blog-software, "Istio Sidecar Proxy Access Log").
ISTIO_FORMAT = (
    '[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" %RESPONSE_CODE% '
    "%RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %CONNECTION_TERMINATION_DETAILS% "
    '"%UPSTREAM_TRANSPORT_FAILURE_REASON%" %BYTES_RECEIVED% %BYTES_SENT% %DURATION% '
    '%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" '
    '"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%" %UPSTREAM_CLUSTER_RAW% %UPSTREAM_LOCAL_ADDRESS% '
    "%DOWNSTREAM_LOCAL_ADDRESS% %DOWNSTREAM_REMOTE_ADDRESS% %REQUESTED_SERVER_NAME% %ROUTE_NAME%\n"
)
ISTIO_LINE = (
    '[2025-05-04T17:22:59.046Z] "GET /reviews/0 HTTP/1.1" 200 - via_upstream - "-" 0 437 142 141 "-" '
    '"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) '
    'Chrome/134.0.0.0 Safari/537.36" "4e43168a-01e6-907c-ba17-2f72fad816a8" "reviews:9080" "10.244.1.15:9080" '
    "outbound|9080||reviews.default.svc.cluster.local 10.244.2.19:60236 10.96.81.152:9080 10.244.2.19:55058 - "
    "default"
)
RUNTIME_TIME = "2025-05-04T17:22:59.190371452Z"
RUNTIME_TS = 1746379379.190371


def config(tmp_path: Path, text: str) -> object:
    path = tmp_path / "gatewatch.yaml"
    path.write_text(text)
    return load_config(path)


def gateway_records(tmp_path: Path, unwrap: str, content: bytes) -> list[RawRecord]:
    log = tmp_path / "envoy.log"
    log.write_bytes(content)
    return list(read_lines(log, Dataset.GATEWAY, 65536, unwrap))


def docker(line: str, stream: str = "stdout", time: str = RUNTIME_TIME) -> bytes:
    return orjson.dumps({"log": line, "stream": stream, "time": time}) + b"\n"


@pytest.mark.parametrize(
    ("unwrap", "content"),
    [
        ("cri", f"{RUNTIME_TIME} stdout F {ISTIO_LINE}\n".encode()),
        ("cri", f"{RUNTIME_TIME} stdout P {ISTIO_LINE[:100]}\n{RUNTIME_TIME} stdout P {ISTIO_LINE[100:300]}\n"
                f"{RUNTIME_TIME} stdout F {ISTIO_LINE[300:]}\n".encode()),
        ("docker", docker(ISTIO_LINE + "\n")),
        ("docker", docker(ISTIO_LINE[:150]) + docker(ISTIO_LINE[150:] + "\n")),
        ("cri", f"{RUNTIME_TIME} stdout F {ISTIO_LINE} \r\n".encode()),  # trailing space and \r
    ],
    ids=["cri", "cri-partial-lines-joined", "docker", "docker-split-line-joined", "trailing-whitespace"],
)
def test_wrapped_istio_lines_parse_with_the_runtime_time_kept(tmp_path: Path, unwrap: str, content: bytes) -> None:
    (record,) = gateway_records(tmp_path, unwrap, content)
    fmt = orjson.dumps(ISTIO_FORMAT).decode()
    parser = build_parsers(config(tmp_path, f"gateway:\n  unwrap: {unwrap}\n  format: {fmt}\n"))
    e = parser[Dataset.GATEWAY](record)
    assert isinstance(e, Event), e
    assert e.ts == 1746379379.046  # START_TIME, not the runtime's time
    assert e.created == RUNTIME_TS
    assert (e.method, e.path, e.status) == ("GET", "/reviews/0", 200)
    assert e.request_id == "4e43168a-01e6-907c-ba17-2f72fad816a8"
    assert e.upstream_cluster == "outbound|9080||reviews.default.svc.cluster.local"  # %UPSTREAM_CLUSTER_RAW%
    assert (e.upstream_host, e.route_name, e.source_ip) == ("10.244.1.15:9080", "default", "10.244.2.19")


def test_a_joined_line_takes_the_offset_of_its_last_piece_so_offsets_keep_increasing(tmp_path: Path) -> None:
    lines = [
        f"{RUNTIME_TIME} stdout F first",
        f"{RUNTIME_TIME} stdout P sec",
        f"{RUNTIME_TIME} stdout F ond",
        "not wrapped at all",
        f"{RUNTIME_TIME} stderr P cut off by the end of the file",
    ]
    starts = [sum(len(line) + 1 for line in lines[:n]) for n in range(len(lines))]
    records = gateway_records(tmp_path, "cri", "\n".join(lines).encode())
    assert [(r.origin.offset, r.line, r.created) for r in records] == [
        (starts[0], b"first", RUNTIME_TS), (starts[2], b"second", RUNTIME_TS),
        (starts[3], b"not wrapped at all", None), (starts[4], b"cut off by the end of the file", RUNTIME_TS),
    ]


def test_pieces_interrupted_by_the_other_stream_are_not_glued_to_it(tmp_path: Path) -> None:
    first = f"{RUNTIME_TIME} stdout P [2025-05-04T17:22:59.046Z] \"GET\n"
    content = (first + f"{RUNTIME_TIME} stderr F envoy's own log line\n").encode()
    records = gateway_records(tmp_path, "cri", content)
    assert [(r.origin.offset, r.line) for r in records] == [
        (0, b'[2025-05-04T17:22:59.046Z] "GET'), (len(first), b"envoy's own log line"),
    ]


def test_a_shipper_key_unwraps_files_too(tmp_path: Path) -> None:
    (record,) = gateway_records(tmp_path, "message", orjson.dumps({"message": ISTIO_LINE, "host": "n1"}) + b"\n")
    assert (record.line, record.created) == (ISTIO_LINE.encode(), None)


def test_an_ecs_record_is_not_replaced_by_its_log_object(tmp_path: Path) -> None:
    ecs = orjson.dumps({"@timestamp": "2026-03-02T09:00:00Z", "message": "paid", "log": {"logger": "billing"}})
    decoded = orjson.dumps({"log": {"level": "info", "request_id": "r1"}, "stream": "stdout"})  # a decoded line
    records = gateway_records(tmp_path, "log", ecs + b"\n" + decoded + b"\n")
    assert [r.line for r in records] == [ecs, b'{"level":"info","request_id":"r1"}']


def test_a_shipper_record_whose_line_is_not_strict_utf8_is_still_unwrapped(tmp_path: Path) -> None:
    # An operator trial: Fluent Bit's envelope around a line with a byte that is not UTF-8 (or a lone surrogate
    # escape, as json.dumps writes one) was taken for the line itself: a missing_timestamp dead letter, and an
    # unwrap_missed warning pointing at the wrong setting.
    raw = b'{"log": "GET /caf\xe9", "request_id": "x"}\n'
    escaped = b'{"log": "GET /caf\\udcfc", "request_id": "x"}\n'
    records = gateway_records(tmp_path, "log", raw + escaped)
    assert [r.line for r in records] == ["GET /caf\ufffd".encode()] * 2


# Envoy's json_format documentation example (no START_TIME), as Docker's json-file driver keeps it.
ENVOY_DOC_JSON = '{"protocol": "HTTP/1.1", "duration": "123", "my_custom_header": "value_of_MY_CUSTOM_HEADER"}'
ENVOY_DOC_JSON_FORMAT = (
    "gateway:\n  unwrap: docker\n"
    "  json_format: {protocol: '%PROTOCOL%', duration: '%DURATION%', my_custom_header: '%REQ(MY_CUSTOM_HEADER)%'}\n"
)


def test_replay_dates_lines_without_start_time_by_the_runtime_and_counts_them(tmp_path: Path) -> None:
    log = tmp_path / "envoy.log"
    log.write_bytes(docker(ENVOY_DOC_JSON + "\n") + docker(ENVOY_DOC_JSON + "\n", time="2025-05-04T17:23:00Z"))
    stats = replay(config(tmp_path, ENVOY_DOC_JSON_FORMAT), [log], [], [])
    assert (stats.events, stats.dead_letters, stats.ts_from_runtime) == (2, 0, 2)


def test_kafka_accepts_the_same_vocabulary_per_message(tmp_path: Path) -> None:
    from ingest.sources.unwrap import compile_unwrap

    kafka = config(tmp_path, "kafka:\n  unwrap: {gateway: cri, app: docker}\n").kafka  # type: ignore[attr-defined]
    source = KafkaSource.__new__(KafkaSource)  # no broker: only the per-message unwrapping
    source.unwrap_misses = 0
    origin = Origin(Dataset.GATEWAY, "gw/0", 7)
    cri, dock = compile_unwrap(kafka.unwrap.gateway), compile_unwrap(kafka.unwrap.app)
    assert cri is not None and dock is not None
    record = source._unwrapped(origin, f"{RUNTIME_TIME} stdout F {ISTIO_LINE}".encode(), cri)
    assert (record.line, record.created) == (ISTIO_LINE.encode(), RUNTIME_TS)
    record = source._unwrapped(origin, b"plain line", dock)
    assert (record.line, record.created, source.unwrap_misses) == (b"plain line", None, 1)
