"""Locust workloads for the router: real phrases, many models, one X-Request-ID per request.

    locust -f loadtests/locustfile.py --host http://127.0.0.1:8000                 # web UI
    locust -f loadtests/locustfile.py --host URL --headless -u 50 -r 25 -t 30s      # single (default)
    locust -f loadtests/locustfile.py --host URL --headless -u 20 -t 30s --tags batch
    LOADTEST_WORKLOAD=single,batch locust -f loadtests/locustfile.py --host URL --headless -u 40 -t 30s

`python loadtests/run_loadtest.py` drives these same classes headless, with a warm-up, the
inference-log integrity check and a summary; see loadtests/README.md.

Workloads (a user class each; pick them with --tags, with LOADTEST_WORKLOAD, or by naming the
classes on the command line; with none picked, `single` runs):

    single         SingleTextUser: {"text": ...} to a model drawn uniformly from the models
    batch          BatchUser: {"texts": [...]} of LOADTEST_BATCH_MIN..LOADTEST_BATCH_MAX texts
    feedback       FeedbackUser: single predictions, and for a LOADTEST_FEEDBACK_SHARE of them,
                   LOADTEST_FEEDBACK_DELAY_S later, POST /v1/predictions/<request_id>/feedback
                   {"label": ...} (the predicted label, or another label of the model in 1 case
                   of 5). Feedback is sent only with LOADTEST_FEEDBACK=1; the endpoint is probed
                   first, and on a router without it the user prints a note once and sends
                   predictions only.
    cache_hostile  CacheHostileUser: single predictions of never-seen texts (real phrases with a
                   unique order number, ticket, account, name or date), all phrase-cache misses

Environment (all optional):

    LOADTEST_WORKLOAD        comma-separated workloads (above); default: --tags, else "single"
    LOADTEST_MODELS          comma-separated model names; default: every model GET /v1/models lists
    LOADTEST_MAX_MODELS      use only the first N of those (0: all)                   [0]
    LOADTEST_ZIPF_EXPONENT   Zipf exponent over the vocabulary (0 uniform, 1 natural) [1.0]
    LOADTEST_VOCABULARY      distinct real phrases drawn from (0: all, about 33,000)  [5000]
    LOADTEST_UNIQUE_SHARE    share of cache-hostile texts mixed into single/batch/feedback [0]
    LOADTEST_BATCH_MIN       fewest texts in a batch request                         [8]
    LOADTEST_BATCH_MAX       most texts in a batch request (router limit: 64)        [32]
    LOADTEST_TOP_K           top_k sent with every request (0: the router's default) [0]
    LOADTEST_RATE_PER_USER   requests per second per user (constant throughput, each user with a
                             random phase so users do not arrive in bursts); 0: no wait, each
                             user sends its next request as soon as the last is answered [0]
    LOADTEST_TIMEOUT_S       client timeout per request                              [10]
    LOADTEST_SEED            base seed of the phrase generators (user i uses stream i) [0]
    LOADTEST_RUN_ID          prefix of every X-Request-ID ("<run id>-<user>-<n>"), which finds this
                             run's rows in the predictions table; also salts the unique texts.
                             Default: "lt" + 8 random hex digits
    LOADTEST_FEEDBACK        1 enables the feedback calls of the feedback workload   [0]
    LOADTEST_FEEDBACK_SHARE  share of predictions followed by feedback               [0.1]
    LOADTEST_FEEDBACK_DELAY_S  seconds between a prediction and its feedback          [2]
    LOADTEST_API_KEY         the tenant's API key, sent as "Authorization: Bearer <key>" (the
                             models are those of its tenant)                          [none]

Counts kept in this process (`COUNTS`): requests and texts answered 200, cache hits reported by
the router, feedback sent/answered; the runner compares `ok_texts` with the rows in PostgreSQL.
"""

from __future__ import annotations

import collections
import hashlib
import itertools
import json
import os
import random
import secrets
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import gevent
from locust import FastHttpUser, constant, constant_throughput, events, tag, task

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from loadtests.generator import PhraseGenerator  # noqa: E402

WORKLOADS = ("single", "batch", "feedback", "cache_hostile")


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "").strip() or default


