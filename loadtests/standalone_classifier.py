"""The pre-centralisation design, for comparison: one process = its own encoder + one head.

    .venv/bin/python loadtests/standalone_classifier.py --store var/loadtest/models/loadtest \\
        --model lt-intents --port 0
    # prints {"event": "ready", "port": ..., "model": ..., ...} once it answers, then serves
    curl -s localhost:PORT/predict -d '{"text": "what is my balance"}'
    # {"model": ..., "version": ..., "label": ..., "probability": ..., "rejected": ...}

Before the central embedder, every classifier was a service of its own that loaded the sentence
encoder next to its head. This is that service, built from today's parts so that centralisation
is the only difference a benchmark sees (loadtests/bench_central.py):
- the encoder is loaded by the embedder's own wiring (embedder.serve.build_service:
  embedder/encoder.py's loader, the warm-up call, validation, normalisation and the same
  micro-batcher with the same EMBEDDER_* settings), with the phrase cache off;
- the head is a numpy head from a model store (heads.registry.ModelStore), checked against the
  encoder it was trained with, and answers with its own decision rule;
- HTTP is the standard library's threading server, one thread per connection (at most
  --max-connections; more are refused), keep-alive, no access log.

`--store` is a folder of models (<store>/<model>/<version>/), e.g. one tenant's folder of a
MODEL_STORE. `--port 0` lets the OS pick a free port; the ready line says which.
`StandaloneProcess` runs one as a child process and waits for its ready line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devtools.embedder_process import read_ready_line, stop_child  # noqa: E402
from embedder.errors import EmbedderError, InvalidInput  # noqa: E402
from embedder.features import split_embedding_id  # noqa: E402
from embedder.service import EmbeddingService  # noqa: E402
from embedder.stop_signals import StopSignals  # noqa: E402
from heads.artifact import HeadArtifact  # noqa: E402

log = logging.getLogger("loadtests.standalone_classifier")
MAX_BODY_BYTES = 64 * 1024


@dataclass(frozen=True)
class Answer:
    model: str
    version: str
    label: str
    probability: float
    rejected: bool
    embed_ms: float
    total_ms: float


class StandaloneClassifier:
    """Text -> own encoder (micro-batched) -> head -> decision. Knows nothing of HTTP."""

    def __init__(self, service: EmbeddingService, head: HeadArtifact, *, timeout_s: float = 10.0):
        if not head.needs_embeddings:
            raise ValueError(f"{head.model} is an n-gram head: a standalone encoder service needs an embedding head")
        self.service = service
        self.head = head
        self.timeout_s = timeout_s
        self._features = split_embedding_id(head.embedder_id)[1]  # what the head was trained on

    @classmethod
    def load(cls, store: Path, model: str, *, timeout_s: float = 10.0) -> StandaloneClassifier:
        """The encoder as the embedder loads it (EMBEDDER_* settings, phrase cache off), and the
        serving version of `model`, refused unless it was trained with that encoder."""
        from embedder.serve import build_service
        from embedder.settings import embedder_settings
        from heads.registry import ModelStore

        service = build_service(embedder_settings(cache_size=0))
        try:
            head = ModelStore(store).load(model, expected_embedder=service.info.model_id, expected_dim=service.info.dim)
        except BaseException:
            service.close()
            raise
        return cls(service, head, timeout_s=timeout_s)

    def predict(self, text: str) -> Answer:
        """Raises an EmbedderError subclass (it carries the HTTP status) on invalid input,
        overload or a model failure."""
        started = time.perf_counter()
        vectors = self.service.embed([text], timeout=self.timeout_s, features=self._features).vectors
        embedded = time.perf_counter()
        rule = self.head.rule
        index, top = rule.decide(self.head.predict_proba(vectors))
        return Answer(
            model=self.head.model,
            version=self.head.version,
            label=rule.label_of(int(index[0])),
            probability=round(float(top[0]), 4),
            rejected=bool(rule.threshold > 0 and top[0] < rule.threshold),
            embed_ms=round((embedded - started) * 1000, 3),
            total_ms=round((time.perf_counter() - started) * 1000, 3),
        )

    def close(self, timeout: float | None = None) -> None:
        self.service.close(timeout)


def parse_request(body: bytes) -> str:
    """The text of a `{"text": ...}` body; InvalidInput otherwise."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise InvalidInput("the body must be JSON") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("text"), str) or set(payload) != {"text"}:
        raise InvalidInput('the body must be {"text": "..."}')
    return payload["text"]


