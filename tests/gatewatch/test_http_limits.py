"""serve's HTTP server against clients that hold connections: real sockets against the real uvicorn server.

A trial held 300 half-sent unauthenticated requests open for as long as it liked, and ~1,100 took every
file descriptor: /healthz and shippers timed out, and asyncio logged a traceback ~2,000 times a second.
"""

from __future__ import annotations

import asyncio
import logging
import resource
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest

from gatewatch.http_limits import ConnectionGuard, HttpLimits, open_file_limit
from gatewatch.metrics import HealthServer, ServeMetrics

HALF_SENT = b"POST /v1/ingest/app HTTP/1.1\r\nHost: x\r\n"  # headers never finished, no token


@pytest.fixture
def server() -> Iterator[HealthServer]:
    http = HealthServer("127.0.0.1:0", ServeMetrics(), lambda: (True, True, {}),
                        limits=HttpLimits(max_connections=8, header_read_secs=0.5))  # fmt: skip
    yield http
    http.close()


def _half_sent(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(HALF_SENT)
    return sock


def _closed_by_server(sock: socket.socket, within_secs: float) -> bool:
    """Whether the server closes ``sock`` within the time (what it still sends before that is read and dropped)."""
    deadline = time.monotonic() + within_secs
    try:
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if sock.recv(4096) == b"":
                return True
    except ConnectionResetError:
        return True
    except TimeoutError:
        pass
    return False


def _healthz(port: int) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(4096):
            answer += chunk
        return answer


def test_a_request_whose_headers_do_not_come_is_closed_at_the_deadline(server: HealthServer) -> None:
    sock = _half_sent(server.port)
    started = time.monotonic()
    assert _closed_by_server(sock, within_secs=5)
    assert 0.4 < time.monotonic() - started < 3
    sock.close()
    # A connection that never sends a byte too.
    silent = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    assert _closed_by_server(silent, within_secs=5)
    silent.close()


def test_a_kept_alive_connection_must_send_its_next_headers_in_time(server: HealthServer) -> None:
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the next request, never finished
        assert _closed_by_server(sock, within_secs=5)


def test_connections_held_without_a_request_cannot_keep_healthz_out(server: HealthServer) -> None:
    held = [_half_sent(server.port) for _ in range(8)]  # every place taken
    assert _healthz(server.port).startswith(b"HTTP/1.1 200")
    # The oldest wait made room; the others are still open (until their deadline).
    assert _closed_by_server(held[0], within_secs=0.3)
    assert not _closed_by_server(held[-1], within_secs=0.05)
    assert server.guard.open_connections() <= 8
    for sock in held:
        sock.close()


def test_more_connections_than_the_cap_never_take_more_places(server: HealthServer) -> None:
    held = [_half_sent(server.port) for _ in range(40)]
    time.sleep(0.2)
    assert server.guard.open_connections() <= 8
    assert _healthz(server.port).startswith(b"HTTP/1.1 200")
    for sock in held:
        sock.close()


def test_accept_failures_are_logged_once_an_interval_not_once_an_attempt(caplog: pytest.LogCaptureFixture) -> None:
    guard = ConnectionGuard(HttpLimits(max_connections=8))
    loop = asyncio.new_event_loop()
    try:
        with caplog.at_level(logging.WARNING, logger="gatewatch.http_limits"):
            for _ in range(2048):  # asyncio retries accept() up to the backlog, each failure reported
                guard.loop_exception(loop, {"message": "socket.accept() out of system resource",
                                            "exception": OSError(24, "Too many open files")})  # fmt: skip
    finally:
        loop.close()
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1, lines
    assert "event=http_accept_failed" in lines[0] and "ulimit -n" in lines[0] and "Too many open files" in lines[0]
    assert not any(r.exc_info for r in caplog.records)


def test_the_soft_open_file_limit_is_raised_to_the_hard_one() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard <= 256:
        pytest.skip(f"hard limit {hard}: nothing to raise to here")
    resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
    try:
        assert open_file_limit() == hard
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        assert HttpLimits.for_this_process().max_connections <= hard // 2
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_when_every_connection_is_inside_a_request_a_new_one_is_answered_503() -> None:
    def slow_route(app: Any) -> None:
        @app.get("/slow")
        async def slow() -> dict[str, str]:
            await asyncio.sleep(2)
            return {}

    http = HealthServer("127.0.0.1:0", ServeMetrics(), lambda: (True, True, {}), routes=slow_route,
                        limits=HttpLimits(max_connections=4, header_read_secs=5))  # fmt: skip
    busy = []
    try:
        for _ in range(4):
            sock = socket.create_connection(("127.0.0.1", http.port), timeout=5)
            sock.sendall(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            busy.append(sock)
        time.sleep(0.3)
        answer = _healthz(http.port)
        assert answer.startswith(b"HTTP/1.1 503") and b"Retry-After: 1" in answer, answer
        assert busy[0].recv(4096).startswith(b"HTTP/1.1 200")  # the requests in hand were not cut
    finally:
        for sock in busy:
            sock.close()
        http.close()
