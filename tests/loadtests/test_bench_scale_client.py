"""bench_scale's keep-alive client survives a connection the server closed while it was idle."""

from __future__ import annotations

import http.server
import json
import threading
import time

import pytest

from loadtests.bench_scale import Client


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive
    timeout = 2.0  # an idle connection is closed after this, as gunicorn's keepalive does
    connections: list[int] = []

    def setup(self) -> None:
        super().setup()
        type(self).connections.append(self.client_address[1])

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        body = json.dumps({"ok": True}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture()
def server():
    _Handler.connections = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_an_idle_connection_is_replaced_before_the_server_has_closed_it(server, monkeypatch):
    monkeypatch.setattr(Client, "IDLE_REOPEN_S", 1.0)
    client = Client(server, "key")
    assert client.predict("m", "hello")[0] == 200
    assert client.predict("m", "hello")[0] == 200  # kept alive: the same connection
    assert len(_Handler.connections) == 1
    time.sleep(3.0)  # the server closed the idle connection meanwhile
    status, body, took = client.predict("m", "hello")
    assert (status, body) == (200, {"ok": True}) and took > 0
    assert len(_Handler.connections) == 2
    client.close()


def test_without_the_reopen_the_closed_connection_fails(server, monkeypatch):
    """The failure the reopen avoids (what a 10,000-head warm-up longer than 75 s met)."""
    monkeypatch.setattr(Client, "IDLE_REOPEN_S", 3600.0)
    client = Client(server, "key")
    assert client.predict("m", "hello")[0] == 200
    time.sleep(3.0)
    with pytest.raises((ConnectionError, OSError)):
        client.predict("m", "hello")
    client.close()
