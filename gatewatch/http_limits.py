"""Limits of serve's HTTP endpoint against clients that hold connections open without sending a request.

uvicorn reads a request's headers without a deadline and accepts connections
until the process runs out of file descriptors: a trial held 300 unauthenticated
half-sent requests open for as long as it liked, and ~1,100 of them took every
descriptor, so ``/healthz`` and authenticated shippers timed out and asyncio
logged ``socket.accept() out of system resource`` with a traceback ~2,000 times
a second. :class:`ConnectionGuard` bounds that:

- **a header deadline**: a connection must complete a request's headers within
  :attr:`HttpLimits.header_read_secs` of opening, or of its previous response
  (keep-alive), else it is closed (Go's ``ReadHeaderTimeout``, Apache's
  ``mod_reqtimeout``). The body has its own deadline (HTTP ingest's 60 s, 408);
- **a connection cap** below the open-file limit: at the cap a new connection
  closes the one that has waited longest for its headers (a client that sends
  its request at once always gets in, however many idle ones are held); when
  every connection is inside a request, the new one is answered 503 and closed;
- **the soft open-file limit raised to the hard one** at start (as Go's runtime
  does: asyncio's epoll has no ``select()`` limit of 1,024);
- **accept failures logged once per** :data:`LOG_INTERVAL_SECS`, with a count and
  what to do, instead of a traceback per attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, ClassVar

from uvicorn.protocols.http.h11_impl import H11Protocol

from ingest.escape import quoted

__all__ = ["ConnectionGuard", "HttpLimits", "open_file_limit"]

log = logging.getLogger(__name__)

HEADER_READ_SECS = 10.0
MAX_CONNECTIONS = 4096
"""The most connections at once, also bounded by half the open-file limit (the rest is for the store, Kafka, files)."""
MAX_BACKLOG = 128  # uvicorn's 2,048 let one burst of accepts pass the cap by that many before any was counted
LOG_INTERVAL_SECS = 10.0
REFUSED_LINGER_SECS = 1.0
_MIN_CONNECTIONS = 16
_FALLBACK_OPEN_FILES = 1024  # where the limit cannot be read (not POSIX)
_ACCEPT_FAILED = "socket.accept() out of system resource"  # asyncio's message (selector_events)
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: text/plain\r\n"
         b"Content-Length: 21\r\nConnection: close\r\n\r\ntoo many connections\n")  # fmt: skip


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """How long a connection may take to send a request's headers, and how many may be open."""

    max_connections: int
    header_read_secs: float = HEADER_READ_SECS

    @property
    def backlog(self) -> int:
        """The listen backlog, also how many connections asyncio accepts at once before any is counted here."""
        return max(8, min(MAX_BACKLOG, self.max_connections // 4))

    @classmethod
    def for_this_process(cls) -> HttpLimits:
        """The defaults: :data:`MAX_CONNECTIONS`, at most half the open-file limit (raised first)."""
        return cls(max(_MIN_CONNECTIONS, min(MAX_CONNECTIONS, open_file_limit() // 2)))


def open_file_limit() -> int:
    """Raise the soft ``RLIMIT_NOFILE`` to the hard one where allowed; return the soft limit now in force."""
    try:
        import resource
    except ImportError:  # pragma: no cover (Windows)
        return _FALLBACK_OPEN_FILES
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS * 2
    # macOS reports an infinite hard limit yet refuses a soft one past kern.maxfilesperproc.
    wanted = hard if hard != resource.RLIM_INFINITY else max(soft, 10240)
    if wanted > soft:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (ValueError, OSError):
            pass
    return int(soft)


class ConnectionGuard:
    """The open connections of one HTTP server and those waiting for their headers, oldest first.

    Touched only from the server's event loop. :meth:`protocol_class` is the uvicorn
    ``http`` protocol that reports to it.
    """

    def __init__(self, limits: HttpLimits) -> None:
        self.limits = limits
        self._open: set[_GuardedH11] = set()
        self._waiting: OrderedDict[_GuardedH11, None] = OrderedDict()
        self._throttle = _Throttled(LOG_INTERVAL_SECS)

    def protocol_class(self) -> type[asyncio.Protocol]:
        """An h11 protocol class bound to this guard (uvicorn builds one instance a connection)."""
        return type("GuardedH11Protocol", (_GuardedH11,), {"guard": self})

    def open_connections(self) -> int:
        return len(self._open)

    def admit(self, connection: _GuardedH11) -> bool:
        """Count a new connection in; at the cap, make room by closing the longest wait, else refuse it."""
        if len(self._open) >= self.limits.max_connections:
            if not self._waiting:
                self._throttle("http_connections_refused", max_connections=self.limits.max_connections,
                               hint="every connection is inside a request: answered 503")  # fmt: skip
                return False
            oldest, _ = self._waiting.popitem(last=False)
            self._open.discard(oldest)
            oldest.close_waiting()
            self._throttle(
                "http_connections_evicted", max_connections=self.limits.max_connections,
                hint="clients hold connections without finishing a request: the oldest are closed",
            )  # fmt: skip
        self._open.add(connection)
        return True

    def waiting(self, connection: _GuardedH11) -> None:
        self._waiting.pop(connection, None)
        self._waiting[connection] = None

    def started(self, connection: _GuardedH11) -> None:
        self._waiting.pop(connection, None)

    def forget(self, connection: _GuardedH11) -> None:
        self._waiting.pop(connection, None)
        self._open.discard(connection)

    def timed_out(self) -> None:
        self._throttle("http_header_timeout", header_read_secs=self.limits.header_read_secs,
                       hint="connections closed without a complete request")  # fmt: skip

    def loop_exception(self, loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """The event loop's exception handler: accept failures in one line an interval, the rest as asyncio has it."""
        if context.get("message") != _ACCEPT_FAILED:
            loop.default_exception_handler(context)
            return
        error = context.get("exception")
        self._throttle(
            "http_accept_failed", error=getattr(error, "strerror", None) or str(error),
            open_connections=len(self._open),
            hint="out of file descriptors: raise the open-file limit (ulimit -n, systemd LimitNOFILE)",
        )  # fmt: skip


class _GuardedH11(H11Protocol):
    """uvicorn's h11 protocol, with the header deadline and the guard's count (see the module docstring)."""

    guard: ClassVar[ConnectionGuard]
    _deadline: asyncio.TimerHandle | None = None
    _waiting_for: object = None  # the cycle (request) in hand when the wait began: a new one means headers came
    _refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if not self.guard.admit(self):
            self._refuse()
            return
        self._await_headers()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        self.guard.forget(self)
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # its request is not read: it was answered 503
        super().data_received(data)
        if self._deadline is not None and self.cycle is not self._waiting_for:
            self._cancel_deadline()
            self.guard.started(self)

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # A pipelined request may have started in there: then its headers are in.
        if not self.transport.is_closing() and (self.cycle is None or self.cycle.response_complete):
            self._await_headers()

    def close_waiting(self) -> None:
        """Close a connection that has not sent a request's headers (the guard needs its place)."""
        self._cancel_deadline()
        self.transport.abort()  # nothing to flush: the descriptor is freed at once

    def _refuse(self) -> None:
        """Answer 503 and close once the client had time to read it: a close with its request unread resets
        the connection, and the client's kernel may drop the answer with it."""
        self._refused = True
        self.transport.write(_BUSY)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSED_LINGER_SECS, self.transport.abort)

    def _await_headers(self) -> None:
        self._cancel_deadline()
        self._waiting_for = self.cycle
        self._deadline = self.loop.call_later(self.guard.limits.header_read_secs, self._headers_late)
        self.guard.waiting(self)

    def _headers_late(self) -> None:
        self._deadline = None
        if self.cycle is self._waiting_for and not self.transport.is_closing():
            self.guard.forget(self)
            self.guard.timed_out()
            self.transport.abort()

    def _cancel_deadline(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None


class _Throttled:
    """Warnings logged at most once per interval each, with how many times they happened since the last line."""

    def __init__(self, interval_secs: float) -> None:
        self.interval_secs = interval_secs
        self._counts: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}

    def __call__(self, event: str, **fields: Any) -> None:
        self._counts[event] += 1
        now = time.monotonic()
        if now - self._logged_at.get(event, -self.interval_secs) < self.interval_secs:
            return
        self._logged_at[event] = now
        count, self._counts[event] = self._counts[event], 0
        text = " ".join(f"{key}={quoted(str(value))}" for key, value in {"count": count, **fields}.items())
        log.warning("event=%s %s", event, text)

