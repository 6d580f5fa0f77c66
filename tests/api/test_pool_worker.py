"""The router's gunicorn worker (api/web/pool_worker.py), under a real gunicorn with the deployed
configuration, serving a small WSGI app (tests/api/pool_worker_app.py) over raw sockets: kept-alive
and pipelined requests, idle connections that hold no thread, the keep-alive timeout, the
connection limit, no descriptor left behind, and a graceful stop."""

from __future__ import annotations

import os
import signal
import socket
import threading
import time

import pytest

from devtools.processes import GunicornRouter

APP = "tests.api.pool_worker_app:app"


@pytest.fixture
def serve(tmp_path):
    """Start the app under gunicorn: serve(workers=1, threads=2, args="--keep-alive 1")."""
    started = []

    def start(*, workers: int = 1, threads: int = 2, args: str = "", env=None) -> GunicornRouter:
        env = {
            "API_WORKERS": str(workers),
            "API_THREADS": str(threads),
            "GUNICORN_CMD_ARGS": args or None,
            **(env or {}),
        }
        server = GunicornRouter(env, tmp_path / f"gunicorn-{len(started)}.log", app=APP)
        started.append(server)
        return server.start(30)

    yield start
    for server in started:
        server.stop(10)


def connect(server: GunicornRouter) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def request_bytes(method: str, path: str, body: bytes = b"") -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: test\r\nContent-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


