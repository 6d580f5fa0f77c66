"""The WSGI app of loadtests/bench_worker.py: reads the body and answers 200 with a 300-byte JSON
body (the size of a prediction's answer), so that what is measured is the gunicorn worker."""

from __future__ import annotations

import json

ANSWER = json.dumps({"predictions": [{"label": "x" * 240, "confidence": 0.5}], "model": "m"}).encode()


def app(environ, start_response):
    environ["wsgi.input"].read()
    start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(ANSWER)))])
    return [ANSWER]
