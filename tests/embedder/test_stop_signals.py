"""StopSignals in this process: a stop signal wakes the main thread whichever thread took it."""

import os
import signal
import threading
import time

import pytest

from embedder.stop_signals import StopSignals


@pytest.fixture
def stop_signals():
    with StopSignals() as stop:
        yield stop


@pytest.fixture
def other_signal():
    """SIGUSR1 with a Python handler of its own (its wakeup bytes go to the same socket)."""
    previous = signal.signal(signal.SIGUSR1, lambda *_: None)
    yield signal.SIGUSR1
    signal.signal(signal.SIGUSR1, previous)


def _from_another_thread(sig: signal.Signals, *, after_s: float = 0.0, times: int = 1, every_s: float = 0.0):
    """kill(2) of a thread's own id: the kernel hands the signal to that thread, not to the main one."""

    def send():
        time.sleep(after_s)
        for _ in range(times):
            os.kill(threading.get_native_id(), sig)
            time.sleep(every_s)

    thread = threading.Thread(target=send)
    thread.start()
    return thread


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_another_thread_takes_while_the_main_thread_waits_wakes_it(stop_signals, sig):
    # Event.wait() in the main thread slept through this one (the main thread runs Python
    # handlers only once it executes bytecode again).
    sender = _from_another_thread(sig, after_s=0.2)
    started = time.monotonic()
    assert stop_signals.wait(timeout_s=10) == sig
    assert time.monotonic() - started < 5
    sender.join()


def test_a_signal_received_before_the_wait_is_returned(stop_signals):
    _from_another_thread(signal.SIGTERM).join()
    assert stop_signals.wait(timeout_s=10) == signal.SIGTERM


def test_without_a_signal_wait_times_out(stop_signals):
    assert stop_signals.wait(timeout_s=0.05) is None


def test_other_signals_neither_hide_a_stop_signal_nor_extend_the_wait(stop_signals, other_signal):
    _from_another_thread(other_signal, times=600).join()  # more wakeup bytes than the socket holds
    _from_another_thread(signal.SIGTERM).join()
    assert stop_signals.wait(timeout_s=10) == signal.SIGTERM
    with StopSignals() as fresh:
        sender = _from_another_thread(other_signal, times=100, every_s=0.01)
        started = time.monotonic()
        assert fresh.wait(timeout_s=0.2) is None
        assert time.monotonic() - started < 0.9
        sender.join()


def test_close_restores_the_handlers_and_the_wakeup_socket():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    previous_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(previous_fd)
    with StopSignals():
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert signal.set_wakeup_fd(previous_fd) == previous_fd
