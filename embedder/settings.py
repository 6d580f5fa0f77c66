"""The embedder's settings: one typed pydantic-settings class read from EMBEDDER_<FIELD> variables,
each field documented where it is declared (`python -m embedder settings` lists them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PREFIX = "EMBEDDER_"


class EmbedderSettings(BaseSettings):
    """Keyword arguments win over the environment, which wins over the defaults. Read once per
    process, by `embedder_settings()`."""

    model_config = SettingsConfigDict(env_prefix=PREFIX, frozen=True)

    address: str = Field("127.0.0.1:50051", description="host:port the gRPC server listens on")
    model: str = Field(
        "var/embedders/minilm-l6-v2",
        description="SavedModel folder or TF Hub handle, loaded with tensorflow_hub.load",
    )
    model_name: str = Field(
        "", description="name reported to clients (default: from the model's metadata or folder name)"
    )
    model_version: str = Field(
        "", description="version reported to clients (default: from the model's metadata or a fingerprint)"
    )
    cache_size: int = Field(50_000, description="phrases kept in the LRU phrase cache; 0 disables the cache")
    max_batch_size: int = Field(64, description="most texts the batcher hands the model at once")
    max_batch_tokens: int = Field(
        8192,
        description="most padded tokens in one model call: a batch is cut into calls of texts of similar "
        "length, each padded to its own longest",
    )
    max_wait_ms: float = Field(2.0, description="longest a text waits for others to join its batch")
    max_queue: int = Field(
        4096, description="most texts waiting for the model; beyond it requests get RESOURCE_EXHAUSTED"
    )
    max_texts: int = Field(1024, description="most texts in one Embed request")
    max_text_chars: int = Field(
        50_000,
        description="longest text accepted, in characters (the model then truncates to its sequence length)",
    )
    grpc_threads: int = Field(32, description="threads serving RPCs (each waits while its texts are embedded)")
    lanes: int = Field(
        0,
        description="model calls that run at once, each on its own threads; 0: one per core (one thread "
        "per call ran about 2x the phrases/s of one call on two threads)",
    )
    tf_threads: int = Field(
        0, description="TensorFlow intra-op threads per lane; 0: the cores shared out among the lanes"
    )
    xla_max_tokens: int = Field(
        128,
        description="a single text of at most this many tokens runs XLA-compiled (about half the time of the "
        "graph), each width bucket (4-token steps up to 32, wider past it) compiled in the background at start "
        "(about 10 s of CPU at low priority for the 16 buckets of 128, about 2 MB of memory each); 0 turns XLA off",
    )
    precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description="bf16: model calls run their MatMuls in bfloat16 (about 2x the phrases/s on a CPU with AMX or "
        "AVX512-BF16, cosine about 0.9999 to fp32); single texts that run XLA stay fp32",
    )
    metrics_port: int = Field(
        9464, description="Prometheus metrics HTTP port; 0 picks a free port, -1 disables metrics"
    )
    metrics_address: str = Field("127.0.0.1", description="address of the Prometheus metrics HTTP server")
    shutdown_grace_s: float = Field(10.0, description="on SIGTERM, how long in-flight requests may take to finish")

    @classmethod
    def settings_customise_sources(
        cls, settings_cls, init_settings, env_settings, dotenv_settings, file_secret_settings
    ):
        return init_settings, env_settings  # no .env or secret files

    @model_validator(mode="after")
    def _check(self) -> EmbedderSettings:
        checks = {
            "cache_size": self.cache_size >= 0,
            "max_batch_size": self.max_batch_size >= 1,
            "max_batch_tokens": self.max_batch_tokens >= 512,
            "max_wait_ms": self.max_wait_ms >= 0,
            "max_queue": self.max_queue >= self.max_batch_size,
            "max_texts": 1 <= self.max_texts <= self.max_queue,
            "max_text_chars": self.max_text_chars >= 1,
            "grpc_threads": self.grpc_threads >= 1,
            "lanes": self.lanes >= 0,
            "tf_threads": self.tf_threads >= 0,
            "xla_max_tokens": self.xla_max_tokens >= 0,
            "metrics_port": -1 <= self.metrics_port <= 65535,
            "shutdown_grace_s": self.shutdown_grace_s >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                "invalid embedder settings: "
                + ", ".join(f"{variable(n)}={getattr(self, n)!r}" for n in bad)
                + " (max_queue must be >= max_batch_size, and max_texts <= max_queue)"
            )
        return self


def variable(name: str) -> str:
    """The environment variable of the field `name`."""
    return PREFIX + name.upper()


def describe() -> list[tuple[str, Any, str]]:
    """(variable, default, description) for every field."""
    return [(variable(name), f.default, f.description or "") for name, f in EmbedderSettings.model_fields.items()]


def embedder_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> EmbedderSettings:
    """The settings from keyword arguments, then `environ` (default: os.environ), then defaults.
    A bad value raises a one-line ValueError naming its variable."""
    if environ is not None:  # every field given, so that os.environ is not read
        fields = EmbedderSettings.model_fields
        overrides = {name: environ.get(variable(name), f.default) for name, f in fields.items()} | overrides
    try:
        return EmbedderSettings(**overrides)
    except ValidationError as exc:
        raise ValueError(_explain(exc)) from None


def _explain(exc: ValidationError) -> str:
    """`EMBEDDER_CACHE_SIZE='lots' is not a valid int`: one line for the command line and logs."""
    problems = []
    for error in exc.errors(include_url=False):
        name = error["loc"][0] if error["loc"] else None
        field = EmbedderSettings.model_fields.get(name)
        if name is None:  # from _check, whose message names the variables
            problems.append(str(error["ctx"]["error"]))
        elif field is None:
            problems.append(f"unknown setting {name!r}")
        elif error["type"] == "literal_error":
            problems.append(f"{variable(name)}={error['input']!r}: {error['msg'].lower()}")
        else:
            problems.append(f"{variable(name)}={error['input']!r} is not a valid {field.annotation.__name__}")
    return "; ".join(problems)