class Config:
    """The LOADTEST_* variables, read at import (and again by `reload()`)."""

    def __init__(self) -> None:
        self.workloads = [w.strip() for w in _env("LOADTEST_WORKLOAD", "").split(",") if w.strip()]
        unknown = sorted(set(self.workloads) - set(WORKLOADS))
        if unknown:
            raise ValueError(f"unknown LOADTEST_WORKLOAD {unknown}; choose from {', '.join(WORKLOADS)}")
        self.models = [m.strip() for m in _env("LOADTEST_MODELS", "").split(",") if m.strip()]
        self.max_models = int(_env("LOADTEST_MAX_MODELS", "0"))
        self.exponent = float(_env("LOADTEST_ZIPF_EXPONENT", "1.0"))
        self.vocabulary = int(_env("LOADTEST_VOCABULARY", "5000"))
        self.unique_share = float(_env("LOADTEST_UNIQUE_SHARE", "0"))
        self.batch_min = int(_env("LOADTEST_BATCH_MIN", "8"))
        self.batch_max = int(_env("LOADTEST_BATCH_MAX", "32"))
        self.top_k = int(_env("LOADTEST_TOP_K", "0"))
        self.rate_per_user = float(_env("LOADTEST_RATE_PER_USER", "0"))
        self.timeout_s = float(_env("LOADTEST_TIMEOUT_S", "10"))
        self.seed = int(_env("LOADTEST_SEED", "0"))
        self.run_id = _env("LOADTEST_RUN_ID", "lt" + secrets.token_hex(4))
        self.feedback = _env("LOADTEST_FEEDBACK", "0").lower() in ("1", "true", "yes", "on")
        self.feedback_share = float(_env("LOADTEST_FEEDBACK_SHARE", "0.1"))
        self.feedback_delay_s = float(_env("LOADTEST_FEEDBACK_DELAY_S", "2"))
        self.api_key = _env("LOADTEST_API_KEY", "")
        if not 1 <= self.batch_min <= self.batch_max:
            raise ValueError("need 1 <= LOADTEST_BATCH_MIN <= LOADTEST_BATCH_MAX")

    @property
    def headers(self) -> dict[str, str]:
        """JSON content type and, with a key, its Authorization header."""
        auth = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        return {"Content-Type": "application/json", **auth}

    @property
    def salt(self) -> int:
        return int(hashlib.sha256(self.run_id.encode()).hexdigest(), 16) % 10_000


CONFIG = Config()
COUNTS: dict[str, int] = dict.fromkeys(
    ("ok_requests", "ok_texts", "cache_hits", "feedback_sent", "feedback_ok", "bad_bodies"), 0
)
MODELS: list[str] = []  # filled at test start from GET /v1/models
LABELS: dict[str, list[str]] = {}
STATE = {"feedback_endpoint": None}  # None: not probed; True/False after the probe
_STREAMS = itertools.count()


def reload() -> Config:
    """Read the environment again and reset the counters (the runner calls it before a run)."""
    global CONFIG, _STREAMS
    CONFIG = Config()
    for key in COUNTS:
        COUNTS[key] = 0
    MODELS.clear()
    LABELS.clear()
    STATE["feedback_endpoint"] = None
    _STREAMS = itertools.count()
    return CONFIG


def _wait_time():
    return constant_throughput(CONFIG.rate_per_user) if CONFIG.rate_per_user > 0 else constant(0)


# --- the users -----------------------------------------------------------------------------------


