"""The router's gunicorn worker: gthread's request handling, without its per-request round trip.

gunicorn's gthread worker runs an event loop on the main thread. For every request on a kept-alive
connection that loop wakes, takes the socket out of its selector and submits it to a thread pool;
when the answer is sent the pool thread hands the socket back through a pipe, and the loop wakes
again to register it once more. That is two thread wake-ups, a pipe write and read and two
`epoll_ctl` calls a request, each a hand-off of the GIL between threads of a busy process (stop 32
measured open-loop arrivals costing 16% more router CPU an answer than closed-loop ones for it).

Here the pool threads wait on the worker's epoll themselves. Every connection is registered with
EPOLLONESHOT: a readable connection wakes exactly one thread, which reads the request, answers
it, and re-arms the connection with one `epoll_ctl`, so a request costs one wake-up. The
listening sockets are armed the same way; after each accept the thread pauses ACCEPT_PAUSE_S
before re-arming, so a burst of new connections spreads over the workers (all poll the same
listening socket, and keep-alive connections stay with the worker that accepted them: a closed
loop of 8 connections measured 1,060 answers/s instead of 2,100-2,300 when one worker took them
all). The pause holds that one thread, never the others' requests.

A connection is only given to a thread once it is readable, so an idle or slow client holds no
thread while it says nothing. The main thread keeps gunicorn's heartbeat, closes connections
idle past the keep-alive timeout, and on SIGTERM stops accepting, lets the requests in flight
finish, answers what arrives on kept-alive connections within STOP_KEEPALIVE_LINGER with
`Connection: close`, then returns early enough for gunicorn's `worker_exit` hook (the router
flushes its inference log there) to run before the graceful timeout.

Request parsing, the WSGI call, keep-alive and error handling are gthread's own
(`ThreadWorker.handle`), unchanged.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import threading
import time

from gunicorn.workers import base
from gunicorn.workers.gthread import STOP_KEEPALIVE_LINGER, TConn, ThreadWorker

ACCEPT_PAUSE_S = 0.001  # after an accept, before this worker takes the next new connection
ACCEPTING = select.EPOLLIN | select.EPOLLONESHOT  # a listener; with EPOLLONESHOT alone it is off
ARMED = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLONESHOT  # a connection waiting to be read
DRAIN_MARGIN_S = 3.0  # of the graceful timeout, left for the threads to end and worker_exit to run
FIRST_REQUEST_S = 5.0  # a new connection's least time to send its first request (keep-alive may be 0)
HOUSEKEEPING_S = 1.0  # heartbeat, keep-alive expiry and the listeners' state, on the main thread
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)
OUT_OF_RESOURCES_PAUSE_S = 0.5  # listeners off after accept() ran out of descriptors or memory
POLL_S = 0.5  # a pool thread's longest wait on the epoll, to notice the end of the worker


def _readable(fd: int) -> bool:
    """Whether `fd` has something to read (or has hung up) now, without waiting."""
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))


class PoolThreadWorker(ThreadWorker):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._epoll: select.epoll | None = None
        self._lock = threading.Lock()  # guards everything below and every epoll_ctl
        self._conns: dict[int, TConn] = {}  # fd -> connection, idle or being served
        self.keepalived_conns = set()  # the idle ones, waiting on the epoll (gthread's handle_request counts them)
        self._listeners: dict[int, socket.socket] = {}  # registered for the worker's whole life
        self._listening = False  # whether the listeners are armed
        self._accept_paused_until = 0.0
        self._accept_error_logged = 0.0
        self._stopped = False  # the pool threads end

    # -- lifecycle

    def init_process(self) -> None:
        self._epoll = select.epoll()
        base.Worker.init_process(self)  # gthread's would build its selector and executor; not used

    def handle_exit(self, sig, frame) -> None:
        base.Worker.handle_exit(self, sig, frame)  # gthread's wakes its own loop; the signal's
        # wake-up byte on self.PIPE ends the main thread's wait here (_sleep)

    def handle_quit(self, sig, frame) -> None:
        self._stopped = True
        base.Worker.handle_quit(self, sig, frame)

    def run(self) -> None:
        for listener in self.sockets:
            listener.setblocking(False)
            self._listeners[listener.fileno()] = listener
            self._epoll.register(listener.fileno(), select.EPOLLONESHOT)
        threads = [threading.Thread(target=self._serve, name=f"pool-{i}", daemon=True) for i in range(self.cfg.threads)]
        for thread in threads:
            thread.start()
        try:
            while self.alive:
                self.notify()
                if not self.is_parent_alive():
                    break
                if not all(thread.is_alive() for thread in threads):
                    self.log.error("a pool thread ended: restarting the worker")
                    break
                self._expire(time.monotonic())
                with self._lock:
                    self._update_listening_locked()
                self._sleep(HOUSEKEEPING_S)
            self.alive = False
            self._drain()
        finally:
            self._stopped = True
            deadline = time.monotonic() + POLL_S * 2
            for thread in threads:
                thread.join(max(0.0, deadline - time.monotonic()))
            self._close_all()

    def _sleep(self, seconds: float) -> None:
        """Wait on the signal wake-up pipe (base.Worker.init_signals), so SIGTERM ends the wait at
        once; a pool thread ending the worker (max_requests, a failed thread) writes to it too."""
        try:
            readable, _, _ = select.select([self.PIPE[0]], [], [], seconds)
            if readable:
                os.read(self.PIPE[0], 4096)
        except (BlockingIOError, InterruptedError):
            pass

    def _wake(self) -> None:
        try:
            os.write(self.PIPE[1], b".")
        except OSError:
            pass  # the pipe is full: the main thread is woken already

    def _drain(self) -> None:
        """Stop accepting; wait for the requests in flight, and for the kept-alive connections
        to fall idle past the linger, ending DRAIN_MARGIN_S before the graceful timeout."""
        with self._lock:
            self._update_listening_locked()
            linger = time.monotonic() + STOP_KEEPALIVE_LINGER
            for conn in self.keepalived_conns:
                conn.timeout = min(conn.timeout, linger)
        budget = self.cfg.graceful_timeout - DRAIN_MARGIN_S
        deadline = time.monotonic() + max(budget, self.cfg.graceful_timeout / 2)
        while time.monotonic() < deadline:
            self.notify()
            self._expire(time.monotonic())
            with self._lock:
                if not self._conns:
                    return
            time.sleep(0.05)
        with self._lock:
            left = len(self._conns)
        self.log.warning("graceful timeout: %d connections still open", left)

    # -- the books, under the lock

    def _update_listening_locked(self) -> None:
        """Arm the listeners while this worker takes connections, disarm them otherwise: all
        together, so several listeners and the connection limit cannot disagree."""
        wanted = (
            self.alive and self.nr_conns < self.worker_connections and time.monotonic() >= self._accept_paused_until
        )
        if wanted != self._listening:
            self._listening = wanted
            for fd in self._listeners:
                self._epoll.modify(fd, ACCEPTING if wanted else select.EPOLLONESHOT)

    def _park_locked(self, conn: TConn, timeout: float) -> None:
        conn.timeout = min(timeout, time.monotonic() + STOP_KEEPALIVE_LINGER) if not self.alive else timeout
        self.keepalived_conns.add(conn)

    def _add(self, conn: TConn) -> None:
        with self._lock:
            fd = conn.fd = conn.sock.fileno()  # kept: a closed socket's fileno() is -1
            stale = self._conns.get(fd)  # a connection whose handler closed the socket itself
            if stale is not None:
                self.keepalived_conns.discard(stale)
            self._conns[fd] = conn
            self.nr_conns = len(self._conns)
            self._park_locked(conn, time.monotonic() + max(self.cfg.keepalive, FIRST_REQUEST_S))
            self._epoll.register(fd, ARMED)
            self._update_listening_locked()

    def _claim(self, fd: int) -> TConn | None:
        """The idle connection of `fd` for this thread, or None when another thread has it or it is gone."""
        with self._lock:
            conn = self._conns.get(fd)
            if conn is None or conn not in self.keepalived_conns:
                return None
            self.keepalived_conns.discard(conn)
            return conn

    def _park(self, conn: TConn, *, keep_timeout: bool = False) -> None:
        """Back to waiting on the epoll: after an answer (a new keep-alive timeout), or unread."""
        with self._lock:
            if self._conns.get(conn.fd) is not conn:
                return
            self._park_locked(conn, conn.timeout if keep_timeout else time.monotonic() + self.cfg.keepalive)
            self._epoll.modify(conn.fd, ARMED)

    def _forget(self, conn: TConn) -> bool:
        """Out of the worker's books; whether its socket is still open for the caller to close."""
        is_open = conn.sock.fileno() >= 0
        with self._lock:
            if self._conns.get(conn.fd) is conn:
                del self._conns[conn.fd]
                self.nr_conns = len(self._conns)
                if is_open:  # a closed socket left the epoll by itself, and its number may be
                    self._epoll.unregister(conn.fd)  # a new connection's already
            self.keepalived_conns.discard(conn)
            self._update_listening_locked()
        return is_open

    def _close(self, conn: TConn, *, graceful: bool = False) -> None:
        if self._forget(conn):
            try:
                conn.close(graceful=graceful)
            except OSError:
                pass

    def _expire(self, now: float) -> None:
        expired = []
        with self._lock:  # taken out of the books at once: no thread can claim one meanwhile
            for conn in [c for c in self.keepalived_conns if c.timeout <= now]:
                self.keepalived_conns.discard(conn)
                del self._conns[conn.fd]
                self._epoll.unregister(conn.fd)
                expired.append(conn)
            self.nr_conns = len(self._conns)
            self._update_listening_locked()
        for conn in expired:
            conn.close()

    def _close_all(self) -> None:
        with self._lock:
            conns = list(self._conns.values())
            self._conns.clear()
            self.keepalived_conns.clear()
            self.nr_conns = 0
        for conn in conns:
            if conn.sock.fileno() >= 0:
                conn.close()
        self._epoll.close()

    # -- pool threads

    def _serve(self) -> None:
        while not self._stopped:
            try:
                events = self._epoll.poll(POLL_S, 1)  # one event: the others stay for other threads
            except (OSError, ValueError):
                if self._stopped:
                    return  # the epoll was closed at the end
                raise
            for fd, _mask in events:
                try:
                    if fd in self._listeners:
                        self._accept(fd)
                    else:
                        conn = self._claim(fd)
                        if conn is not None:
                            self._serve_connection(conn)
                except Exception:  # a bug here must not end the thread and strand its connection
                    self.log.exception("pool thread: event on descriptor %d", fd)

    def _accept(self, fd: int) -> None:
        try:
            sock, client = self._listeners[fd].accept()
        except OSError as exc:
            if exc.errno in OUT_OF_RESOURCES:
                self._pause_accepting(exc)
            elif exc.errno not in (errno.EAGAIN, errno.ECONNABORTED, errno.EWOULDBLOCK):
                self.log.exception("accept failed")
        else:
            self._add(TConn(self.cfg, sock, client, self._listeners[fd].getsockname()))
        time.sleep(ACCEPT_PAUSE_S)
        with self._lock:
            if self._listening:  # re-armed after its one event; off, it waits for _update_listening_locked
                self._epoll.modify(fd, ACCEPTING)

    def _pause_accepting(self, exc: OSError) -> None:
        """Out of descriptors or memory: take no connection for a while rather than spin on the
        listener, and say so once a minute at most."""
        now = time.monotonic()
        with self._lock:
            self._accept_paused_until = now + OUT_OF_RESOURCES_PAUSE_S
            self._update_listening_locked()
            log = now - self._accept_error_logged >= 60.0
            if log:
                self._accept_error_logged = now
        if log:
            self.log.error("accept failed, not accepting for %.1f s: %s", OUT_OF_RESOURCES_PAUSE_S, exc)

    def _serve_connection(self, conn: TConn) -> None:
        if not _readable(conn.fd):  # the event was for an earlier connection with this number
            self._park(conn, keep_timeout=True)
            return
        conn.data_ready = True  # readable: gthread's handle() need not wait for it
        try:
            while self.handle(conn):
                if not conn.parser.unreader.buf.getvalue():
                    self._park(conn)  # nothing read ahead: wait for the next request on the epoll
                    return
        except BaseException as exc:  # handle() lets an app's SystemExit through; never a thread's end
            self.log.exception("connection failed")
            self._close(conn)
            if not isinstance(exc, Exception):
                self.alive = False  # the app asked the process to end: restart the worker
                self._wake()
            return
        self._close(conn, graceful=conn.initialized)
        if not self.alive:  # max_requests reached in handle_request
            self._wake()
