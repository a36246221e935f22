"""SIGTERM / SIGINT reach a service's ``request_stop`` without the handler taking any lock."""

from __future__ import annotations

import os
import signal
import threading

from gatewatch.stop_signals import SignalRelay, stop_on_signals


def test_a_signal_while_the_main_thread_holds_the_stop_events_lock_does_not_wait_for_it() -> None:
    stop = threading.Event()
    relay = SignalRelay(lambda signum: stop.set())
    try:
        # Where Event.wait can leave the main thread between two bytecodes, when a handler runs:
        # a handler that set the Event itself would wait here forever for its own thread's lock.
        with stop._cond:  # type: ignore[attr-defined]
            relay.on_signal(signal.SIGTERM)
        assert stop.wait(10)
    finally:
        relay.close()


def test_sigterm_and_sigint_call_request_stop_with_their_number_and_the_handlers_are_restored() -> None:
    seen: list[int] = []
    both = threading.Event()

    def request_stop(signum: int) -> None:
        seen.append(signum)
        if len(seen) == 2:
            both.set()

    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signals(request_stop):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGINT)
        assert both.wait(10)
    assert seen == [signal.SIGTERM, signal.SIGINT]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert not any(thread.name == "gatewatch-signals" for thread in threading.enumerate())
