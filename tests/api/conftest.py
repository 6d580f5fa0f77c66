"""Router fixtures: a store with real trained heads, and a runtime wired from fakes for the
Flask unit tests (the end-to-end tests use the real embedder, gunicorn and PostgreSQL)."""

from __future__ import annotations

import shutil
import threading
from dataclasses import dataclass

import numpy as np
import pytest

from api.core.predictor import Predictor
from api.core.rate_limit import TenantRateLimiter
from api.core.runtime import Runtime
from api.core.settings import router_settings
from api.core.tenant_heads import TenantHeads
from api.web.app import create_app
from embedder.client import Embeddings, RemoteModelInfo
from embedder.errors import EmbedderError
from embedder.features import embedding_id
from heads.config import parse_config
from heads.pipeline import train_head
from heads.registry import ModelStore
from inferencedb.answer_counts import AnswerCounts
from inferencedb.centroids import CentroidAccumulator
from inferencedb.database import Database
from inferencedb.feedback import FeedbackStore
from inferencedb.inference_log import InferenceLog
from inferencedb.keys import KeyRecord, KeyRing, hash_secret
from tests.api.servers import free_port
from tests.fakes import HashEncoder, HashTextEmbedder

FAST = {"epochs": 6, "early_stopping_patience": 2, "batch_size": 32}


@pytest.fixture(scope="session")
def trained_store(tmp_path_factory, clinc_subset):
    """A model store trained on the hash embedder: `intents` (with oos and a threshold; a serving
    version and two more that do not serve) and `plain` (no reject label)."""
    root = tmp_path_factory.mktemp("store")
    store = ModelStore.for_tenant(root / "models", "default")  # MODEL_STORE/<tenant>/<model>/<version>
    data = {k: str(v) for k, v in clinc_subset.items()}
    runs = [
        ("intents", 16, {}),
        ("plain", 16, {"threshold": {"policy": "none"}}),
        ("intents", 8, {}),
        ("intents", 24, {}),
    ]
    for name, hidden, extra in runs:
        config = parse_config(
            {"name": name, "data": data, "model": {"type": "mlp", "hidden_layers": [hidden]}, "training": FAST, **extra}
        )
        train_head(config, store=store, cache_dir=root / "cache", embedder=HashTextEmbedder())
    return store


@pytest.fixture
def store(trained_store, tmp_path):
    """A private copy of the tenant "default", so tests may promote or break versions. The router
    serves its parent folder (MODEL_STORE holds one folder per tenant)."""
    copy = tmp_path / "models"
    shutil.copytree(trained_store.root.parent, copy, symlinks=True)
    return ModelStore.for_tenant(copy, "default")


def static_keys(**who: str | None) -> tuple[KeyRing, dict[str, str]]:
    """A KeyRing with one real key per name: static_keys(alice="default", op=None) gives alice a
    key of tenant "default" and op an operator key. Returns (ring, {name: key})."""
    records, keys = {}, {}
    for i, (name, tenant) in enumerate(who.items()):
        key_id, secret, salt = f"{i:012x}", f"{name:_<43}"[:43], bytes([i]) * 16
        records[key_id] = KeyRecord(
            key_id, tenant, "operator" if tenant is None else "tenant", salt, hash_secret(salt, secret)
        )
        keys[name] = f"mh_{key_id}_{secret}"
    return KeyRing(records), keys


class FakeEmbedder:
    """Answers like EmbedderClient with hash vectors; `fail_with` makes every call raise. Its cache
    hits, like the real embedder's, come from texts sent with the same scope (`scopes`: each call's)."""

    def __init__(self, model_id="hash-encoder@1", dim=32):
        self.model_id, self.dim = model_id, dim
        self.fail_with: EmbedderError | None = None
        self.calls: list[list[str]] = []
        self.scopes: list[str] = []
        self.features: list[str] = []  # each call's
        self.seen: set[tuple[str, str, str]] = set()
        self.lock = threading.Lock()

    def embed(self, texts, *, timeout=None, scope="", features=""):
        with self.lock:
            self.calls.append(list(texts))
            self.scopes.append(scope)
            self.features.append(features)
            if self.fail_with is not None:
                raise self.fail_with
            hits = np.array([(scope, features, t) in self.seen for t in texts])
            self.seen.update((scope, features, t) for t in texts)
        vectors = HashEncoder.feature_vectors(list(texts), self.dim, features)
        return Embeddings(vectors, hits, embedding_id(self.model_id, features))

    def info(self, *, timeout=None):
        if self.fail_with is not None:
            raise self.fail_with
        return RemoteModelInfo("hash-encoder", "1", self.dim, self.model_id, True, 0, 1024, 50_000, HashEncoder.LAYERS)

    def close(self):
        pass


