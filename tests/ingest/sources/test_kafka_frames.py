"""Broker responses read by ingest.sources.kafka_frames decode as kafka-python's own reading decodes them.

Responses are real ones (fetch responses holding record batches, encoded by
kafka-python itself); the same bytes, cut anywhere, go through both ways of
reading, and the decoded responses are compared. The socket reads run on a
real socket pair.
"""

from __future__ import annotations

import logging
import socket
import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from kafka.errors import InvalidReceiveError, KafkaConnectionError
from kafka.net.connection import KafkaConnection
from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport
from kafka.protocol.consumer.fetch import FetchRequest, FetchResponse
from kafka.protocol.frame import KafkaBytes
from kafka.protocol.parser import KafkaProtocol
from kafka.record.default_records import DefaultRecordBatchBuilder

import ingest.sources.kafka_client  # noqa: F401  (installs the reading, as serve's imports do)
from ingest.sources.kafka_frames import RECV_BYTES, Frame, read_socket, receive_bytes

LIBRARY_RECEIVE = receive_bytes.library_receive  # type: ignore[attr-defined]
VERSION = 12
Response = FetchResponse[VERSION]
Partition = Response.FetchableTopicResponse.PartitionData


def _response(correlation_id: int, values: list[bytes]) -> tuple[object, bytes]:
    """A fetch response whose one partition holds ``values`` as a record batch, and its bytes on the wire."""
    builder = DefaultRecordBatchBuilder(2, 0, False, -1, -1, -1, 10**8)
    for offset, value in enumerate(values):
        builder.append(offset, 1_772_442_698_000 + offset, None, value, [])
    partition = Partition(partition_index=0, error_code=0, high_watermark=len(values), last_stable_offset=len(values),
                          log_start_offset=0, aborted_transactions=None, preferred_read_replica=-1,
                          records=bytes(builder.build()))  # fmt: skip
    topic = Response.FetchableTopicResponse(topic="gateway", partitions=[partition])
    response = Response(throttle_time_ms=0, error_code=0, session_id=0, responses=[topic])
    response.with_header(correlation_id=correlation_id)
    return response, bytes(response.encode(header=True, framed=True))


def _protocol(requests: int, **config: object) -> KafkaProtocol:
    """A protocol awaiting the answers to ``requests`` fetch requests (correlation ids 1, 2, ...)."""
    protocol = KafkaProtocol(client_id="gatewatch-test", **config)
    request = FetchRequest[VERSION](
        replica_id=-1, max_wait_ms=100, min_bytes=1, max_bytes=10**6, isolation_level=0, session_id=0,
        session_epoch=-1, topics=[], forgotten_topics_data=[], rack_id="",
    )  # fmt: skip
    for _ in range(requests):
        protocol.send_request(request)
    return protocol


def _pieces(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(data), *(cut % (len(data) + 1) for cut in cuts)})
    return [data[start:end] for start, end in zip(points, points[1:])]


VALUES = st.lists(st.binary(max_size=300) | st.binary(min_size=5_000, max_size=40_000), min_size=1, max_size=6)


@settings(max_examples=150, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=4), st.lists(st.integers(0, 10**6), max_size=12), st.booleans())
def test_responses_cut_anywhere_decode_as_with_the_library(batches: list[list[bytes]], cuts: list[int],
                                                           whole_reads: bool) -> None:  # fmt: skip
    expected, wire = [], b""
    for correlation_id, values in enumerate(batches, 1):
        response, data = _response(correlation_id, values)
        expected.append((correlation_id, response))
        wire += data
    # Some reads a byte at a time through the size, some a whole response or several at once.
    pieces = _pieces(wire, cuts) if not whole_reads else [wire]
    ours, library = _protocol(len(batches)), _protocol(len(batches))
    got_ours = [answer for piece in pieces for answer in receive_bytes(ours, piece)]
    got_library = [answer for piece in pieces for answer in LIBRARY_RECEIVE(library, piece)]
    assert got_ours == got_library == expected
    assert not ours._receiving and ours._header.tell() == 0  # nothing left half read


def _outcome(receive: object, protocol: KafkaProtocol, pieces: list[bytes]) -> tuple[list[object], object]:
    """The answers ``receive`` gives for ``pieces``, and the type of the error that stopped it (or None)."""
    answers: list[object] = []
    try:
        for piece in pieces:
            answers += receive(protocol, piece)  # type: ignore[operator]
    except Exception as raised:  # noqa: BLE001 - which error is the point
        return answers, type(raised)
    return answers, None


@settings(max_examples=300, deadline=None)
@given(st.lists(VALUES, min_size=1, max_size=3), st.data())
def test_damaged_responses_give_what_the_library_gives(batches: list[list[bytes]], data: st.DataObject) -> None:
    wire = bytearray(b"".join(_response(n, values)[1] for n, values in enumerate(batches, 1)))
    for _ in range(data.draw(st.integers(1, 4), label="bytes changed")):
        wire[data.draw(st.integers(0, len(wire) - 1), label="at")] = data.draw(st.integers(0, 255), label="to")
    pieces = _pieces(bytes(wire), data.draw(st.lists(st.integers(0, 10**6), max_size=6), label="cuts"))
    ours = _outcome(receive_bytes, _protocol(len(batches), receive_message_max_bytes=10**6), pieces)
    library = _outcome(LIBRARY_RECEIVE, _protocol(len(batches), receive_message_max_bytes=10**6), pieces)
    assert ours == library


