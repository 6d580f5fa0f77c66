"""The training config: one YAML file (or flags) describing data, architecture, training and
the operating threshold. Parsing is strict: unknown keys and wrong types are errors that name the
key, because a typo silently ignored ("epoch: 5") trains a different model than the one asked for.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from heads.errors import ConfigError
from heads.ngram import DEFAULT_BUCKETS, DEFAULT_RANGE
from heads.ngram import MAX_N as MAX_NGRAM

# Far beyond any useful n-gram head (a 151-class head with 2**24 buckets is 10 GB of weights), but
# it stops a typo from allocating the machine's memory.
MAX_BUCKETS = 1 << 24


@dataclass(frozen=True)
class SqlSource:
    query: str
    dsn: str = ""  # empty: DATABASE_URL, else libpq's PGHOST/PGUSER/PGPASSWORD/... variables
    text_column: str = "text"
    label_column: str = "label"


@dataclass(frozen=True)
class FeedbackSource:
    """Corrected predictions of a model from the inference database: the text each answered
    prediction received, with the label feedback says it should have had."""

    model: str
    since: str = ""  # ISO 8601 date or datetime of the feedback (inclusive); empty: the beginning
    until: str = ""  # exclusive; empty: now
    tenant: str = "default"
    dsn: str = ""  # empty: DATABASE_URL, else libpq's PG* variables


Source = str | SqlSource | FeedbackSource


@dataclass(frozen=True)
class DataConfig:
    # One source, or a list whose rows are concatenated (e.g. the original training file plus
    # the feedback collected since: the next version learns from its corrections).
    train: str | SqlSource | FeedbackSource | tuple[str | SqlSource | FeedbackSource, ...]
    validation: str | SqlSource | None = None
    test: str | SqlSource | None = None
    text_column: str = "text"
    label_column: str = "label"
    # Without a validation source, this share of the training rows (stratified) validates.
    validation_fraction: float = 0.1
    min_examples_per_label: int = 2


@dataclass(frozen=True)
class ArchitectureConfig:
    """The head's model. "mlp": a feed-forward network on sentence embeddings (heads/network.py),
    configured by hidden_layers, activation and dropout. "ngram": a linear model on hashed
    character n-grams of the text (heads/ngram.py), configured by ngram_range and ngram_buckets;
    it needs no embedder, so routers can keep answering with it while the embedder is down."""

    type: Literal["mlp", "ngram"] = "mlp"
    hidden_layers: tuple[int, ...] = (1024,)
    activation: Literal["relu", "gelu", "tanh", "sigmoid"] = "relu"
    dropout: float = 0.3
    ngram_range: tuple[int, int] = DEFAULT_RANGE
    # 2**14: a 151-class head of 9.9 MB (see heads/ngram.py for the measured trade-off).
    ngram_buckets: int = DEFAULT_BUCKETS

    def keys_for_other_types(self) -> list[str]:
        """Keys set away from their defaults that only another model type uses: a config that
        sets them most likely meant that other type."""
        own = {"mlp": MLP_KEYS, "ngram": NGRAM_KEYS}[self.type]
        defaults = ArchitectureConfig()
        return [
            f"model.{name}"
            for name in sorted((MLP_KEYS | NGRAM_KEYS) - own)
            if getattr(self, name) != getattr(defaults, name)
        ]


MLP_KEYS = frozenset({"hidden_layers", "activation", "dropout"})
NGRAM_KEYS = frozenset({"ngram_range", "ngram_buckets"})
# Adam's step size: the n-gram model's weights are sparse rows that a mini-batch rarely touches,
# so it needs larger steps (on CLINC150, 0.01 reaches in 8 epochs what 0.001 reaches in 60).
DEFAULT_LEARNING_RATE = {"mlp": 0.001, "ngram": 0.01}


@dataclass(frozen=True)
class TrainingConfig:
    epochs: int = 60
    batch_size: int = 128
    # Empty: the model type's default (DEFAULT_LEARNING_RATE), filled in by HeadConfig so the
    # config stored with a version names the rate that was used.
    learning_rate: float | None = None
    label_smoothing: float = 0.1
    early_stopping_patience: int = 5
    seed: int = 13
    # "balanced": weight each class by n / (classes * count); "none": plain loss.
    class_weight: Literal["balanced", "none"] = "balanced"


@dataclass(frozen=True)
class ThresholdConfig:
    # The label returned when the head is not confident enough (and the out-of-scope label of the
    # data, if it has one: CLINC150 calls it "oos").
    reject_label: str = "oos"
    # auto: target_oos_recall when the data has reject_label rows, else none.
    # target_oos_recall: best validation in-scope accuracy with out-of-scope recall >= target.
    # max_balanced: best mean of in-scope accuracy and out-of-scope recall on validation.
    # coverage: answer the `target` share of validation rows, reject the least confident rest.
    # fixed: use `value`.  none: never reject.
    policy: Literal["auto", "target_oos_recall", "max_balanced", "coverage", "fixed", "none"] = "auto"
    target: float = 0.8
    value: float = 0.5


@dataclass(frozen=True)
class HeadConfig:
    name: str
    data: DataConfig
    model: ArchitectureConfig = field(default_factory=ArchitectureConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    # Embedder: a gRPC address ("host:port") or empty to load the model in-process.
    embedder_address: str = ""
    embedder_model: str = "var/embedders/minilm-l6-v2"

    def __post_init__(self) -> None:
        if self.training.learning_rate is None:
            rate = DEFAULT_LEARNING_RATE[self.model.type]
            object.__setattr__(self, "training", dataclasses.replace(self.training, learning_rate=rate))
        checks = [
            (0 <= self.data.validation_fraction < 1, "data.validation_fraction must be in [0, 1)"),
            (self.data.min_examples_per_label >= 1, "data.min_examples_per_label must be >= 1"),
            (all(h > 0 for h in self.model.hidden_layers), "model.hidden_layers must be positive sizes"),
            (0 <= self.model.dropout < 1, "model.dropout must be in [0, 1)"),
            (
                1 <= self.model.ngram_range[0] <= self.model.ngram_range[1] <= MAX_NGRAM,
                f"model.ngram_range must be [low, high] with 1 <= low <= high <= {MAX_NGRAM}",
            ),
            (1 <= self.model.ngram_buckets <= MAX_BUCKETS, f"model.ngram_buckets must be in [1, {MAX_BUCKETS}]"),
            *[
                (False, f"{key} does not apply to model.type {self.model.type!r}")
                for key in self.model.keys_for_other_types()
            ],
            (self.training.epochs >= 1, "training.epochs must be >= 1"),
            (self.training.batch_size >= 1, "training.batch_size must be >= 1"),
            (self.training.learning_rate > 0, "training.learning_rate must be > 0"),
            (0 <= self.training.label_smoothing < 1, "training.label_smoothing must be in [0, 1)"),
            (self.training.early_stopping_patience >= 0, "training.early_stopping_patience must be >= 0"),
            (0 <= self.threshold.target <= 1, "threshold.target must be in [0, 1]"),
            (0 <= self.threshold.value <= 1, "threshold.value must be in [0, 1]"),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ConfigError("; ".join(problems))


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is type(None):
                continue
            try:
                return _convert(value, option, where)
            except ConfigError:
                continue
        raise ConfigError(f"{where}: expected one of {', '.join(_type_name(o) for o in options)}, got {value!r}")
    if origin is Literal:
        allowed = typing.get_args(tp)
        if value not in allowed:
            raise ConfigError(f"{where}: must be one of {', '.join(map(repr, allowed))}, got {value!r}")
        return value
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_convert(v, args[0], f"{where}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_convert(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return _build(tp, value, where)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported type {tp}")  # pragma: no cover - a bug in this module


def _build(cls: type, raw: dict, where: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        prefix = f"{where}." if where else ""
        raise ConfigError(
            f"unknown key(s) {', '.join(prefix + k for k in unknown)}; allowed: {', '.join(prefix + k for k in fields)}"
        )
    values = {}
    for name, f in fields.items():
        key = f"{where}.{name}" if where else name
        if name in raw:
            values[name] = _convert(raw[name], hints[name], key)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise ConfigError(f"missing required key {key}")
    return cls(**values)


def parse_config(raw: dict) -> HeadConfig:
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping at the top level")
    return _build(HeadConfig, raw, "")


def load_config(path: str | Path) -> HeadConfig:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return parse_config(raw or {})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def config_to_dict(config: HeadConfig) -> dict:
    """Plain data (lists, not tuples) for YAML/JSON: the exact config stored with a version."""

    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, tuple):
            return [plain(v) for v in value]
        return value

    return plain(config)