class _RouterUser(FastHttpUser):
    abstract = True
    workload = ""
    unique_share: float | None = None  # None: LOADTEST_UNIQUE_SHARE
    network_timeout = CONFIG.timeout_s
    connection_timeout = CONFIG.timeout_s

    def wait_time(self):  # read per call, so reload() applies to classes already imported
        return self._wait(self)

    def on_start(self) -> None:
        self.stream = next(_STREAMS)
        self._wait = _wait_time()
        share = CONFIG.unique_share if self.unique_share is None else self.unique_share
        self.gen = PhraseGenerator(
            exponent=CONFIG.exponent,
            vocabulary_size=CONFIG.vocabulary,
            unique_share=share,
            seed=CONFIG.seed,
            stream=self.stream % 100_000,
            salt=CONFIG.salt,
        )
        self.rng = random.Random(CONFIG.seed * 1_000_003 + self.stream)
        self.sequence = 0
        if not MODELS:
            _load_models(self.host)
        if CONFIG.rate_per_user > 0:
            # A random phase: users started together would otherwise stay in step forever
            # (constant_throughput keeps each one's period) and arrive in bursts of `users`.
            gevent.sleep(self.rng.uniform(0, 1 / CONFIG.rate_per_user))

    def predict(self, texts: list[str], name: str, *, batch: bool = False) -> tuple[str, str, list[dict]] | None:
        """POST one predict request ({"text"} unless `batch`, then {"texts"}); returns
        (request_id, model, predictions) on success."""
        model = self.rng.choice(MODELS)
        self.sequence += 1
        request_id = f"{CONFIG.run_id}-{self.stream}-{self.sequence}"
        body: dict = {"texts": texts} if batch else {"text": texts[0]}
        if CONFIG.top_k:
            body["top_k"] = CONFIG.top_k
        with self.client.post(
            f"/v1/models/{model}/predict",
            data=json.dumps(body),
            headers={**CONFIG.headers, "X-Request-ID": request_id},
            name=f"/v1/models/[model]/{name}",
            catch_response=True,
        ) as response:
            if response.status_code != 200:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")
                return None
            try:
                predictions = json.loads(response.content)["predictions"]
            except (ValueError, KeyError, TypeError):
                predictions = None
            if not isinstance(predictions, list) or len(predictions) != len(texts):
                COUNTS["bad_bodies"] += 1
                response.failure(f"expected {len(texts)} predictions in the body")
                return None
            COUNTS["ok_requests"] += 1
            COUNTS["ok_texts"] += len(texts)
            COUNTS["cache_hits"] += sum(1 for p in predictions if p.get("cache_hit"))
            return request_id, model, predictions


class SingleTextUser(_RouterUser):
    """One text per request, spread over all models."""

    workload = "single"

    @tag("single")
    @task
    def predict_one(self) -> None:
        self.predict([self.gen.next()], "predict")


class BatchUser(_RouterUser):
    """LOADTEST_BATCH_MIN..LOADTEST_BATCH_MAX texts per request."""

    workload = "batch"

    @tag("batch")
    @task
    def predict_batch(self) -> None:
        n = self.rng.randint(CONFIG.batch_min, CONFIG.batch_max)
        self.predict(self.gen.batch(n), "predict-batch", batch=True)


class CacheHostileUser(_RouterUser):
    """Never-seen texts only: every one is an embedder cache miss (a model call)."""

    workload = "cache_hostile"
    unique_share = 1.0

    @tag("cache_hostile")
    @task
    def predict_unique(self) -> None:
        self.predict([self.gen.next()], "predict-unique")


class FeedbackUser(_RouterUser):
    """Single predictions; for a LOADTEST_FEEDBACK_SHARE of them, feedback on that prediction
    LOADTEST_FEEDBACK_DELAY_S later, as a person would send it (needs LOADTEST_FEEDBACK=1 and
    POST /v1/predictions/<id>/feedback on the router)."""

    workload = "feedback"

    def on_start(self) -> None:
        super().on_start()
        self.pending: collections.deque = collections.deque()  # (due, request_id, model, label)

    @tag("feedback")
    @task
    def predict_or_feedback(self) -> None:
        if self.pending and self.pending[0][0] <= time.monotonic():
            self.send_feedback(*self.pending.popleft()[1:])
            return
        answered = self.predict([self.gen.next()], "predict")
        if answered is None or not CONFIG.feedback or self.rng.random() >= CONFIG.feedback_share:
            return
        if STATE["feedback_endpoint"] is None:
            _probe_feedback(self.host)
        if not STATE["feedback_endpoint"]:
            return
        request_id, model, predictions = answered
        label = predictions[0].get("label")
        if self.rng.random() < 0.2:  # a correction: some other label of the model
            label = self.rng.choice(LABELS.get(model) or [label])
        self.pending.append((time.monotonic() + CONFIG.feedback_delay_s, request_id, model, label))

    def send_feedback(self, request_id: str, model: str, label: str) -> None:
        COUNTS["feedback_sent"] += 1
        with self.client.post(
            f"/v1/predictions/{request_id}/feedback",
            data=json.dumps({"label": label}),
            headers={**CONFIG.headers, "X-Request-ID": f"{request_id}-fb"},
            name="/v1/predictions/[request_id]/feedback",
            catch_response=True,
        ) as response:
            if 200 <= response.status_code < 300:
                COUNTS["feedback_ok"] += 1
            else:
                response.failure(f"HTTP {response.status_code}: {(response.text or '')[:200]}")


USER_CLASSES = {cls.workload: cls for cls in (SingleTextUser, BatchUser, FeedbackUser, CacheHostileUser)}