class Reader:
    """HTTP/1.1 responses read off one socket, in order."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = b""

    def _fill(self) -> None:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the server")
        self.buf += chunk

    def response(self) -> tuple[int, dict[str, str], bytes]:
        while b"\r\n\r\n" not in self.buf:
            self._fill()
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:])}
        length = int(headers.get("content-length", "0"))
        while len(self.buf) < length:
            self._fill()
        body, self.buf = self.buf[:length], self.buf[length:]
        return int(lines[0].split()[1]), headers, body


def ask(sock: socket.socket, method: str, path: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    sock.sendall(request_bytes(method, path, body))
    return Reader(sock).response()


def closed_by_server(sock: socket.socket, timeout_s: float) -> bool:
    sock.settimeout(timeout_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


def test_kept_alive_and_pipelined_requests_are_answered_in_order(serve):
    server = serve()
    with connect(server) as sock:
        for i in range(50):
            status, headers, body = ask(sock, "POST", "/echo", f"request {i}".encode())
            assert (status, body) == (200, f"request {i}".encode())
            assert headers.get("connection", "").lower() != "close"
        # Three requests in one write: the last two are read ahead with the first.
        sock.sendall(b"".join(request_bytes("POST", "/echo", f"piped {i}".encode()) for i in range(3)))
        reader = Reader(sock)
        assert [reader.response()[2] for _ in range(3)] == [b"piped 0", b"piped 1", b"piped 2"]


def test_idle_connections_hold_no_thread(serve):
    """Connections that say nothing wait on the epoll, not in a thread: with 2 threads and 6 such
    connections open, a request on a seventh is answered at once (gthread gave each new connection
    a thread for up to 5 s of waiting for its first bytes)."""
    server = serve(threads=2)
    idle = [connect(server) for _ in range(6)]
    try:
        time.sleep(0.3)  # accepted
        started = time.monotonic()
        with connect(server) as sock:
            assert ask(sock, "GET", "/readyz")[0] == 200
        assert time.monotonic() - started < 2.0
    finally:
        for sock in idle:
            sock.close()


def test_a_slow_request_leaves_the_other_threads_serving(serve):
    server = serve(threads=2)
    with connect(server) as slow, connect(server) as quick:
        slow.sendall(request_bytes("GET", "/sleep?s=3"))
        time.sleep(0.2)
        started = time.monotonic()
        assert ask(quick, "GET", "/readyz")[0] == 200
        assert time.monotonic() - started < 1.5
        assert Reader(slow).response()[0] == 200


def test_an_idle_connection_is_closed_after_the_keepalive_timeout(serve):
    server = serve(args="--keep-alive 1")
    with connect(server) as sock:
        assert ask(sock, "GET", "/readyz")[0] == 200
        assert not closed_by_server(sock, 0.3)  # kept alive for now
        assert closed_by_server(sock, 4.0)  # the main thread's sweep closed it (1 s + at most 1 s)
    with connect(server) as sock:  # one that never sent anything has FIRST_REQUEST_S (5 s), then expires
        assert not closed_by_server(sock, 3.0)
        assert closed_by_server(sock, 5.0)


def test_a_new_connection_has_time_for_its_first_request_even_without_keep_alive(serve):
    """--keep-alive 0 closes a connection once it is answered; a new one still gets FIRST_REQUEST_S
    to send its request (it was closed at the next sweep, under a second, before)."""
    server = serve(args="--keep-alive 0")
    with connect(server) as sock:
        time.sleep(2.0)
        status, headers, _ = ask(sock, "GET", "/readyz")
        assert (status, headers.get("connection", "").lower()) == (200, "close")
        assert closed_by_server(sock, 5.0)


def test_connections_beyond_the_limit_wait_until_one_closes(serve):
    """--worker-connections 2: a third connection is not accepted (its request waits in the listen
    backlog) until one of the first two closes."""
    server = serve(threads=2, args="--worker-connections 2")
    first, second = connect(server), connect(server)
    try:
        time.sleep(0.3)  # both accepted, both idle
        with connect(server) as third:
            third.sendall(request_bytes("GET", "/readyz"))
            third.settimeout(0.7)
            with pytest.raises(TimeoutError):
                third.recv(1)
            first.close()
            third.settimeout(5)
            assert Reader(third).response()[0] == 200
    finally:
        first.close()
        second.close()


def open_descriptors(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def test_no_descriptor_is_left_behind(serve):
    """Connections closed by the client, mid-request or idle, and by the server (Connection:
    close) all leave the worker: its open descriptors come back to what they were."""
    server = serve()
    (worker,) = server.workers()
    with connect(server) as sock:
        assert ask(sock, "GET", "/readyz")[0] == 200
    time.sleep(0.3)
    before = open_descriptors(worker)
    for i in range(30):
        sock = connect(server)
        if i % 3 == 0:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: t")  # closed in the middle of its head
        elif i % 3 == 1:
            sock.sendall(b"GET /readyz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
            assert Reader(sock).response()[0] == 200
            assert closed_by_server(sock, 5)  # answered, then closed by the server
        sock.close()
    deadline = time.monotonic() + 10
    while open_descriptors(worker) > before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert open_descriptors(worker) <= before


def test_sigterm_lets_requests_in_flight_finish_and_closes_kept_alive_connections(serve):
    server = serve(threads=2)
    answers = []
    with connect(server) as slow, connect(server) as kept:
        assert ask(kept, "GET", "/readyz")[0] == 200
        slow.sendall(request_bytes("GET", "/sleep?s=1.5"))
        reading = threading.Thread(target=lambda: answers.append(Reader(slow).response()))
        reading.start()
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        time.sleep(0.3)
        # A request on a kept-alive connection during the stop's linger: answered, then closed.
        status, headers, _ = ask(kept, "GET", "/readyz")
        assert (status, headers.get("connection", "").lower()) == (200, "close")
        reading.join(10)
        assert answers and answers[0][0] == 200
        assert server.proc.wait(15) == 0


def worker_pid(server: GunicornRouter) -> int:
    with connect(server) as sock:
        return int(ask(sock, "GET", "/pid")[2])


def test_an_app_raising_system_exit_closes_its_connection_and_restarts_the_worker(serve):
    """SystemExit goes through gthread's handle(); it once ended the pool thread and left the
    client waiting on a connection nobody served."""
    server = serve(threads=2)
    first = worker_pid(server)
    with connect(server) as sock:
        sock.sendall(request_bytes("GET", "/exit"))
        assert closed_by_server(sock, 5.0)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if worker_pid(server) != first:
                break
        except OSError:
            pass  # between workers
        time.sleep(0.2)
    assert worker_pid(server) != first  # the app asked the process to end: a new worker serves


def read_until_closed(sock: socket.socket, timeout_s: float) -> bytes:
    sock.settimeout(timeout_s)
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def test_bodies_failing_after_their_headers_leave_the_connection_count_true(serve):
    """gthread's handle() closes such a socket itself; with new connections accepted meanwhile
    (taking the closed one's number), the worker's count of connections must stay true, or at
    --worker-connections 4 it would stop accepting."""
    server = serve(threads=4, args="--worker-connections 4")

    def client():
        for _ in range(25):
            with connect(server) as sock:
                sock.sendall(request_bytes("GET", "/boom"))
                assert read_until_closed(sock, 10).startswith(b"HTTP/1.1 200 OK")

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join(60)
    idle = [connect(server) for _ in range(3)]
    try:
        time.sleep(0.3)
        with connect(server) as sock:
            sock.settimeout(3)
            assert ask(sock, "GET", "/readyz")[0] == 200  # the fourth connection of four
    finally:
        for sock in idle:
            sock.close()


def test_sigterm_during_a_burst_of_new_connections_stops_cleanly(serve, tmp_path):
    exits = tmp_path / "exits"
    server = serve(workers=2, threads=2, env={"POOL_APP_EXIT_LOG": str(exits)})
    workers = set(server.workers())
    stop = threading.Event()

    def client():
        while not stop.is_set():
            try:
                with connect(server) as sock:
                    ask(sock, "GET", "/readyz")
            except OSError:
                pass  # refused or closed once the stop begins

    clients = [threading.Thread(target=client) for _ in range(4)]
    for thread in clients:
        thread.start()
    time.sleep(0.5)
    server.proc.send_signal(signal.SIGTERM)
    try:
        assert server.proc.wait(20) == 0
    finally:
        stop.set()
        for thread in clients:
            thread.join(10)
    log = server.log_path.read_text()
    assert "Traceback" not in log and "SIGKILL" not in log
    assert {int(pid) for pid in exits.read_text().split()} == workers  # worker_exit ran in each


def test_a_stuck_request_still_lets_worker_exit_run_before_the_graceful_timeout(serve, tmp_path):
    """The drain ends DRAIN_MARGIN_S before --graceful-timeout, so gunicorn's worker_exit hook (the
    router flushes its inference log there) runs before the master's SIGKILL."""
    exits = tmp_path / "exits"
    server = serve(threads=2, args="--graceful-timeout 5", env={"POOL_APP_EXIT_LOG": str(exits)})
    (worker,) = server.workers()
    with connect(server) as stuck:
        stuck.sendall(request_bytes("GET", "/sleep?s=60"))
        time.sleep(0.3)
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(20) == 0
    assert exits.read_text().split() == [str(worker)]
    assert "SIGKILL" not in server.log_path.read_text()
