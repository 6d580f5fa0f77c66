"""A WSGI app for the worker's own tests (tests/api/test_pool_worker.py): the router's gunicorn
configuration and worker class without TensorFlow, PostgreSQL or models.

    GET /readyz             200
    GET /pid                the worker's pid
    GET /sleep?s=0.5        answers after sleeping that long
    POST /echo              the body back
"""

from __future__ import annotations

import os
import time
import urllib.parse


def app(environ, start_response):
    path = environ["PATH_INFO"]
    body = environ["wsgi.input"].read()
    if path == "/sleep":
        time.sleep(float(urllib.parse.parse_qs(environ["QUERY_STRING"])["s"][0]))
    elif path == "/pid":
        body = str(os.getpid()).encode()
    elif path not in ("/readyz", "/echo"):
        start_response("404 Not Found", [("Content-Length", "0")])
        return [b""]
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
