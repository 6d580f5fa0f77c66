"""Waiting for SIGTERM or SIGINT in the main thread of a process with many threads.

The kernel hands a signal sent to a process to any one of its threads that does not block it,
and CPython runs a Python handler only in the main thread, once that thread executes bytecode
again. A main thread asleep in `threading.Event.wait()` therefore sleeps through a SIGTERM that
landed on one of TensorFlow's or gRPC's threads: the embedder did not start its drain until a
second SIGTERM came (seen once in CI; sending SIGTERM to one of its other threads does it every
time). `StopSignals` waits in select() on the socket that CPython's C-level handler writes the
signal's number to (`signal.set_wakeup_fd`), whichever thread took the signal, as gunicorn's
arbiter and asyncio do.
"""

from __future__ import annotations

import select
import signal
import socket
import time

STOP = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Install with `StopSignals()` in the main thread, before starting threads or not; `wait()`
    returns the first of `signals` that arrives. `close()` restores the previous handlers."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP):
        self._signals = frozenset(int(sig) for sig in signals)
        self._received: list[int] = []  # by the Python-level handler, once the main thread runs
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        self._previous = {sig: signal.signal(sig, self._record) for sig in self._signals}

    def _record(self, signum, frame) -> None:
        # Runs in the main thread when it next executes bytecode: here, once select() returns.
        # It counts even when the wakeup byte was dropped (a socket full of other signals' bytes).
        self._received.append(signum)

    def wait(self, timeout_s: float | None = None) -> signal.Signals | None:
        """The first stop signal received (also one received before this call), or None after
        `timeout_s` seconds without one. Other signals' wakeups do not extend the wait."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            if self._received:
                return signal.Signals(self._received[0])
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            readable, _, _ = select.select([self._reader], [], [], left)
            self._drain(readable)
            if self._received:
                return signal.Signals(self._received[0])
            if deadline is not None and time.monotonic() >= deadline:
                return None

    def _drain(self, readable: list) -> None:
        """Empty the wakeup socket; a stop signal's byte counts at once (its handler may not have
        run yet when select() returns)."""
        while readable:
            try:
                data = self._reader.recv(4096)
            except BlockingIOError:
                return
            if not data:
                return
            self._received.extend(number for number in data if number in self._signals)

    def close(self) -> None:
        signal.set_wakeup_fd(self._previous_fd)
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._reader.close()
        self._writer.close()

    def __enter__(self) -> StopSignals:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
