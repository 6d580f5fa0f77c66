"""The training config: one YAML file (or flags) describing data, architecture, training and
the operating threshold, declared as pydantic dataclasses. Parsing is strict: unknown keys and
wrong types are errors that name the key, because a typo silently ignored ("epoch: 5") trains a
different model than the one asked for.

They are pydantic *dataclasses* (not BaseModel) so that `dataclasses.replace`, `fields` and
`asdict` keep working for the code and tests that derive one config from another; `replace`
validates again, like the constructor.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    ConfigDict,
    Discriminator,
    StrictFloat,
    StrictInt,
    StrictStr,
    Tag,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass

from embedder.features import UnknownFeatures, parse_features
from heads.errors import ConfigError
from heads.ngram import DEFAULT_BUCKETS, DEFAULT_RANGE
from heads.ngram import MAX_N as MAX_NGRAM

# Far beyond any useful n-gram head (a 151-class head with 2**24 buckets is 10 GB of weights), but
# it stops a typo from allocating the machine's memory.
MAX_BUCKETS = 1 << 24

# YAML values are taken as written: no "10" for 10, no true for 1 (a float field takes an integer).
# Lists become tuples.
_STRICT = ConfigDict(extra="forbid")
# What the dense heads score (embedder/features.py): on CLINC150, 0.7 points of in-scope accuracy
# more than the sentence embedding alone for the default head, 0.9 for logistic regression
# (README, `make bench-heads`).
DEFAULT_FEATURES = "layers-4-6"


def _known_features(name: str) -> bool:
    try:
        parse_features(name)
    except UnknownFeatures:
        return False
    return True


@dataclass(frozen=True, config=_STRICT)
class SqlSource:
    query: StrictStr
    dsn: StrictStr = ""  # empty: DATABASE_URL, else libpq's PGHOST/PGUSER/PGPASSWORD/... variables
    text_column: StrictStr = "text"
    label_column: StrictStr = "label"


@dataclass(frozen=True, config=_STRICT)
class FeedbackSource:
    """Corrected predictions of a model from the inference database: the text each answered
    prediction received, with the label feedback says it should have had."""

    model: StrictStr
    since: StrictStr = ""  # ISO 8601 date or datetime of the feedback (inclusive); empty: the beginning
    until: StrictStr = ""  # exclusive; empty: now
    tenant: StrictStr | None = None  # None: the tenant the model is trained for
    dsn: StrictStr = ""  # empty: DATABASE_URL, else libpq's PG* variables


# What a data source is, told by its shape: a string is a file, a mapping with `query` an SQL
# source, one with `model` (and no `query`) feedback, a list several sources. The tags name the
# member in error paths (dropped by _where) and in messages.
_TAG_CLASSES = {"file path": str, "SQL source": SqlSource, "feedback source": FeedbackSource, "list": tuple}


def _source_kind(value: Any) -> str | None:
    if isinstance(value, str):
        return "file path"
    if isinstance(value, (list, tuple)):
        return "list"
    if isinstance(value, FeedbackSource) or (isinstance(value, dict) and "model" in value and "query" not in value):
        return "feedback source"
    if isinstance(value, (SqlSource, dict)):
        return "SQL source"
    return None


def _sources(expected: str) -> Discriminator:
    return Discriminator(_source_kind, custom_error_type="source", custom_error_message=f"expected one of: {expected}")


_ONE = "a file path, an SQL source {query: ...}"
File = Annotated[StrictStr, Tag("file path")]
Sql = Annotated[SqlSource, Tag("SQL source")]
Feedback = Annotated[FeedbackSource, Tag("feedback source")]
Source = Annotated[File | Sql | Feedback, _sources(f"{_ONE}, a feedback source {{model: ...}}")]
# A single source, or a list whose rows are concatenated (e.g. the original training file plus
# the feedback collected since: the next version learns from its corrections).
TrainSource = Annotated[
    File | Sql | Feedback | Annotated[tuple[Source, ...], Tag("list")],
    _sources(f"{_ONE}, a feedback source {{model: ...}}, a list of those"),
]
EvalSource = Annotated[File | Sql, _sources(_ONE)]


@dataclass(frozen=True, config=_STRICT)
class DataConfig:
    train: TrainSource
    validation: EvalSource | None = None
    test: EvalSource | None = None
    text_column: StrictStr = "text"
    label_column: StrictStr = "label"
    # Without a validation source, this share of the training rows (stratified) validates.
    validation_fraction: StrictFloat = 0.1
    min_examples_per_label: StrictInt = 2


DenseFamily = Literal["mlp", "logistic", "ensemble"]
HEAD_FAMILIES = typing.get_args(DenseFamily)  # the dense heads `auto` may choose among (heads/selection.py)
DEFAULT_CANDIDATES = ("mlp", "logistic")  # what `auto` trains unless selection.candidates says otherwise


@dataclass(frozen=True, config=_STRICT)
class ArchitectureConfig:
    """The head's model. The dense heads score the embedder's vectors of feature set `features`
    (embedder/features.py: "layers-4-6", the default, pools encoder layers 4 to 6; "sentence" is
    the sentence embedding alone) and serve as one numpy `DenseHead` (heads/network.py):

    - "mlp": a feed-forward network, configured by hidden_layers, activation and dropout;
    - "logistic": multinomial logistic regression (no hidden layer);
    - "ensemble": `ensemble_members` such networks from different initialisations, their logits
      averaged (exported as one wider network, heads/ensemble.py);
    - "auto" (the default): trains the families `selection.candidates` lists (mlp and logistic
      unless it says otherwise) and keeps the best on the validation split by `selection.metric`;
      every candidate's scores go into the version's reports.

    "ngram": a linear model on hashed character n-grams of the text (heads/ngram.py), configured by
    ngram_range and ngram_buckets; it needs no embedder, so routers can keep answering with it
    while the embedder is down."""

    type: Literal["auto", "mlp", "logistic", "ensemble", "ngram"] = "auto"
    features: StrictStr = DEFAULT_FEATURES
    # 512 units on the 1,152 floats of layers-4-6 scored as 1,024 did on CLINC150 (95.6 / 95.5 against
    # 95.4 / 95.6 in-scope, seeds 13 and 14) in about 60% of the training time and half the weights.
    hidden_layers: tuple[StrictInt, ...] = (512,)
    activation: Literal["relu", "gelu", "tanh", "sigmoid"] = "relu"
    dropout: StrictFloat = 0.3
    ensemble_members: StrictInt = 3
    ngram_range: tuple[StrictInt, StrictInt] = DEFAULT_RANGE
    # 2**14: a 151-class head of 9.9 MB (see heads/ngram.py for the measured trade-off).
    ngram_buckets: StrictInt = DEFAULT_BUCKETS

    def keys_for_other_types(self) -> list[str]:
        """Keys set away from their defaults that only another model type uses: a config that
        sets them most likely meant that other type."""
        own = OWN_KEYS[self.type]
        defaults = ArchitectureConfig()
        return [
            f"model.{name}"
            for name in sorted(frozenset().union(*OWN_KEYS.values()) - own)
            if getattr(self, name) != getattr(defaults, name)
        ]


MLP_KEYS = frozenset({"hidden_layers", "activation", "dropout"})
NGRAM_KEYS = frozenset({"ngram_range", "ngram_buckets"})
OWN_KEYS = {
    "auto": MLP_KEYS | {"ensemble_members", "features"},
    "mlp": MLP_KEYS | {"features"},
    "logistic": frozenset({"features"}),
    "ensemble": MLP_KEYS | {"ensemble_members", "features"},
    "ngram": NGRAM_KEYS,
}
# Adam's step size per head family, for batches of 128 rows. Logistic regression has no hidden
# layer to spread the steps over and needs larger ones; the n-gram model's weights are sparse rows
# that a mini-batch rarely touches (on CLINC150, 0.01 reaches in 8 epochs what 0.001 reaches in 60).
DEFAULT_LEARNING_RATE = {"mlp": 0.001, "ensemble": 0.001, "logistic": 0.01, "ngram": 0.01}
# Rows per training step when the config gives none: the dense families take 512 once the
# training split has LARGE_TRAINING_ROWS (16 steps an epoch or more). Their time is spent in matrix
# products, which run about twice as fast on 2 cores at 512 rows as at 128 (CLINC150, three
# 1024-unit networks at once: 3.5 -> 1.7 s an epoch); a smaller split keeps 128, or it would take
# a handful of steps an epoch. The n-gram trainer's sparse updates are tuned for 128.
LARGE_TRAINING_ROWS = 8192


def default_batch_size(family: str, training_rows: int) -> int:
    return 512 if family != "ngram" and training_rows >= LARGE_TRAINING_ROWS else 128


def large_split_recipe(training: TrainingConfig, training_rows: int) -> tuple[float, int]:
    """(early_stopping_min_delta, learning_rate_patience) as given, else the dense families'
    defaults: on a large split (LARGE_TRAINING_ROWS), 0.003 and 2, which stop CLINC150's networks
    after about 20 epochs instead of 50 with the same test accuracy; on a smaller one, 0 and 0 (a
    constant rate, stopping on any fall), which the demo sets of a few hundred rows needed: with
    the large-split recipe two of the three fell 0.7-1.0 point below logistic regression."""
    large = training_rows >= LARGE_TRAINING_ROWS
    min_delta = training.early_stopping_min_delta
    patience = training.learning_rate_patience
    return (
        (0.003 if large else 0.0) if min_delta is None else min_delta,
        (2 if large else 0) if patience is None else patience,
    )


def default_learning_rate(family: str, batch_size: int) -> float:
    """The family's rate, grown with the square root of the batch above 128 rows (fewer, less
    noisy steps take larger ones): 512 rows get twice the rate of 128. (Measured on CLINC150 at 512
    rows, three seeds: 4x the rate, as the linear rule would have it, cost 0.2 point of in-scope
    accuracy against 2x.)"""
    return round(DEFAULT_LEARNING_RATE[family] * max(1.0, (batch_size / 128) ** 0.5), 6)


@dataclass(frozen=True, config=_STRICT)
class SelectionConfig:
    """How `model.type: auto` chooses among the head families, on the validation split.

    auto: in_scope_accuracy when the threshold rejects (the data has reject_label rows), else
    accuracy. in_scope_accuracy: at the threshold the threshold policy chooses (on calibrated
    probabilities). accuracy, macro_f1: of the top label. log_loss: negative log-likelihood of the
    calibrated probabilities (lower is better). An exact tie goes to the cheaper family to serve
    (logistic, then mlp, then ensemble).

    ensemble_margin: the ensemble serves `ensemble_members` times the weights and the forward pass
    of one network, so it is kept only when its validation score beats the best single family's
    by at least this much. 0.002 is 6 of CLINC150's 3,000 in-scope validation rows, below the
    noise between two heads scored on the same rows (their answers differ on some 3% of them, a
    sampling spread of about sqrt(90) / 3000 = 0.003): a larger margin (0.005 was tried) threw
    away ensembles whose lead held on test (README, issue 15).

    candidates: the families `model.type: auto` trains and chooses among. The ensemble is not
    among them unless listed: it trains `ensemble_members` networks (CLINC150: 72.8 s, against
    21-26 s for the mlp alone and 5-8 s for logistic regression, on an AMD EPYC) and `make
    bench-heads` never kept it (0 of 21 dataset-seed runs, 2 December, README): add "ensemble" to
    weigh it anyway."""

    metric: Literal["auto", "accuracy", "in_scope_accuracy", "macro_f1", "log_loss"] = "auto"
    ensemble_margin: StrictFloat = 0.002
    candidates: tuple[DenseFamily, ...] = DEFAULT_CANDIDATES


@dataclass(frozen=True, config=_STRICT)
class CalibrationConfig:
    """How the served probabilities are calibrated on the validation split, folded into the
    exported weights (heads/calibration.py).

    temperature: divide the logits by the T that minimises the validation log-loss.
    temperature_reject_shift: fit T together with a shift of the reject class's logit
    (threshold.reject_label), which out-of-scope inputs need; the validation split must hold rows
    of that label and of others. auto: temperature_reject_shift when it does, else temperature.
    none: serve the trained probabilities as they are."""

    method: Literal["auto", "temperature", "temperature_reject_shift", "none"] = "auto"


@dataclass(frozen=True, config=_STRICT)
class TrainingConfig:
    epochs: StrictInt = 60
    # Empty: `default_batch_size` (the n-gram model's 128 is filled in by HeadConfig; a dense
    # family's depends on the training rows, and model_selection.json names it).
    batch_size: StrictInt | None = None
    # Empty: the model type's default (`default_learning_rate`), filled in by HeadConfig when the
    # batch size is known, so the config stored with a version names the rate that was used;
    # otherwise (model.type auto, or no batch_size) the version's model_selection.json names it.
    learning_rate: StrictFloat | None = None
    # Dense families: the rate is divided by 5 each time the validation loss (the members' mean)
    # has gone this many epochs without falling by early_stopping_min_delta (0: a constant rate).
    # Empty: `large_split_recipe` (2 on a large training split, else 0).
    learning_rate_patience: StrictInt | None = None
    label_smoothing: StrictFloat = 0.1
    early_stopping_patience: StrictInt = 5
    # A dense head improves only when its validation loss falls by more than this: on a large
    # split the smoothed loss creeps down for dozens of epochs after the accuracy has stopped
    # moving. Empty: `large_split_recipe` (0.003 on a large training split, else 0).
    early_stopping_min_delta: StrictFloat | None = None
    seed: StrictInt = 13
    # "balanced": weight each class by n / (classes * count); "none": plain loss.
    class_weight: Literal["balanced", "none"] = "balanced"


@dataclass(frozen=True, config=_STRICT)
class ThresholdConfig:
    # The label returned when the head is not confident enough (and the out-of-scope label of the
    # data, if it has one: CLINC150 calls it "oos").
    reject_label: StrictStr = "oos"
    # auto: target_oos_recall when the data has reject_label rows, else none.
    # target_oos_recall: best validation in-scope accuracy with out-of-scope recall >= target.
    # max_balanced: best mean of in-scope accuracy and out-of-scope recall on validation.
    # coverage: answer the `target` share of validation rows, reject the least confident rest.
    # fixed: use `value`.  none: never reject.
    policy: Literal["auto", "target_oos_recall", "max_balanced", "coverage", "fixed", "none"] = "auto"
    target: StrictFloat = 0.8
    value: StrictFloat = 0.5


@dataclass(frozen=True, config=_STRICT)
class HeadConfig:
    name: StrictStr
    data: DataConfig
    model: ArchitectureConfig = dataclasses.field(default_factory=ArchitectureConfig)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    threshold: ThresholdConfig = dataclasses.field(default_factory=ThresholdConfig)
    selection: SelectionConfig = dataclasses.field(default_factory=SelectionConfig)
    calibration: CalibrationConfig = dataclasses.field(default_factory=CalibrationConfig)
    # Embedder: a gRPC address ("host:port") or empty to load the model in-process.
    embedder_address: StrictStr = ""
    embedder_model: StrictStr = "var/embedders/minilm-l6-v2"

    @property
    def families(self) -> tuple[str, ...]:
        """The head families training tries: `selection.candidates` for "auto", else the one named."""
        return self.selection.candidates if self.model.type == "auto" else (self.model.type,)

    @model_validator(mode="after")
    def _check(self) -> HeadConfig:
        """Fills the learning rate in and checks ranges and combinations: a ConfigError (not a
        ValueError, so pydantic lets it through as it is) listing every problem by its key."""
        if self.training.batch_size is None and self.model.type == "ngram":
            object.__setattr__(self, "training", dataclasses.replace(self.training, batch_size=128))
        if self.training.learning_rate is None and self.model.type != "auto" and self.training.batch_size:
            rate = default_learning_rate(self.model.type, self.training.batch_size)
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
            (self.model.ensemble_members >= 2, "model.ensemble_members must be >= 2"),
            *[
                (False, f"{key} does not apply to model.type {self.model.type!r}")
                for key in self.model.keys_for_other_types()
            ],
            (self.training.epochs >= 1, "training.epochs must be >= 1"),
            (self.training.batch_size is None or self.training.batch_size >= 1, "training.batch_size must be >= 1"),
            (
                self.training.learning_rate is None or self.training.learning_rate > 0,
                "training.learning_rate must be > 0",
            ),
            (0 <= self.training.label_smoothing < 1, "training.label_smoothing must be in [0, 1)"),
            (self.training.early_stopping_patience >= 0, "training.early_stopping_patience must be >= 0"),
            (self.selection.ensemble_margin >= 0, "selection.ensemble_margin must be >= 0"),
            (
                len(set(self.selection.candidates)) == len(self.selection.candidates) >= 1,
                "selection.candidates must name at least one family, each once",
            ),
            (
                self.model.type != "auto"
                or "ensemble" in self.selection.candidates
                or self.model.ensemble_members == ArchitectureConfig().ensemble_members,
                "model.ensemble_members applies only when selection.candidates lists 'ensemble' (a config "
                "written before selection.candidates trained it under auto: add candidates: [mlp, logistic, ensemble])",
            ),
            (
                self.model.type == "auto" or set(self.selection.candidates) == set(DEFAULT_CANDIDATES),
                f"selection.candidates does not apply to model.type {self.model.type!r} (only 'auto' chooses)",
            ),
            (
                self.training.learning_rate_patience is None or self.training.learning_rate_patience >= 0,
                "training.learning_rate_patience must be >= 0",
            ),
            (
                self.training.early_stopping_min_delta is None or self.training.early_stopping_min_delta >= 0,
                "training.early_stopping_min_delta must be >= 0",
            ),
            (0 <= self.threshold.target <= 1, "threshold.target must be in [0, 1]"),
            (0 <= self.threshold.value <= 1, "threshold.value must be in [0, 1]"),
            (
                _known_features(self.model.features),
                f"model.features must be 'sentence' or 'layers-A-B' (e.g. 'layers-4-6'), got {self.model.features!r}",
            ),
        ]
        problems = [message for ok, message in checks if not ok]
        if problems:
            raise ConfigError("; ".join(problems))
        return self


_HEAD_CONFIG = TypeAdapter(HeadConfig)

_EXPECTED = {
    "int_type": "expected an integer",
    "float_type": "expected a number",
    "string_type": "expected a string",
    "tuple_type": "expected a list",
    "dataclass_type": "expected a mapping",
}
_UNKNOWN = ("unexpected_keyword_argument", "extra_forbidden")


def _where(loc: tuple) -> str:
    """A location as the config spells it, `data.train[1].query`; union tags are left out."""
    where = ""
    for part in loc:
        if isinstance(part, int):
            where += f"[{part}]"
        elif part not in _TAG_CLASSES:
            where += f".{part}" if where else part
    return where


def _type_at(loc: tuple) -> Any:
    """The declared type at `loc` (a dataclass, a Literal, ...): the keys or values it allows."""
    tp: Any = HeadConfig
    for part in loc:
        if part in _TAG_CLASSES:
            tp = _TAG_CLASSES[part]
        elif isinstance(part, str) and dataclasses.is_dataclass(tp):
            tp = tp.__pydantic_fields__[part].annotation
        elif isinstance(part, int) and typing.get_origin(tp) is tuple and typing.get_args(tp)[-1] is Ellipsis:
            tp = typing.get_args(tp)[0]  # an item of a list of any length
    return tp


def _explain(exc: ValidationError) -> str:
    """pydantic's errors as one line of the config's own words, each naming its key."""
    problems = []
    unknown: dict[tuple, list[str]] = {}
    for error in exc.errors(include_url=False):
        loc, kind = error["loc"], error["type"]
        where = _where(loc)
        if kind in _UNKNOWN:
            unknown.setdefault(loc[:-1], []).append(where)
        elif kind == "missing" and isinstance(loc[-1], str):
            problems.append(f"missing required key {where}")
        elif kind in ("missing", "too_long"):  # a fixed-length list (ngram_range) too short or too long
            whole = loc[:-1] if kind == "missing" else loc
            problems.append(f"{_where(whole)}: expected {len(typing.get_args(_type_at(whole)))} values")
        elif kind == "literal_error":
            allowed = ", ".join(map(repr, typing.get_args(_type_at(loc))))
            problems.append(f"{where}: must be one of {allowed}, got {error['input']!r}")
        elif kind in _EXPECTED or kind == "source":
            problems.append(f"{where}: {_EXPECTED.get(kind, error['msg'])}, got {error['input']!r}")
        else:
            problems.append(f"{where}: {error['msg']}")
    for parent, keys in unknown.items():
        prefix = f"{_where(parent)}." if parent else ""
        allowed = ", ".join(prefix + f.name for f in dataclasses.fields(_type_at(parent)))
        problems.insert(0, f"unknown key(s) {', '.join(keys)}; allowed: {allowed}")
    return "; ".join(problems)


def parse_config(raw: dict) -> HeadConfig:
    if not isinstance(raw, dict):
        raise ConfigError("a config must be a mapping at the top level")
    try:
        return _HEAD_CONFIG.validate_python(raw)
    except ValidationError as exc:
        raise ConfigError(_explain(exc)) from None


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
    return _HEAD_CONFIG.dump_python(config, mode="json")