class ListSink:
    def __init__(self):
        self.records = []

    def log_many(self, records):
        self.records.extend(records)


@dataclass
class Router:
    client: object  # sends the tenant key of "default" unless a request sets Authorization
    embedder: FakeEmbedder
    sink: ListSink
    runtime: Runtime
    keys: dict[str, str]  # tenant (of "default"), other (of tenant "other"), operator
    store: ModelStore  # the tenant "default"


def make_runtime(
    store: ModelStore, sink, database: Database, *, inference_log=None, feedback_wait_s=0.0, **settings_overrides
):
    settings = router_settings({}, model_store=str(store.root.parent), **settings_overrides)
    heads = TenantHeads(store.root.parent)
    heads.refresh()
    embedder = FakeEmbedder()
    centroids, answer_counts = CentroidAccumulator(database), AnswerCounts(database)
    predictor = Predictor(
        heads,
        embedder,
        sink,
        embed_timeout_s=1.0,
        decimals=4,
        on_embeddings=centroids.add,
        on_answers=answer_counts.add,
    )
    ring, keys = static_keys(tenant="default", other="other", operator=None)
    limiter = TenantRateLimiter(
        rate_rps=settings.tenant_rate_rps, burst=settings.tenant_burst, limits_for=ring.limits.get
    )
    feedback = FeedbackStore(database, wait_for_row_s=feedback_wait_s)
    runtime = Runtime(
        settings,
        heads,
        embedder,
        inference_log,
        predictor,
        feedback,
        database,
        ring,
        limiter,
        centroids=centroids,
        answer_counts=answer_counts,
    )
    return runtime, keys


@pytest.fixture
def router(store):
    nowhere = Database(f"postgresql://127.0.0.1:{free_port()}/none")  # feedback and reports: 503
    sink = ListSink()
    runtime, keys = make_runtime(
        store,
        sink,
        nowhere,
        max_texts=8,
        max_text_chars=200,
        max_body_bytes=4096,
        tenant_rate_rps=1e6,
        tenant_burst=10**6,
    )
    app = create_app(runtime=runtime)
    app.testing = True
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {keys['tenant']}"
    return Router(client, runtime.embedder, sink, runtime, keys, store)


@pytest.fixture
def db_router(store, db, tmp_path):
    """The router with a real inference log and feedback store on a fresh migrated database."""
    log = InferenceLog(db, spool_dir=tmp_path / "spool", flush_interval_s=0.05).start()
    database = Database(db)
    runtime, keys = make_runtime(store, log, database, inference_log=log, feedback_wait_s=3.0, database_url=db)
    app = create_app(runtime=runtime)
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {keys['tenant']}"
    yield Router(client, runtime.embedder, None, runtime, keys, store), db
    runtime.heads.stop()
    log.close()
    database.close()


@pytest.fixture(scope="session")
def embedder_process(tmp_path_factory):
    """The real embedding service (real model, real gRPC) for the whole session."""
    from devtools.embedder_process import EmbedderProcess

    with EmbedderProcess(
        {"EMBEDDER_METRICS_PORT": "-1"}, log_path=tmp_path_factory.mktemp("embedder") / "log"
    ) as process:
        yield process


@pytest.fixture(scope="session")
def real_store(tmp_path_factory, clinc_subset, embedder_process):
    """A store with `intents` trained on the real encoder, through the running embedder; its
    parent folder is a MODEL_STORE with the one tenant "default"."""
    from heads.embedding import RemoteEmbedder

    root = tmp_path_factory.mktemp("real-store")
    store = ModelStore.for_tenant(root / "models", "default")
    data = {k: str(v) for k, v in clinc_subset.items()}
    config = parse_config(
        {"name": "intents", "data": data, "model": {"type": "mlp", "hidden_layers": [64]}, "training": {"epochs": 30}}
    )
    train_head(config, store=store, cache_dir=root / "cache", embedder=RemoteEmbedder(embedder_process.address))
    return store
