"""The router's settings: one typed pydantic-settings class read from API_<FIELD> variables (and
a few shared names such as DATABASE_URL), each field documented where it is declared
(`python -m api settings` lists them)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any

from pydantic import BeforeValidator, Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "API_"


def _json_object(value: object) -> object:
    """A JSON object given as text (router_settings(environ) passes variables through unparsed)."""
    return json.loads(value) if isinstance(value, str) else value


class RouterSettings(BaseSettings):
    """Keyword arguments win over the environment, which wins over the defaults. Read once per
    process, by `router_settings()`."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True)

    host: str = Field("127.0.0.1", description="address gunicorn binds to")
    port: int = Field(8000, description="HTTP port")
    workers: int = Field(2, description="gunicorn worker processes (about one per core)")
    threads: int = Field(8, description="threads per worker (gthread): requests wait on the embedder concurrently")
    embedder_address: str = Field(
        "127.0.0.1:50051", validation_alias="EMBEDDER_ADDRESS", description="gRPC address of the embedding service"
    )
    embed_timeout_s: float = Field(
        2.0,
        description="default deadline of a whole answer, in seconds, when neither the request "
        "(X-Request-Timeout-Ms) nor API_MODEL_DEADLINES_MS sets one; past it the fallback answers, else 503",
    )
    model_deadlines_ms: Annotated[dict[str, int], BeforeValidator(_json_object)] = Field(
        {},
        description='per-model default deadlines in milliseconds, a JSON object {"<tenant>/<model>": ms, '
        "\"<model>\": ms} (the tenant's entry wins); a request's X-Request-Timeout-Ms overrides them",
    )
    max_deadline_ms: int = Field(
        60_000, description="cap on every deadline, whether a request, API_MODEL_DEADLINES_MS or the default set it"
    )
    fallback_reserve_ms: float = Field(
        15.0,
        description="time kept for the fallback when a model has one, besides the fallback's own cost "
        "as measured at run time: the primary's embedding call ends this much earlier than the deadline",
    )
    explain_max_words: int = Field(
        64, description="most words (whitespace-separated tokens) of a text to explain (413 beyond)"
    )
    embedding_cache_size: int = Field(
        10_000,
        description="embeddings each worker keeps of the phrases it saw most recently (0: none); at most "
        "4 x dim + 512 bytes each whatever the text's length (2 KB for 384 floats, 5 KB for the 1,152 of "
        "features layers-4-6)",
    )
    resident_head_mb: int = Field(
        256,
        description="head weights, in MiB, each worker keeps mapped in its memory (0: no bound); beyond, the "
        "heads answered least recently give their pages back to the page cache and map them again when next "
        "asked (about 0.11 ms more for a 1.34 MB head, heads/mapped_weights.py)",
        ge=0,
    )
    share_embedding_cache: bool = Field(
        False,
        description="share the phrase caches (this worker's and the embedder's) between tenants: texts common "
        "to tenants are embedded once, but a tenant can then tell from cache_hit or the embedding time "
        "whether another tenant recently sent a text; false keeps one cache namespace per tenant",
    )
    database_url: str = Field(
        "",
        validation_alias="DATABASE_URL",
        description="PostgreSQL DSN of the inference database; empty uses libpq's PG* variables",
    )
    db_timeout_s: float = Field(
        5.0,
        description="longest a feedback, report or monitoring query may take, even on a database that never "
        "answers (503 past it)",
    )
    model_store: str = Field(
        "var/models", validation_alias="MODEL_STORE", description="folder of trained heads (heads/registry.py)"
    )
    spool_dir: str = Field("var/spool", description="where prediction rows wait while PostgreSQL is unreachable")
    migrate_on_start: bool = Field(
        True,
        description="apply the database migrations at start (retrying in the background); false where a "
        "separate job runs them as the schema owner and routers log in with a role that may not",
    )
    weights_check_at_start_s: float = Field(
        2.0,
        description="how long a worker may spend at start computing its heads' weights checksums before it "
        "reports ready; what is left is checked in the background and, for a head asked before the background "
        "reaches it, before its first answer (heads/weights_check.py): a store of thousands of heads is ready "
        "in seconds, not after hashing every weights file",
    )
    reload_interval_s: float = Field(
        1.0,
        description="how often workers look at the model store's generation file for a serving change",
    )
    rescan_interval_s: float = Field(
        30.0,
        description="how often workers scan every model although the store's generation did not move, "
        "while the store settles: for rescan_settle_s after a scan found a change (start included) and "
        "while a model fails to load (retries it; catches the rest of a sync, changes made around the registry)",
    )
    settled_rescan_interval_s: float = Field(
        300.0,
        description="how often workers scan every model once the store has settled, at least every "
        "rescan_interval_s (one stat per model: 0.1-0.3 s of CPU at 10,000 models)",
    )
    rescan_settle_s: float = Field(
        120.0,
        description="how long after a scan found a change the store counts as settling (rescan_interval_s)",
    )
    rollback_check_interval_s: float = Field(
        5.0,
        description="how often the elected worker checks guarded promotions for an automatic rollback "
        "(heads/rollback_guard.py); the monitoring loop runs at most once a second",
    )
    max_texts: int = Field(64, description="most texts in one predict request (413 beyond)")
    max_text_chars: int = Field(10_000, description="longest text accepted, in characters (413 beyond)")
    max_body_bytes: int = Field(1_048_576, description="largest request body, checked before parsing (413 beyond)")
    default_top_k: int = Field(3, description="labels returned per text when the request does not say")
    max_top_k: int = Field(20, description="largest top_k a request may ask for")
    probability_decimals: int = Field(4, description="decimals of every probability in responses")
    auth: bool = Field(True, description="require an API key (Authorization: Bearer); false only for local experiments")
    tenant_rate_rps: float = Field(
        500.0, description="default requests per second per tenant (tenants.rate_rps overrides)"
    )
    tenant_burst: int = Field(1000, description="default burst per tenant (tenants.burst overrides)")
    log_queue_size: int = Field(
        10_000,
        description="prediction rows queued in memory per worker for PostgreSQL; beyond, rows wait in the journal",
    )
    log_queue_bytes: int = Field(
        32 << 20,
        description="bytes of prediction rows queued in memory per worker; beyond, rows wait in the journal",
    )
    log_batch_size: int = Field(500, description="rows per INSERT of the inference log")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        return init_settings, env_settings  # no .env or secret files

    @model_validator(mode="after")
    def _check(self) -> RouterSettings:
        checks = {
            "port": 0 <= self.port <= 65535,
            "workers": self.workers >= 1,
            "threads": self.threads >= 1,
            "embed_timeout_s": self.embed_timeout_s > 0,
            "model_deadlines_ms": all(1 <= ms <= self.max_deadline_ms for ms in self.model_deadlines_ms.values()),
            "max_deadline_ms": self.max_deadline_ms >= 1,
            "fallback_reserve_ms": self.fallback_reserve_ms >= 0,
            "explain_max_words": self.explain_max_words >= 1,
            "embedding_cache_size": self.embedding_cache_size >= 0,
            "reload_interval_s": self.reload_interval_s > 0,
            "weights_check_at_start_s": self.weights_check_at_start_s >= 0,
            "rescan_interval_s": self.rescan_interval_s > 0,
            "settled_rescan_interval_s": self.settled_rescan_interval_s > 0,
            "rescan_settle_s": self.rescan_settle_s >= 0,
            "rollback_check_interval_s": self.rollback_check_interval_s > 0,
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
            raise ValueError(
                "invalid router settings: " + ", ".join(f"{variable(n)}={getattr(self, n)!r}" for n in bad)
            )
        return self


def variable(name: str) -> str:
    """The environment variable of the field `name`: its alias, else API_<NAME>."""
    return RouterSettings.model_fields[name].validation_alias or PREFIX + name.upper()


def describe() -> list[tuple[str, Any, str]]:
    """(variable, default, description) for every field."""
    return [(variable(name), f.default, f.description or "") for name, f in RouterSettings.model_fields.items()]


def router_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> RouterSettings:
    """The settings from keyword arguments, then `environ` (default: os.environ), then defaults.
    A bad value raises a one-line ValueError naming its variable."""
    if environ is not None:  # every field given, so that os.environ is not read
        fields = RouterSettings.model_fields
        overrides = {name: environ.get(variable(name), f.default) for name, f in fields.items()} | overrides
    try:
        return RouterSettings(**overrides)
    except ValidationError as exc:
        raise ValueError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    """`API_PORT='http' is not a valid int`: one line for the command line and logs."""
    by_key = {key: name for name in RouterSettings.model_fields for key in (name, variable(name))}
    problems = []
    for error in exc.errors(include_url=False):
        key = error["loc"][0] if error["loc"] else None
        name = by_key.get(key)
        if key is None:  # from _check, whose message names the variables
            problems.append(str(error["ctx"]["error"]))
        elif name is None:
            problems.append(f"unknown setting {key!r}")
        else:
            kind = RouterSettings.model_fields[name].annotation.__name__
            problems.append(f"{variable(name)}={error['input']!r} is not a valid {kind}")
    return "; ".join(problems)
