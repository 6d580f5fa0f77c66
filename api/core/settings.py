"""Router settings from environment variables (`python -m api settings` lists them)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from embedder.settings import from_env, setting


@dataclasses.dataclass(frozen=True)
class RouterSettings:
    host: str = setting("127.0.0.1", "address gunicorn binds to", env="API_HOST")
    port: int = setting(8000, "HTTP port", env="API_PORT")
    workers: int = setting(2, "gunicorn worker processes (about one per core)", env="API_WORKERS")
    threads: int = setting(
        8, "threads per worker (gthread): requests wait on the embedder concurrently", env="API_THREADS"
    )
    embedder_address: str = setting("127.0.0.1:50051", "gRPC address of the embedding service", env="EMBEDDER_ADDRESS")
    embed_timeout_s: float = setting(2.0, "deadline of one embedding call; past it the request gets 503")
    embedding_cache_size: int = setting(
        10_000,
        "embeddings each worker keeps of the phrases it saw most recently (0: none); at most 4 x dim + 512 "
        "bytes each whatever the text's length (2 KB at dim 384)",
    )
    share_embedding_cache: bool = setting(
        False,
        "share the phrase caches (this worker's and the embedder's) between tenants: texts common to "
        "tenants are embedded once, but a tenant can then tell from cache_hit or the embedding time "
        "whether another tenant recently sent a text; false keeps one cache namespace per tenant",
    )
    database_url: str = setting(
        "", "PostgreSQL DSN of the inference database; empty uses libpq's PG* variables", env="DATABASE_URL"
    )
    db_timeout_s: float = setting(
        5.0,
        "longest a feedback, report or monitoring query may take, even on a database that never answers (503 past it)",
    )
    model_store: str = setting("var/models", "folder of trained heads (heads/registry.py)", env="MODEL_STORE")
    spool_dir: str = setting("var/spool", "where prediction rows wait while PostgreSQL is unreachable")
    reload_interval_s: float = setting(1.0, "how often workers look for a changed serving version")
    max_texts: int = setting(64, "most texts in one predict request (413 beyond)")
    max_text_chars: int = setting(10_000, "longest text accepted, in characters (413 beyond)")
    max_body_bytes: int = setting(1_048_576, "largest request body, checked before parsing (413 beyond)")
    default_top_k: int = setting(3, "labels returned per text when the request does not say")
    max_top_k: int = setting(20, "largest top_k a request may ask for")
    probability_decimals: int = setting(4, "decimals of every probability in responses")
    auth: bool = setting(True, "require an API key (Authorization: Bearer); false only for local experiments")
    tenant_rate_rps: float = setting(500.0, "default requests per second per tenant (tenants.rate_rps overrides)")
    tenant_burst: int = setting(1000, "default burst per tenant (tenants.burst overrides)")
    log_queue_size: int = setting(
        10_000, "prediction rows queued in memory per worker for PostgreSQL; beyond, rows wait in the journal"
    )
    log_queue_bytes: int = setting(
        32 << 20, "bytes of prediction rows queued in memory per worker; beyond, rows wait in the journal"
    )
    log_batch_size: int = setting(500, "rows per INSERT of the inference log")

    def __post_init__(self) -> None:
        checks = {
            "port": 0 <= self.port <= 65535,
            "workers": self.workers >= 1,
            "threads": self.threads >= 1,
            "embed_timeout_s": self.embed_timeout_s > 0,
            "embedding_cache_size": self.embedding_cache_size >= 0,
            "reload_interval_s": self.reload_interval_s > 0,
            "db_timeout_s": self.db_timeout_s > 0,
            "max_texts": self.max_texts >= 1,
            "max_text_chars": self.max_text_chars >= 1,
            "max_body_bytes": self.max_body_bytes >= 1024,
            "default_top_k": 1 <= self.default_top_k <= self.max_top_k,
            "probability_decimals": 1 <= self.probability_decimals <= 8,
            "log_queue_size": self.log_queue_size >= 1,
            "log_queue_bytes": self.log_queue_bytes >= 1 << 16,
            "tenant_rate_rps": self.tenant_rate_rps > 0,
            "tenant_burst": self.tenant_burst >= 1,
            "log_batch_size": self.log_batch_size >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError("invalid router settings: " + ", ".join(f"{n}={getattr(self, n)!r}" for n in bad))


def router_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> RouterSettings:
    return from_env(RouterSettings, "API_", environ, **overrides)
