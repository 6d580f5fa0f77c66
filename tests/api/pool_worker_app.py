"""A WSGI app for the worker's own tests (tests/api/test_pool_worker.py): the router's gunicorn
configuration and worker class without TensorFlow, PostgreSQL or models.

    GET /readyz             200
    GET /pid                the worker's pid
    GET /sleep?s=0.5        answers after sleeping that long
    POST /echo              the body back
    GET /boom               a 200 whose body fails half-way, after the headers went out
    GET /exit               raises SystemExit, as an app calling sys.exit() would

The router's gunicorn configuration calls `extensions["manyheads"].close()` in `worker_exit`
(the router flushes its inference log there); here that appends the worker's pid to the file
named by POOL_APP_EXIT_LOG, so a test sees whether the hook ran.
"""

from __future__ import annotations

import os
import time
import urllib.parse


class _ExitRecord:
    def close(self) -> None:
        path = os.environ.get("POOL_APP_EXIT_LOG")
        if path:
            with open(path, "a") as log:
                log.write(f"{os.getpid()}\n")


def _failing_body():
    yield b"half of it"
    raise RuntimeError("the body failed after the headers went out")


def app(environ, start_response):
    path = environ["PATH_INFO"]
    body = environ["wsgi.input"].read()
    if path == "/sleep":
        time.sleep(float(urllib.parse.parse_qs(environ["QUERY_STRING"])["s"][0]))
    elif path == "/pid":
        body = str(os.getpid()).encode()
    elif path == "/boom":
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "100")])
        return _failing_body()
    elif path == "/exit":
        raise SystemExit(3)
    elif path not in ("/readyz", "/echo"):
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]


app.extensions = {"manyheads": _ExitRecord()}
