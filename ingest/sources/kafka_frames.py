"""The broker's responses read off the socket with few copies: kafka-python's network thread, half the CPU.

kafka-python 3.0.12 reads a socket 4 KiB a ``recv`` and joins the pieces; its
protocol then copies each piece's share into a frame buffer it zero-filled
first (a slice, then a write), and its decoder reads the whole frame out again
(a slice of the buffer, then ``bytes`` of it) before taking a memoryview of
that. A fetch response of 1 MB went through six copies of itself, and 250
rounds of Python, before its first record was read. For serve that was
~2.2 us of CPU a record on each consumer's network thread (a 540-byte log
line on the input topics, the events it became on the internal ones).

Here:

- :func:`read_socket` reads up to 256 KiB at a time (a pass still reads until
  the socket would block), and keeps what it read before the peer closed: a pass
  that ends at the close returns its bytes without the error, and the next
  read, at the closed socket, reports the close. The library's read returned
  both at once and its read loop dropped the bytes on the error, so a broker
  refusing a SASL login, which sends its answer only as it closes the
  connection, was taken for a network fault and retried until the bootstrap
  timed out (seen on a loaded 2-core CI machine).
- :func:`receive_bytes` splits the bytes into frames as the library's does
  (a 4-byte size, then that many bytes, refused past
  ``receive_message_max_bytes``), but keeps a frame's pieces as they came and
  joins them once, a frame that arrived in one piece not at all;
- the decoder reads it from a :class:`Frame`, whose remainder is a memoryview
  of those bytes, not a copy.

Left: a copy out of the thread's read buffer, and a join where a pass or a
frame came in several pieces. :func:`install` puts both functions
in place of the library's (from :mod:`ingest.sources.kafka_client`, on
import). ``tests/ingest/sources/test_kafka_frames.py`` feeds the same frames,
cut anywhere, to both ways and compares what reaches the decoder.
"""

from __future__ import annotations

import logging
import ssl
import threading
from typing import Any

from kafka.errors import KafkaConnectionError
from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport
from kafka.protocol.parser import KafkaProtocol
from kafka.protocol.schemas.fields.codecs import Int32

__all__ = ["RECV_BYTES", "Frame", "install", "read_socket", "receive_bytes"]

RECV_BYTES = 256 * 1024
"""Bytes asked of one read: 64 KiB gave two thirds of the gain, 1 MiB no more (bench/README, session 18).

Read into a buffer kept by the thread, then copied out: ``recv`` of this size allocated
256 KiB for every read, which glibc maps and unmaps when its heap has no room, ~9 us a
read of a small answer (a live rate's fetch, a heartbeat)."""
_reads = threading.local()

_log = logging.getLogger("kafka.net.transport")  # where the library logs its own read errors
_WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError)


class Frame:
    """A whole response frame, read by kafka-python's decoders as they read the library's ``KafkaBytes``."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pos = 0

    def read(self, nbytes: int | None = None) -> bytes | memoryview:
        """The next ``nbytes`` (fewer at the end); with none, the rest, as a memoryview (the decoder takes one)."""
        start = self._pos
        if nbytes is None:
            self._pos = len(self._data)
            return memoryview(self._data)[start:]
        self._pos = end = min(start + nbytes, len(self._data))
        return self._data[start:end]

    def seek(self, pos: int) -> None:
        self._pos = pos

    def tell(self) -> int:
        return self._pos

    def __len__(self) -> int:
        return len(self._data)


class _Receiving:
    """A frame under way: the pieces received so far and the bytes still missing."""

    __slots__ = ("missing", "pieces")

    def __init__(self, size: int) -> None:
        self.pieces: list[bytes] = []
        self.missing = size


def read_socket(transport: Any) -> tuple[bytes, Exception | None]:
    """Replaces ``_sock_recv`` of both transports: what the socket holds, until it would block; else the error.

    A pass that ends at the peer's close returns its bytes without the error (the
    next pass, at the closed socket, reports it): a broker refusing a SASL login
    sends its answer as it closes the connection (after
    ``connection.failed.authentication.delay.ms``, 100 ms by default), and with
    the library's read ``serve`` took a wrong password for an unreachable broker
    and retried for a minute.
    """
    space = getattr(_reads, "space", None)
    if space is None:  # one a thread: each client's network thread reads its own sockets
        space = _reads.space = memoryview(bytearray(RECV_BYTES))
    pieces: list[bytes] = []
    error: Exception | None = None
    sock = transport._sock
    if sock is None:  # closed by another thread (a client closing at a rebalance or a stop) since it was polled
        return b"", KafkaConnectionError("socket closed")
    while True:
        try:
            size = sock.recv_into(space)
        except _WOULD_BLOCK:
            break
        except BaseException as failure:  # as the library: any other failure closes the connection
            if transport._sock is None:  # closed meanwhile: an expected end, not a fault worth a traceback
                _log.info("%s: socket closed while receiving", transport)
            else:
                _log.exception("%s: Error receiving network data closing socket", transport)
            error = KafkaConnectionError(failure)
            break
        if not size:
            _log.error("%s: socket disconnected", transport)
            error = KafkaConnectionError("socket disconnected")
            break
        pieces.append(space[:size].tobytes())
    received = b"".join(pieces)
    return (received, None) if received else (received, error)


def receive_bytes(protocol: Any, data: bytes) -> list[Any]:
    """Replaces ``KafkaProtocol.receive_bytes``: the responses whose frames ``data`` completes, decoded."""
    responses = []
    pos, end = 0, len(data)
    while pos < end:
        if not protocol._receiving:
            header = protocol._header  # the size, 4 bytes, which may come in pieces too
            take = min(4 - header.tell(), end - pos)
            header.write(data[pos : pos + take])
            pos += take
            if header.tell() < 4:
                break
            header.seek(0)
            size = Int32.decode(header)
            protocol._validate_frame_size(size)
            protocol._rbuffer = _Receiving(size)
            protocol._receiving = True
        frame = protocol._rbuffer
        take = min(frame.missing, end - pos)
        if take:
            frame.pieces.append(data if take == end else data[pos : pos + take])  # all of data: no copy
            frame.missing -= take
            pos += take
        if frame.missing:
            break
        protocol._receiving = False
        responses.append(protocol._process_response(Frame(b"".join(frame.pieces))))  # one piece: joined, not copied
        protocol._reset_buffer()
    return responses


def install() -> None:
    """Put :func:`read_socket` and :func:`receive_bytes` in place of the library's; once is enough."""
    for transport_class in (KafkaTCPTransport, KafkaSSLTransport):
        library_read = transport_class.__dict__["_sock_recv"]
        if library_read is not read_socket:
            read_socket.library_reads[transport_class] = library_read  # type: ignore[attr-defined]
            transport_class._sock_recv = read_socket
    if KafkaProtocol.__dict__["receive_bytes"] is not receive_bytes:
        receive_bytes.library_receive = KafkaProtocol.__dict__["receive_bytes"]  # type: ignore[attr-defined]
        KafkaProtocol.receive_bytes = receive_bytes


read_socket.library_reads = {}  # type: ignore[attr-defined]
