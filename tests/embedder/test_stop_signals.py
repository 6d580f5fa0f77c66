"""StopSignals in this process: a stop signal wakes the main thread whichever thread took it."""

import os
import signal
import threading

import pytest

from embedder.stop_signals import StopSignals


@pytest.fixture
def stop_signals():
    with StopSignals() as stop:
        yield stop


def _signal_from_a_thread_of_its_own(sig: signal.Signals) -> None:
    """kill(2) of a thread's own id: the kernel hands the signal to that thread, not to the main one."""
    thread = threading.Thread(target=lambda: os.kill(threading.get_native_id(), sig))
    thread.start()
    thread.join()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_taken_by_another_thread_wakes_the_main_thread(stop_signals, sig):
    _signal_from_a_thread_of_its_own(sig)
    assert stop_signals.wait(timeout_s=10) == sig


def test_without_a_signal_wait_times_out(stop_signals):
    assert stop_signals.wait(timeout_s=0.05) is None


def test_close_restores_the_handlers_and_the_wakeup_socket():
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    previous_fd = signal.set_wakeup_fd(-1)
    signal.set_wakeup_fd(previous_fd)
    with StopSignals():
        assert signal.getsignal(signal.SIGTERM) is not before[0]
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before
    assert signal.set_wakeup_fd(previous_fd) == previous_fd
