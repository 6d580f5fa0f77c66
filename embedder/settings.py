"""Settings from environment variables: one typed, documented object per service.

`from_env(EmbedderSettings)` fills each field from `EMBEDDER_<FIELD NAME>`; the router uses the
same helper with its own prefix. Each field's `doc` is printed by `python -m embedder settings`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from typing import Any, TypeVar

S = TypeVar("S")


def setting(default: Any, doc: str, *, env: str = "") -> Any:
    """A documented field; `env` names its variable when it is not PREFIX_FIELD (e.g. DATABASE_URL)."""
    return dataclasses.field(default=default, metadata={"doc": doc, "env": env})


def _variable(f: dataclasses.Field, prefix: str) -> str:
    return f.metadata.get("env") or f"{prefix}{f.name.upper()}"


def _parse(raw: str, kind: type, name: str) -> Any:
    try:
        if kind is bool:
            value = raw.strip().lower()
            if value not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return value in ("1", "true", "yes", "on")
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a valid {kind.__name__}") from None


def from_env(cls: type[S], prefix: str, environ: Mapping[str, str] | None = None, **overrides: Any) -> S:
    """An instance of the dataclass `cls`: explicit overrides, then PREFIX_FIELD variables,
    then the declared defaults."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        var = _variable(f, prefix)
        if f.name in overrides:
            values[f.name] = overrides[f.name]
        elif var in environ:
            values[f.name] = _parse(environ[var], type(f.default), var)
    return cls(**values)


def describe(cls: type, prefix: str) -> list[tuple[str, Any, str]]:
    """(variable, default, doc) for every field."""
    return [(_variable(f, prefix), f.default, f.metadata.get("doc", "")) for f in dataclasses.fields(cls)]


@dataclasses.dataclass(frozen=True)
class EmbedderSettings:
    address: str = setting("127.0.0.1:50051", "host:port the gRPC server listens on")
    model: str = setting(
        "var/embedders/minilm-l6-v2",
        "SavedModel folder or TF Hub handle, loaded with tensorflow_hub.load",
    )
    model_name: str = setting("", "name reported to clients (default: from the model's metadata or folder name)")
    model_version: str = setting(
        "", "version reported to clients (default: from the model's metadata or a fingerprint)"
    )
    cache_size: int = setting(50_000, "phrases kept in the LRU phrase cache; 0 disables the cache")
    max_batch_size: int = setting(64, "most texts in one model call")
    max_wait_ms: float = setting(2.0, "longest a text waits for others to join its batch")
    max_queue: int = setting(4096, "most texts waiting for the model; beyond it requests get RESOURCE_EXHAUSTED")
    max_texts: int = setting(1024, "most texts in one Embed request")
    max_text_chars: int = setting(
        50_000, "longest text accepted, in characters (the model then truncates to its sequence length)"
    )
    grpc_threads: int = setting(32, "threads serving RPCs (each waits while its texts are embedded)")
    tf_threads: int = setting(0, "TensorFlow intra-op threads; 0 lets TensorFlow choose (one per core)")
    metrics_port: int = setting(9464, "Prometheus metrics HTTP port; 0 picks a free port, -1 disables metrics")
    metrics_address: str = setting("127.0.0.1", "address of the Prometheus metrics HTTP server")
    shutdown_grace_s: float = setting(10.0, "on SIGTERM, how long in-flight requests may take to finish")

    def __post_init__(self) -> None:
        checks = {
            "cache_size": self.cache_size >= 0,
            "max_batch_size": self.max_batch_size >= 1,
            "max_wait_ms": self.max_wait_ms >= 0,
            "max_queue": self.max_queue >= self.max_batch_size,
            "max_texts": 1 <= self.max_texts <= self.max_queue,
            "max_text_chars": self.max_text_chars >= 1,
            "grpc_threads": self.grpc_threads >= 1,
            "tf_threads": self.tf_threads >= 0,
            "metrics_port": -1 <= self.metrics_port <= 65535,
            "shutdown_grace_s": self.shutdown_grace_s >= 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise ValueError(
                "invalid embedder settings: "
                + ", ".join(f"EMBEDDER_{n.upper()}={getattr(self, n)!r}" for n in bad)
                + " (max_queue must be >= max_batch_size, and max_texts <= max_queue)"
            )


def embedder_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> EmbedderSettings:
    return from_env(EmbedderSettings, "EMBEDDER_", environ, **overrides)