def test_a_response_a_byte_at_a_time() -> None:
    response, data = _response(1, [b"a" * 100, b"", b"b" * 7])
    protocol = _protocol(1)
    answers = [answer for at in range(len(data)) for answer in receive_bytes(protocol, data[at : at + 1])]
    assert answers == [(1, response)]


@pytest.mark.parametrize("size", [-1, 1_001])
def test_a_frame_size_out_of_bounds_is_refused_as_by_the_library(size: int) -> None:
    data = size.to_bytes(4, "big", signed=True) + b"x" * 10
    for receive in (receive_bytes, LIBRARY_RECEIVE):
        with pytest.raises(InvalidReceiveError):
            receive(_protocol(1, receive_message_max_bytes=1_000), data)


@given(st.binary(max_size=200), st.lists(st.one_of(st.none(), st.integers(0, 250)), max_size=12))
def test_a_frame_reads_as_the_library_buffer_reads(data: bytes, reads: list[int | None]) -> None:
    ours, library = Frame(data), KafkaBytes(len(data))
    library.write(data)
    library.seek(0)
    for nbytes in reads:
        assert bytes(ours.read(nbytes)) == library.read(nbytes)
        assert ours.tell() == library.tell()
    ours.seek(3)
    library.seek(3)
    assert bytes(ours.read()) == library.read()


def test_the_library_still_reads_through_what_install_replaced() -> None:
    # If kafka-python reads its sockets or frames some other way, the replacements sit unused.
    for transport_class in (KafkaTCPTransport, KafkaSSLTransport):
        assert transport_class._sock_recv is read_socket
        assert "_sock_recv" in transport_class._read_from_sock.__code__.co_names
    assert KafkaProtocol.receive_bytes is receive_bytes
    assert "receive_bytes" in KafkaConnection.data_received.__code__.co_names


def _transport(sock: socket.socket) -> KafkaTCPTransport:
    sock.setblocking(False)
    return KafkaTCPTransport(None, sock)  # only the socket is used by a read


@pytest.mark.parametrize("transport_class", [KafkaTCPTransport, KafkaSSLTransport])
def test_bytes_read_with_the_close_reach_the_protocol_before_the_close(transport_class: type) -> None:
    ours, broker = socket.socketpair()
    broker.sendall(b"refusal")  # what a broker refusing a SASL login sends as it closes
    broker.close()
    transport, read = _transport(ours), transport_class._sock_recv
    assert read(transport) == (b"refusal", None)  # handed to the protocol...
    data, error = read(transport)  # ...and the next read, at the closed socket, reports the close
    assert data == b"" and isinstance(error, KafkaConnectionError)
    ours.close()


def test_a_read_takes_what_the_socket_holds_past_one_recv() -> None:
    ours, broker = socket.socketpair()
    payload = bytes(range(256)) * (3 * RECV_BYTES // 256 + 7)
    writer = threading.Thread(target=broker.sendall, args=(payload,))
    writer.start()
    transport, received = _transport(ours), b""
    while len(received) < len(payload):
        data, error = read_socket(transport)
        assert error is None
        received += data
    writer.join()
    assert received == payload
    assert read_socket(transport) == (b"", None)  # nothing more, no close: the caller waits
    broker.close()
    ours.close()


def test_network_threads_read_side_by_side_without_mixing_their_bytes() -> None:
    # Each client has its own network thread; a read buffer shared between them would mix their bytes.
    payloads = [bytes([n]) * (RECV_BYTES + 12_345) for n in (1, 2, 3)]
    received = [b""] * len(payloads)

    def read(at: int, sock: socket.socket) -> None:
        transport = _transport(sock)
        while len(received[at]) < len(payloads[at]):
            data, error = read_socket(transport)
            assert error is None
            received[at] += data

    pairs = [socket.socketpair() for _ in payloads]
    threads = [threading.Thread(target=read, args=(at, ours)) for at, (ours, _) in enumerate(pairs)]
    threads += [threading.Thread(target=pair[1].sendall, args=(payload,)) for pair, payload in zip(pairs, payloads)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert received == payloads
    for pair in pairs:
        for sock in pair:
            sock.close()


def test_a_transport_closed_by_another_thread_is_a_quiet_close(caplog: pytest.LogCaptureFixture) -> None:
    # A client closing its connections (a rebalance, a stop) while its network thread was about to read:
    # seen once in serve_partitioned's three-process test as a logged AttributeError traceback.
    ours, broker = socket.socketpair()
    transport = _transport(ours)
    transport._sock = None
    with caplog.at_level(logging.DEBUG, logger="ingest.sources.kafka_frames"):
        data, error = read_socket(transport)
    assert data == b"" and isinstance(error, KafkaConnectionError)
    assert "Traceback" not in caplog.text and not [r for r in caplog.records if r.exc_info]
    ours.close()
    broker.close()