# --- setup shared by all users -------------------------------------------------------------------


def _http_json(url: str, body: dict | None = None, timeout: float = 10.0) -> tuple[int, dict]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, headers=CONFIG.headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"{}")
    except urllib.error.HTTPError as error:
        try:
            return error.code, json.loads(error.read() or b"{}")
        except ValueError:
            return error.code, {}


def _load_models(host: str) -> None:
    """MODELS and LABELS from GET /v1/models, narrowed by LOADTEST_MODELS / LOADTEST_MAX_MODELS."""
    if MODELS:
        return
    status, body = _http_json(host.rstrip("/") + "/v1/models")
    if status != 200:
        raise RuntimeError(f"GET {host}/v1/models answered {status}")
    listed = {m["name"]: m.get("labels", []) for m in body.get("models", [])}
    names = [m for m in CONFIG.models if m in listed] if CONFIG.models else sorted(listed)
    if CONFIG.models and len(names) != len(CONFIG.models):
        missing = sorted(set(CONFIG.models) - set(listed))
        raise RuntimeError(f"LOADTEST_MODELS names models the router does not serve: {missing}")
    if CONFIG.max_models > 0:
        names = names[: CONFIG.max_models]
    if not names:
        raise RuntimeError(f"{host} serves no model")
    LABELS.update({name: listed[name] for name in names})
    MODELS[:] = names


def _probe_feedback(host: str) -> None:
    """Whether POST /v1/predictions/<id>/feedback exists: the router's 404 for a missing route
    says "no route for"; anything else (even 404 for an unknown request id) means it exists."""
    if STATE["feedback_endpoint"] is not None:
        return
    status, body = _http_json(
        host.rstrip("/") + f"/v1/predictions/{CONFIG.run_id}-probe/feedback", {"label": "probe"}, timeout=5.0
    )
    message = str(body.get("error", {}).get("message", ""))
    exists = not (status in (404, 405) and ("no route" in message or "not allowed" in message))
    STATE["feedback_endpoint"] = exists
    if not exists:
        print(
            "note: the router has no POST /v1/predictions/<request_id>/feedback endpoint; "
            "the feedback workload sends predictions only",
            file=sys.stderr,
            flush=True,
        )


def selected_workloads(tags: list[str] | None = None) -> list[str]:
    """LOADTEST_WORKLOAD, else the --tags that name workloads, else ["single"]."""
    chosen = CONFIG.workloads or [t for t in (tags or []) if t in USER_CLASSES]
    return chosen or ["single"]


@events.init.add_listener
def _select_user_classes(environment, **_kwargs) -> None:
    """Keep only the picked workloads' classes (unless classes were named on the command line),
    so `--tags batch` or LOADTEST_WORKLOAD=batch never starts a user that has no task left."""
    options = environment.parsed_options
    named = getattr(options, "user_classes", None) if options else None
    if named:
        return
    tags = list(environment.tags or []) or list(getattr(options, "tags", None) or [])
    wanted = {USER_CLASSES[w] for w in selected_workloads(tags)}
    if "feedback" in selected_workloads(tags) and not CONFIG.feedback:
        print(
            "note: the feedback workload sends no feedback without LOADTEST_FEEDBACK=1 "
            "(it needs POST /v1/predictions/<request_id>/feedback on the router)",
            file=sys.stderr,
            flush=True,
        )
    environment.user_classes[:] = [cls for cls in environment.user_classes if cls in wanted]
    if environment.available_user_classes is not None:
        for name in [n for n, cls in environment.available_user_classes.items() if cls not in wanted]:
            del environment.available_user_classes[name]


@events.test_start.add_listener
def _on_test_start(environment, **_kwargs) -> None:
    if environment.host and not MODELS:
        _load_models(environment.host)
        print(f"models: {len(MODELS)} ({', '.join(MODELS[:5])}{' ...' if len(MODELS) > 5 else ''})", file=sys.stderr)
    if environment.host and CONFIG.feedback and any(cls is FeedbackUser for cls in environment.user_classes):
        _probe_feedback(environment.host)


@events.quitting.add_listener
def _print_counts(environment, **_kwargs) -> None:
    if COUNTS["ok_requests"]:
        hit_rate = COUNTS["cache_hits"] / max(COUNTS["ok_texts"], 1)
        print(f"run {CONFIG.run_id}: {json.dumps(COUNTS)} cache hit rate {hit_rate:.3f}", file=sys.stderr)
