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

STOP = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """Install with `StopSignals()` in the main thread, before starting threads or not; `wait()`
    returns the first of `signals` that arrives. `close()` restores the previous handlers."""

    def __init__(self, signals: tuple[signal.Signals, ...] = STOP):
        self._signals = frozenset(int(sig) for sig in signals)
        self._reader, self._writer = socket.socketpair()
        self._reader.setblocking(False)
        self._writer.setblocking(False)
        self._previous_fd = signal.set_wakeup_fd(self._writer.fileno(), warn_on_full_buffer=False)
        # A Python handler must be installed for the C handler to write the byte; ours does
        # nothing, the byte is what wait() reads.
        self._previous = {sig: signal.signal(sig, _ignore) for sig in self._signals}

    def wait(self, timeout_s: float | None = None) -> signal.Signals | None:
        """The first stop signal received (also one received before this call), or None after
        `timeout_s` seconds without one."""
        while True:
            readable, _, _ = select.select([self._reader], [], [], timeout_s)
            if not readable:
                return None
            try:
                data = self._reader.recv(256)
            except BlockingIOError:
                continue
            for number in data:
                if number in self._signals:
                    return signal.Signals(number)

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


def _ignore(signum, frame) -> None:
    """The Python-level handler: StopSignals.wait() reads the signal from the wakeup socket."""
