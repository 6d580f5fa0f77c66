"""A closed-loop HTTP load of never-seen texts, from threads (no Locust, no gevent).

    endpoints = [Endpoint.parse("http://127.0.0.1:8000/v1/models/m/predict", {"Authorization": ...})]
    with ClosedLoop(endpoints, concurrency=16, salt=7) as load:
        time.sleep(warmup_s)
        t0 = time.monotonic()
        time.sleep(duration_s)
        t1 = time.monotonic()
    stats = load.stats(t0, t1)      # the requests that ended inside [t0, t1]

Each of `concurrency` threads sends `POST {"text": ...}` to an endpoint drawn uniformly, and its
next request as soon as the answer is in. The texts are loadtests.generator's cache-hostile
texts (unique_share=1.0): every one differs from every other text of this salt, so each is a
model call wherever the embedding is computed. Each thread keeps one keep-alive connection per
host:port; a reused connection the server has closed meanwhile is reopened once (not an error).
"""

from __future__ import annotations

import collections
import http.client
import json
import random
import threading
import time
import urllib.parse
from dataclasses import dataclass

import numpy as np

from loadtests.generator import PhraseGenerator

ERROR_SAMPLES = 5
ERRORS_KEPT = 1000  # the latest errors, with their time, for the samples of a window


@dataclass(frozen=True)
class Endpoint:
    host: str
    port: int
    path: str
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, url: str, headers: dict[str, str] | None = None) -> Endpoint:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"need http://host:port/path, got {url!r}")
        return cls(parts.hostname, parts.port, parts.path or "/", tuple((headers or {}).items()))


@dataclass(frozen=True)
class WindowStats:
    seconds: float
    ok: int
    errors: int
    latencies_ms: np.ndarray  # of the requests answered 200
    error_samples: tuple[str, ...]

    @property
    def texts_per_s(self) -> float:
        return self.ok / self.seconds if self.seconds > 0 else 0.0

    def percentile_ms(self, q: float) -> float | None:
        return float(np.percentile(self.latencies_ms, q)) if self.latencies_ms.size else None


class ClosedLoop:
    def __init__(
        self,
        endpoints: list[Endpoint],
        *,
        concurrency: int = 16,
        salt: int = 0,
        seed: int = 0,
        timeout_s: float = 10.0,
    ):
        if not endpoints or concurrency < 1:
            raise ValueError("need at least one endpoint and one thread")
        self.endpoints = list(endpoints)
        self.concurrency = concurrency
        self.salt = salt
        self.seed = seed
        self.timeout_s = timeout_s
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        # One list per thread, appended to by that thread only: (end time, seconds, ok).
        self._records: list[list[tuple[float, float, bool]]] = [[] for _ in range(concurrency)]
        self._errors: collections.deque[tuple[float, str]] = collections.deque(maxlen=ERRORS_KEPT)
        self._lock = threading.Lock()

    def __enter__(self) -> ClosedLoop:
        for i in range(self.concurrency):
            thread = threading.Thread(target=self._run, args=(i,), name=f"closed-loop-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(self.timeout_s + 5)

    def stats(self, t0: float, t1: float) -> WindowStats:
        """The requests that ended in [t0, t1] (time.monotonic() values)."""
        window = [r for records in self._records for r in records if t0 <= r[0] <= t1]
        latencies = np.array([r[1] * 1000 for r in window if r[2]], dtype=np.float64)
        with self._lock:
            samples = tuple(message for when, message in self._errors if t0 <= when <= t1)[:ERROR_SAMPLES]
        return WindowStats(t1 - t0, int(latencies.size), len(window) - int(latencies.size), latencies, samples)

    # -- one thread

    def _run(self, index: int) -> None:
        choose = random.Random(self.seed * 1_000_003 + index)
        texts = PhraseGenerator(unique_share=1.0, seed=self.seed, stream=index, salt=self.salt)
        connections: dict[tuple[str, int], http.client.HTTPConnection] = {}
        records = self._records[index]
        try:
            while not self._stop.is_set():
                endpoint = self.endpoints[choose.randrange(len(self.endpoints))]
                body = json.dumps({"text": texts.next()}).encode()
                started = time.monotonic()
                error = None
                try:
                    status, payload = self._post(connections, endpoint, body)
                    if status != 200:
                        error = f"HTTP {status}: {payload[:200].decode(errors='replace')}"
                except (OSError, http.client.HTTPException) as exc:
                    error = f"{type(exc).__name__}: {exc}"
                ended = time.monotonic()
                records.append((ended, ended - started, error is None))
                if error is not None:
                    with self._lock:
                        self._errors.append((ended, error))
        finally:
            for connection in connections.values():
                connection.close()

    def _post(self, connections: dict, endpoint: Endpoint, body: bytes) -> tuple[int, bytes]:
        key = (endpoint.host, endpoint.port)
        headers = {"Content-Type": "application/json", **dict(endpoint.headers)}
        while True:
            connection = connections.get(key)
            reused = connection is not None
            if connection is None:
                connection = connections[key] = http.client.HTTPConnection(*key, timeout=self.timeout_s)
            try:
                connection.request("POST", endpoint.path, body, headers)
                response = connection.getresponse()
                payload = response.read()
            except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
                connections.pop(key).close()
                if reused:
                    continue  # the server closed an idle connection: the request never reached it
                raise
            except BaseException:
                connections.pop(key).close()
                raise
            if response.will_close:
                connections.pop(key).close()
            return response.status, payload
