"""SIGTERM and SIGINT for a service: its stop requested on a thread of its own, never in the signal handler.

A Python signal handler runs in the main thread between two bytecodes, possibly while that thread
holds a ``threading.Event``'s lock (on its way in or out of ``Event.wait``). A handler that sets that
Event then waits forever for a lock its own thread holds: a fault trial saw ``serve --stages detect``
ignore a SIGTERM that way, about once in 40 (its main thread idles in ``stop.wait(1.0)``). Here the
handler only writes the signal's number to a pipe, which takes no lock, and a relay thread calls
``request_stop``.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalRelay:
    """Calls ``request_stop(signum)`` on its own thread for every signal :meth:`on_signal` is given."""

    def __init__(self, request_stop: Callable[[int], None]) -> None:
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._thread = threading.Thread(target=self._relay, args=(request_stop,), name="gatewatch-signals", daemon=True)
        self._thread.start()

    def on_signal(self, signum: int, frame: Any = None) -> None:
        """The signal handler: no lock, no logging, nothing that can wait."""
        try:
            os.write(self._write, bytes([signum]))
        except OSError:  # the pipe is full of earlier signals: the stop is requested already
            pass

    def close(self) -> None:
        """End the relay thread (after the handlers are restored: the pipe's descriptors are reused)."""
        os.close(self._write)
        self._thread.join()
        os.close(self._read)

    def _relay(self, request_stop: Callable[[int], None]) -> None:
        while signals := os.read(self._read, 64):  # b"" once the write end is closed
            for signum in signals:
                request_stop(signum)


@contextmanager
def stop_on_signals(request_stop: Callable[[int], None]) -> Iterator[None]:
    """Inside, SIGTERM and SIGINT call ``request_stop(signum)`` (from the main thread only: Python's rule)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    relay = SignalRelay(request_stop)
    restore = [(signum, signal.signal(signum, relay.on_signal)) for signum in STOP_SIGNALS]
    try:
        yield
    finally:
        for signum, handler in restore:
            signal.signal(signum, handler)
        relay.close()
