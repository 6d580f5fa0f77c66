"""The pool worker's books (api/web/pool_worker.py) on real sockets and a real epoll, without a
gunicorn around it: the two races that tests/api/test_pool_worker.py cannot provoke on demand."""

from __future__ import annotations

import logging
import os
import select
import socket

import pytest
from gunicorn.config import Config
from gunicorn.workers.gthread import TConn

from api.web.pool_worker import PoolThreadWorker


@pytest.fixture
def worker():
    cfg = Config()
    cfg.set("threads", 2)
    cfg.set("keepalive", 75)
    made = PoolThreadWorker(0, os.getpid(), [], None, 30, cfg, logging.getLogger("pool-worker-test"))
    made._epoll = select.epoll()
    made.PIPE = os.pipe()  # init_process's: the main thread's wake-up
    made.alive = True
    yield made
    made._close_all()
    made.tmp.close()
    for fd in made.PIPE:
        os.close(fd)


def connection(worker, *, fd: int | None = None) -> tuple[TConn, socket.socket]:
    """A connection as an accept gives it to the worker (on descriptor `fd` if given), and the
    client's end."""
    server, client = socket.socketpair()
    if fd is not None and server.fileno() != fd:
        moved = socket.socket(fileno=os.dup2(server.fileno(), fd))
        server.close()
        server = moved
    conn = TConn(worker.cfg, server, ("127.0.0.1", 50000), ("127.0.0.1", 8000))
    worker._add(conn)
    return conn, client


def test_an_event_meant_for_an_earlier_connection_re_parks_the_new_one(worker, monkeypatch):
    """A thread holding an event for a descriptor whose connection closed meanwhile, the number
    already a new connection's, must not read from the new one (a blocking read would hold the
    thread until that client speaks): it puts it back on the epoll, its timeout unchanged."""
    conn, client = connection(worker)
    deadline = conn.timeout
    monkeypatch.setattr(worker, "handle", lambda conn: pytest.fail("handled a connection with nothing to read"))
    assert worker._claim(conn.fd) is conn and conn not in worker.keepalived_conns
    worker._serve_connection(conn)
    assert conn in worker.keepalived_conns and conn.timeout == deadline
    assert worker._epoll.poll(0) == []
    client.send(b"G")
    assert [fd for fd, _ in worker._epoll.poll(1)] == [conn.fd]  # armed again
    client.close()


def test_a_socket_its_handler_closed_leaves_the_books_true_when_its_number_is_taken(worker, monkeypatch):
    """gthread's handle() closes some sockets itself (a body failing after its headers); by the
    time the thread takes the connection out of the books, a concurrent accept may have given its
    number to a new connection, which must stay in the books, counted once."""
    first, first_client = connection(worker)
    first_client.send(b"GET / HTTP/1.1\r\n\r\n")
    assert worker._claim(first.fd) is first
    second = {}

    def handle_closing_and_racing(conn):
        fd = conn.sock.fileno()
        conn.sock.close()
        second["conn"], second["client"] = connection(worker, fd=fd)  # another thread's accept
        return False

    monkeypatch.setattr(worker, "handle", handle_closing_and_racing)
    worker._serve_connection(first)
    assert worker._conns == {first.fd: second["conn"]} and worker.nr_conns == 1
    assert second["conn"] in worker.keepalived_conns
    second["client"].send(b"G")
    assert [fd for fd, _ in worker._epoll.poll(1)] == [second["conn"].fd]  # still registered
    first_client.close()
    second["client"].close()


def test_an_app_raising_system_exit_ends_neither_the_thread_nor_leaves_its_connection(worker, monkeypatch):
    conn, client = connection(worker)
    client.send(b"GET /exit HTTP/1.1\r\n\r\n")
    assert worker._claim(conn.fd) is conn

    def exiting(conn):
        raise SystemExit(3)

    monkeypatch.setattr(worker, "handle", exiting)
    worker._serve_connection(conn)  # returns: the pool thread goes on
    assert worker._conns == {} and worker.nr_conns == 0 and not worker.alive
    assert os.read(worker.PIPE[0], 16)  # the main thread is woken to restart the worker
    client.settimeout(2)
    with pytest.raises(ConnectionResetError):  # closed, its request unread
        client.recv(1)
    client.close()
