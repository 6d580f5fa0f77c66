import threading
import time

import pytest

from embedder.batcher import MicroBatcher, Ticket, split_expired
from embedder.errors import DeadlineExceeded, ModelFailure, Overloaded, Unavailable


class Recorder:
    def __init__(self, delay_s: float = 0.0, fail_when=None):
        self.batches: list[list] = []
        self.delay_s = delay_s
        self.fail_when = fail_when
        self.started = threading.Event()

    def __call__(self, items):
        self.started.set()
        self.batches.append(list(items))
        if self.delay_s:
            time.sleep(self.delay_s)
        if self.fail_when and self.fail_when(items):
            raise RuntimeError("boom")
        return [x * 10 for x in items]


def results(tickets, timeout=5):
    return [t.future.result(timeout=timeout) for t in tickets]


def test_concurrent_submissions_share_one_model_call():
    rec = Recorder()
    # The batch closes when the tenth text arrives, however slowly the threads start.
    batcher = MicroBatcher(rec, max_batch_size=10, max_wait_s=30.0, max_queue=128)
    try:
        tickets = []
        threads = [threading.Thread(target=lambda i=i: tickets.extend(batcher.submit([i]))) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sorted(results(tickets)) == [i * 10 for i in range(10)]
        assert len(rec.batches) == 1 and sorted(rec.batches[0]) == list(range(10))
    finally:
        batcher.close()


def test_batch_closes_at_max_size_without_waiting():
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=4, max_wait_s=10.0, max_queue=64)
    try:
        started = time.monotonic()
        tickets = batcher.submit(list(range(10)))
        assert results(tickets[:8]) == [i * 10 for i in range(8)]
        assert time.monotonic() - started < 5.0  # two full batches went without the 10 s wait
        assert [len(b) for b in rec.batches[:2]] == [4, 4]
    finally:
        batcher.close()  # drains the last, partial batch
    assert results(tickets[8:]) == [80, 90]


def test_batch_closes_after_max_wait():
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=64, max_wait_s=0.05, max_queue=64)
    try:
        (ticket,) = batcher.submit([7])
        assert ticket.future.result(timeout=5) == 70
        assert rec.batches == [[7]]
    finally:
        batcher.close()


def test_full_queue_refuses_all_or_nothing():
    rec = Recorder(delay_s=0.3)
    batcher = MicroBatcher(rec, max_batch_size=2, max_wait_s=0.0, max_queue=4)
    try:
        first = batcher.submit([1, 2])
        assert rec.started.wait(5)  # the first batch is in the model, the queue is empty again
        queued = batcher.submit([3, 4, 5])
        with pytest.raises(Overloaded, match="queue is full"):
            batcher.submit([6, 7])
        assert batcher.depth == 3  # nothing of the refused request was queued
        assert results(first + queued) == [10, 20, 30, 40, 50]
    finally:
        batcher.close()


def test_failed_call_fails_its_whole_batch_and_the_next_batch_works():
    rec = Recorder(fail_when=lambda items: 13 in items)
    batcher = MicroBatcher(rec, max_batch_size=8, max_wait_s=0.05, max_queue=64)
    try:
        bad = batcher.submit([12, 13, 14])
        for t in bad:
            with pytest.raises(ModelFailure, match="RuntimeError: boom"):
                t.future.result(timeout=5)
        assert results(batcher.submit([15])) == [150]
    finally:
        batcher.close()


def test_wrong_result_count_is_a_model_failure():
    batcher = MicroBatcher(lambda items: [1], max_batch_size=8, max_wait_s=0.05, max_queue=64)
    try:
        tickets = batcher.submit([1, 2])
        with pytest.raises(ModelFailure, match="1 results for 2 inputs"):
            tickets[1].future.result(timeout=5)
    finally:
        batcher.close()