# --- HTTP adapter ----------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection
    disable_nagle_algorithm = True  # headers and body leave at once
    timeout = 60  # an idle keep-alive connection is closed after this many seconds
    classifier: StandaloneClassifier  # set on the subclass made by make_server()

    def log_message(self, format, *args) -> None:  # no access log, as in production
        pass

    def _reply(self, status: int, body: dict) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if self.path == "/health":
            head = self.classifier.head
            self._reply(200, {"status": "ok", "model": head.model, "version": head.version})
        else:
            self._reply(404, {"error": "not_found", "message": f"no route for GET {self.path}"})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY_BYTES:
            self.close_connection = True  # the body is not read
            self._reply(413, {"error": "payload_too_large", "message": f"the body exceeds {MAX_BODY_BYTES} bytes"})
            return
        body = self.rfile.read(length)
        if self.path != "/predict":
            self._reply(404, {"error": "not_found", "message": f"no route for POST {self.path}"})
            return
        try:
            answer = self.classifier.predict(parse_request(body))
        except EmbedderError as error:
            self._reply(error.status, {"error": error.code, "message": error.message})
            return
        except Exception:  # noqa: BLE001 - logged with its traceback, answered without details
            log.exception("predict failed")
            self._reply(500, {"error": "internal", "message": "internal error"})
            return
        self._reply(200, asdict(answer))


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[_Handler], *, max_connections: int):
        super().__init__(address, handler)
        self._slots = threading.BoundedSemaphore(max_connections)

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # over the limit: refused at once, not queued
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


def make_server(classifier: StandaloneClassifier, host: str, port: int, *, max_connections: int = 256) -> _Server:
    handler = type("Handler", (_Handler,), {"classifier": classifier})
    return _Server((host, port), handler, max_connections=max_connections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="standalone_classifier.py", description=__doc__.split("\n")[0])
    parser.add_argument("--store", required=True, help="folder of models (<store>/<model>/<version>/)")
    parser.add_argument("--model", required=True, help="the model whose serving version answers")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0: a free port (the ready line says which)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds a text may wait for the encoder")
    parser.add_argument("--max-connections", type=int, default=256, help="open connections served at once")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = StopSignals()
    classifier = StandaloneClassifier.load(Path(args.store), args.model, timeout_s=args.timeout)
    server = make_server(classifier, args.host, args.port, max_connections=args.max_connections)
    thread = threading.Thread(target=server.serve_forever, name="http", daemon=True)
    thread.start()
    ready = {
        "event": "ready",
        "port": server.server_address[1],
        "model": classifier.head.model,
        "version": classifier.head.version,
        "embedder": classifier.service.info.model_id,
        "pid": os.getpid(),
    }
    print(json.dumps(ready), flush=True)
    stop.wait()
    server.shutdown()
    server.server_close()
    classifier.close(timeout=10.0)
    return 0


# --- running one as a child process ----------------------------------------------------------------


class StandaloneProcess:
    """`standalone_classifier.py` as a child process: start() waits for its ready line, stop()
    sends SIGTERM (then SIGKILL after `timeout_s`). `env` is added to this process's environment
    (EMBEDDER_* settings: the same as the central embedder's for a fair comparison)."""

    def __init__(
        self,
        store: Path,
        model: str,
        *,
        env: dict[str, str] | None = None,
        log_path: Path | None = None,
        startup_timeout_s: float = 300.0,
    ):
        self.store = Path(store)
        self.model = model
        self.env = dict(env or {})
        self.log_path = log_path
        self.startup_timeout_s = startup_timeout_s
        self.proc: subprocess.Popen | None = None
        self.ready: dict = {}

    @property
    def port(self) -> int:
        return self.ready["port"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self) -> StandaloneProcess:
        self.launch()
        return self.wait_ready()

    def launch(self) -> None:
        """Start the child without waiting for it (wait_ready() waits)."""
        command = [sys.executable, str(Path(__file__).resolve())]
        command += ["--store", str(self.store), "--model", self.model, "--port", "0"]
        stderr = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        try:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **self.env},
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
            )
        finally:
            if self.log_path:
                stderr.close()  # the child has its own descriptor

    def wait_ready(self) -> StandaloneProcess:
        """Wait for the ready line; stops the child and raises RuntimeError if none comes."""
        try:
            self.ready = read_ready_line(
                self.proc, self.startup_timeout_s, what="the standalone classifier", log_path=self.log_path
            )
        except RuntimeError:
            self.stop()
            raise
        return self

    def terminate(self) -> None:
        """SIGTERM without waiting (stop() then waits): stops many processes at once."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self, timeout_s: float = 20.0) -> None:
        stop_child(self.proc, timeout_s)

    def __enter__(self) -> StandaloneProcess:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
