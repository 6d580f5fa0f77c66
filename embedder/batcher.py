"""Micro-batching: merge items from concurrent callers into one model call.

`workers` threads (one per model lane) take items from a bounded queue, each running one batch
at a time: while one batch runs, the next forms and starts on a free lane, instead of waiting for
the first to finish. A batch closes when it holds
`max_batch_size` items, when `max_wait_s` has passed since its first item was queued, or as soon
as `expect_more()` says no other caller is on its way (a lone request never waits for company
that is not coming; under load, items gather while the model runs the previous batch). Each
item has its own Future; if the model call fails, the error is set on every Future of that batch
and the thread goes on with the next batch. Items whose deadline has passed while they waited
are dropped before the model call (nobody waits for them any more), so an overload does not
turn into work for callers that have already given up.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from typing import Generic, Protocol, TypeVar

from embedder.errors import DeadlineExceeded, ModelFailure, Overloaded, Unavailable

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")


class BatchObserver(Protocol):
    def on_batch(self, size: int, seconds: float, failed: bool) -> None: ...

    def on_expired(self, count: int) -> None: ...


class _NoObserver:
    def on_batch(self, size: int, seconds: float, failed: bool) -> None:
        pass

    def on_expired(self, count: int) -> None:
        pass


class Ticket(Generic[T, R]):
    """One queued item: its Future, and a deadline that later callers sharing it may extend."""

    __slots__ = ("item", "future", "enqueued", "deadline", "_state", "_lock")

    def __init__(self, item: T, deadline: float | None, lock: threading.Lock):
        self.item = item
        self.future: Future[R] = Future()
        self.enqueued = time.monotonic()
        self.deadline = deadline  # time.monotonic() value; None waits forever
        self._state = "queued"  # then "taken" or "expired", changed under the batcher's lock
        self._lock = lock

    def extend_deadline(self, deadline: float | None) -> bool:
        """Let one more caller wait for this item. False if the item was already dropped as
        expired, in which case the caller must submit it again."""
        with self._lock:
            if self._state == "expired":
                return False
            if self._state == "queued" and self.deadline is not None and (deadline is None or deadline > self.deadline):
                self.deadline = deadline
            return True


def split_expired(tickets: Sequence[Ticket], now: float) -> tuple[list[Ticket], list[Ticket]]:
    """(live, expired): expired tickets have a deadline at or before `now`."""
    live, expired = [], []
    for t in tickets:
        (expired if t.deadline is not None and t.deadline <= now else live).append(t)
    return live, expired


class MicroBatcher(Generic[T, R]):
    def __init__(
        self,
        process: Callable[[list[T]], Sequence[R]],
        *,
        max_batch_size: int = 64,
        max_wait_s: float = 0.002,
        max_queue: int = 4096,
        observer: BatchObserver | None = None,
        name: str = "micro-batcher",
        expect_more: Callable[[], bool] | None = None,
        workers: int = 1,
    ):
        if max_batch_size < 1 or max_queue < max_batch_size or max_wait_s < 0 or workers < 1:
            raise ValueError("need max_batch_size >= 1, max_queue >= max_batch_size, max_wait_s >= 0, workers >= 1")
        self._process = process
        self._max_batch_size = max_batch_size
        self._max_wait_s = max_wait_s
        self._max_queue = max_queue
        self._observer = observer or _NoObserver()
        self._expect_more = expect_more or (lambda: True)
        self._queue: deque[Ticket[T, R]] = deque()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._closed = False
        self._threads = [
            threading.Thread(target=self._run, name=name if workers == 1 else f"{name}-{i}", daemon=True)
            for i in range(workers)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(
        self,
        items: Sequence[T],
        deadline: float | None = None,
        on_done: Callable[[Ticket[T, R]], None] | None = None,
    ) -> list[Ticket[T, R]]:
        """Queue all items or none: raises Overloaded if they do not fit. `on_done(ticket)` is
        registered before the items are queued and runs in the batcher's thread."""
        with self._cond:
            if self._closed:
                raise Unavailable("the embedder is shutting down")
            if len(self._queue) + len(items) > self._max_queue:
                raise Overloaded(
                    f"embedding queue is full ({len(self._queue)} of {self._max_queue} texts waiting); retry later"
                )
            tickets = [Ticket(item, deadline, self._lock) for item in items]
            if on_done is not None:
                for ticket in tickets:
                    ticket.future.add_done_callback(lambda _f, t=ticket: on_done(t))
            self._queue.extend(tickets)
            self._cond.notify_all()  # the worker forming a batch, whichever it is
            return tickets

    def nudge(self) -> None:
        """Tell the workers that `expect_more()` may have changed. Only a worker forming a batch
        waits on it, and only while texts are queued: with none, no worker is woken (every request
        nudges, cache hits included)."""
        if not self._queue:
            return
        with self._cond:
            self._cond.notify_all()  # the worker forming a batch, whichever it is

    def close(self, timeout: float | None = None) -> None:
        """Stop accepting items, finish the queued ones, and stop the threads (`timeout` for all)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        give_up = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if give_up is None else max(0.0, give_up - time.monotonic()))

    def _take_batch(self) -> list[Ticket[T, R]] | None:
        with self._cond:
            while True:
                while not self._queue:
                    if self._closed:
                        return None
                    self._cond.wait()
                # Another worker may take the queue's head meanwhile: the wait is always counted
                # from the oldest text still queued, and starts over if none is left.
                while (
                    self._queue and len(self._queue) < self._max_batch_size and not self._closed and self._expect_more()
                ):
                    remaining = self._queue[0].enqueued + self._max_wait_s - time.monotonic()
                    if remaining <= 0:
                        break
                    self._cond.wait(remaining)
                if self._queue:
                    break
            batch = [self._queue.popleft() for _ in range(min(len(self._queue), self._max_batch_size))]
            live, expired = split_expired(batch, time.monotonic())
            for ticket in live:
                ticket._state = "taken"
            for ticket in expired:
                ticket._state = "expired"
        # Futures are completed outside the lock: their callbacks may take other locks.
        for ticket in expired:
            ticket.future.set_exception(DeadlineExceeded("the deadline passed while the text was queued"))
        if expired:
            self._observer.on_expired(len(expired))
        return live

    def _run(self) -> None:
        while (batch := self._take_batch()) is not None:
            if batch:
                self._execute(batch)

    def _execute(self, batch: list[Ticket[T, R]]) -> None:
        started = time.perf_counter()
        try:
            results = self._process([t.item for t in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"model returned {len(results)} results for {len(batch)} inputs")
        except Exception as exc:  # noqa: BLE001 - any model failure fails its batch, not the service
            log.exception("model call failed for a batch of %d texts", len(batch))
            self._observer.on_batch(len(batch), time.perf_counter() - started, True)
            error = ModelFailure(f"the model failed on a batch of {len(batch)} texts: {type(exc).__name__}: {exc}")
            for ticket in batch:
                ticket.future.set_exception(error)
            return
        self._observer.on_batch(len(batch), time.perf_counter() - started, False)
        for ticket, result in zip(batch, results):
            ticket.future.set_result(result)