def test_expired_items_are_dropped_before_the_model_call():
    rec = Recorder(delay_s=0.2)
    batcher = MicroBatcher(rec, max_batch_size=1, max_wait_s=0.0, max_queue=64)
    try:
        (slow,) = batcher.submit([1])
        assert rec.started.wait(5)
        (expiring,) = batcher.submit([2], deadline=time.monotonic() + 0.05)
        (patient,) = batcher.submit([3], deadline=time.monotonic() + 10)
        assert slow.future.result(timeout=5) == 10
        with pytest.raises(DeadlineExceeded):
            expiring.future.result(timeout=5)
        assert patient.future.result(timeout=5) == 30
        assert [2] not in rec.batches
        assert expiring.extend_deadline(time.monotonic() + 10) is False  # too late to join
    finally:
        batcher.close()


def test_extend_deadline_keeps_a_shared_item_alive():
    rec = Recorder(delay_s=0.2)
    batcher = MicroBatcher(rec, max_batch_size=1, max_wait_s=0.0, max_queue=64)
    try:
        batcher.submit([1])
        assert rec.started.wait(5)
        (shared,) = batcher.submit([2], deadline=time.monotonic() + 0.05)
        assert shared.extend_deadline(None) is True  # a second caller without a deadline joins
        assert shared.future.result(timeout=5) == 20
    finally:
        batcher.close()


def test_split_expired_is_pure():
    lock = threading.Lock()
    a, b, c = Ticket(1, None, lock), Ticket(2, 5.0, lock), Ticket(3, 15.0, lock)
    assert split_expired([a, b, c], now=10.0) == ([a, c], [b])


def test_closed_batcher_refuses_new_items_after_draining():
    rec = Recorder()
    batcher = MicroBatcher(rec, max_batch_size=8, max_wait_s=1.0, max_queue=64)
    tickets = batcher.submit([1, 2])
    batcher.close()
    assert results(tickets) == [10, 20]
    with pytest.raises(Unavailable, match="shutting down"):
        batcher.submit([3])


def test_bad_configuration_is_refused():
    with pytest.raises(ValueError):
        MicroBatcher(lambda x: x, max_batch_size=8, max_queue=4)


def test_a_lone_item_goes_at_once_when_nobody_else_is_on_the_way():
    rec = Recorder()
    arriving = [0]
    batcher = MicroBatcher(rec, max_batch_size=64, max_wait_s=30.0, max_queue=64, expect_more=lambda: arriving[0] > 0)
    try:
        started = time.monotonic()
        (alone,) = batcher.submit([1])
        assert alone.future.result(timeout=5) == 10 and time.monotonic() - started < 5.0  # not the 30 s wait
        arriving[0] = 1  # another caller is on its way: the batch waits for it
        (first,) = batcher.submit([2])
        time.sleep(0.2)
        assert not first.future.done()
        (second,) = batcher.submit([3])
        arriving[0] = 0
        batcher.nudge()
        assert results([first, second]) == [20, 30]
        assert rec.batches == [[1], [2, 3]]
    finally:
        batcher.close()


def test_with_two_workers_a_batch_starts_while_another_runs():
    running = threading.Barrier(2, timeout=5)  # broken unless two batches run at once

    def process(items):
        running.wait()
        return [x * 10 for x in items]

    batcher = MicroBatcher(process, max_batch_size=1, max_wait_s=0.0, max_queue=64, workers=2)
    try:
        first, second = batcher.submit([1]), batcher.submit([2])
        assert results(first) + results(second) == [10, 20]
    finally:
        batcher.close(timeout=5)
    assert not any(t.is_alive() for t in batcher._threads)
    one = MicroBatcher(Recorder(delay_s=0.2), max_batch_size=1, max_wait_s=0.0, max_queue=64)
    try:
        started = time.monotonic()
        assert results(one.submit([1, 2])) == [10, 20]
        assert time.monotonic() - started >= 0.4  # one worker: one batch after the other
    finally:
        one.close()
