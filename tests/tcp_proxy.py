"""A TCP proxy on 127.0.0.1 that a test controls, to make a server hang without stopping it.

`forward()`: bytes flow both ways. `blackhole()`: the proxy keeps accepting connections and
reading what clients send, but forwards nothing and answers nothing, on new and existing
connections alike: to the client the server has stopped answering while its TCP stays up (a
failover in progress, a partition behind a load balancer). Back to `forward()`, connections
from before the blackhole are reset, as a failover would, and new ones reach the server again.
`slow(delay_s)`: bytes still flow both ways, each chunk `delay_s` after it arrived (a slow, not
dead, server or network: latency, not a bandwidth limit); `slow(0)` makes new bytes fast again
without touching the connections.
"""

from __future__ import annotations

import collections
import contextlib
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


class TcpProxy:
    def __init__(self, target_host: str, target_port: int):
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._blackholed = threading.Event()
        self._delay_s = 0.0
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._connections: list[tuple[socket.socket, socket.socket | None, int]] = []
        self._generation = 0  # bumped by forward(): older connections are reset
        threading.Thread(target=self._accept, name="tcp-proxy", daemon=True).start()

    @classmethod
    def for_dsn(cls, dsn: str) -> tuple[TcpProxy, str]:
        """A proxy in front of a postgresql:// DSN's server, and the DSN that goes through it."""
        parts = urlsplit(dsn)
        proxy = cls(parts.hostname, parts.port)
        netloc = f"{parts.username}@127.0.0.1:{proxy.port}" if parts.username else f"127.0.0.1:{proxy.port}"
        return proxy, urlunsplit(parts._replace(netloc=netloc))

    def blackhole(self) -> None:
        self._blackholed.set()

    def slow(self, delay_s: float) -> None:
        self._delay_s = delay_s

    def forward(self) -> None:
        with self._lock:
            self._generation += 1
            stale, self._connections = self._connections, []
        self._blackholed.clear()
        for client, upstream, _ in stale:
            _close(client, upstream)

    def close(self) -> None:
        self._closed.set()
        self.forward()
        with contextlib.suppress(OSError):
            self._listener.close()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = None
            if not self._blackholed.is_set():
                try:
                    upstream = socket.create_connection(self._target, timeout=5)
                except OSError:
                    client.close()
                    continue
            with self._lock:
                self._connections.append((client, upstream, self._generation))
                generation = self._generation
            threading.Thread(target=self._pump, args=(client, upstream, generation), daemon=True).start()

    def _pump(self, client: socket.socket, upstream: socket.socket | None, generation: int) -> None:
        peers = {client: upstream, upstream: client} if upstream else {client: None}
        try:
            held: collections.deque = collections.deque()  # (due, target, data): a delay line, in order
            while not self._closed.is_set() and generation == self._generation:
                wait = 0.1 if not held else min(0.1, max(0.0, held[0][0] - time.monotonic()))
                readable, _, _ = select.select(list(peers), [], [], wait)
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    target = peers[sock]
                    if target is not None and not self._blackholed.is_set():
                        held.append((time.monotonic() + self._delay_s, target, data))
                while held and held[0][0] <= time.monotonic():
                    _, target, data = held.popleft()
                    if not self._blackholed.is_set():
                        target.sendall(data)
        except OSError:
            return
        finally:
            _close(client, upstream)


def _close(*socks: socket.socket | None) -> None:
    for sock in socks:
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.close()


class TcpProxyProcess:
    """A TcpProxy in a process of its own, driven over a pipe: for a test that measures latency,
    so that the proxy's threads do not take the measuring client's GIL or its core."""

    def __init__(self, target_host: str, target_port: int):
        self._process = subprocess.Popen(
            [sys.executable, "-m", "tests.tcp_proxy", target_host, str(target_port)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        self.port = int(self._command("port"))

    def slow(self, delay_s: float) -> None:
        self._command(f"slow {delay_s}")

    def blackhole(self) -> None:
        self._command("blackhole")

    def forward(self) -> None:
        self._command("forward")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._process.stdin.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def __enter__(self) -> TcpProxyProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _command(self, line: str) -> str:
        self._process.stdin.write(line + "\n")
        self._process.stdin.flush()
        answer = self._process.stdout.readline()
        if not answer:
            raise RuntimeError(f"the proxy process exited (code {self._process.poll()})")
        if answer.startswith("error:"):
            raise ValueError(answer.strip())
        return answer.strip()


def _serve(target_host: str, target_port: int) -> None:
    """One command per line on stdin (port | slow SECONDS | blackhole | forward), one answer line
    each on stdout; end of input closes the proxy."""
    with TcpProxy(target_host, target_port) as proxy:
        for line in sys.stdin:
            command, *args = line.split()
            answer = "ok"
            if command == "port":
                answer = str(proxy.port)
            elif command == "slow":
                proxy.slow(float(args[0]))
            elif command == "blackhole":
                proxy.blackhole()
            elif command == "forward":
                proxy.forward()
            else:
                answer = f"error: unknown command {command!r}"
            print(answer, flush=True)


if __name__ == "__main__":
    _serve(sys.argv[1], int(sys.argv[2]))
