"""The JSON bodies of the router's API, declared once as pydantic models: the request models
validate what clients send (api/web/validation.py turns their errors into ApiErrors), and every
model, request or response, is a schema of the OpenAPI document (api/web/openapi.py).

Optional fields default to MISSING, not None: a client may leave them out but may not send null,
and the JSON Schema says exactly that (no "null" type, no default).
"""

from __future__ import annotations

import functools
import sys
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    MISSING,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    Strict,
    StringConstraints,
    create_model,
    model_validator,
)
from pydantic_core import PydanticCustomError

from api.core.requests import Limits
from embedder.normalize import is_blank
from heads.names import VERSION_NAME
from heads.release_gate import DEFAULT_MARGIN
from heads.rollback_guard import BOUNDS, MAX_WINDOW_S
from heads.serving_state import CANDIDATE_KEYS


def _integral(value: object) -> object:
    return int(value) if isinstance(value, float) and value.is_integer() else value


# An integer as JSON Schema counts them: 2 and 2.0 are integers; 2.5, true and "2" are not.
JsonInteger = Annotated[int, Strict(), BeforeValidator(_integral)]


@functools.cache
def not_blank_pattern() -> str:
    """A regular expression that finds a character `is_blank` does not skip: the pattern of a
    text, derived from the very rule that refuses blank texts, and enforced as it is stated.
    Computed once per process (a scan of every code point, about 0.6 s). BMP characters are
    written as \\uXXXX, which Python, Rust and ECMAScript regexes all read; the few beyond it
    stand as themselves."""
    ranges: list[list[int]] = []
    for code in range(sys.maxunicode + 1):
        if is_blank(chr(code)):
            if ranges and ranges[-1][1] == code - 1:
                ranges[-1][1] = code
            else:
                ranges.append([code, code])
    spans = (_regex_char(a) if a == b else f"{_regex_char(a)}-{_regex_char(b)}" for a, b in ranges)
    return f"[^{''.join(spans)}]"


def _regex_char(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


# Requests: unknown fields refused, and no coercion (strict) beyond the integral floats above.
REQUEST = ConfigDict(extra="forbid", strict=True)


def _exactly_one_text_field(body: BaseModel) -> BaseModel:
    if (body.text is MISSING) == (body.texts is MISSING):
        raise PydanticCustomError("text_or_texts", "give exactly one of the fields text or texts")
    return body


@functools.cache
def predict_request_model(limits: Limits) -> type[BaseModel]:
    """POST /v1/models/{model}/predict: {"text": ...} or {"texts": [...]}, optionally "top_k".

    One model per Limits, built once (create_model rather than a validation context): the
    limits become constraints of the core schema, checked in pydantic-core's Rust with no Python
    per text, and of the JSON Schema, so the contract states them. With a context they would be
    Python validators on the hot path, invisible to the JSON Schema."""
    text = _text(limits.max_text_chars)
    return create_model(
        "PredictRequest",
        __config__=ConfigDict(
            **REQUEST, json_schema_extra={"oneOf": [{"required": ["text"]}, {"required": ["texts"]}]}
        ),
        __module__=__name__,
        __validators__={"exactly_one_text_field": model_validator(mode="after")(_exactly_one_text_field)},
        text=(text | MISSING, MISSING),
        texts=(list[text] | MISSING, Field(MISSING, min_length=1, max_length=limits.max_texts)),
        top_k=(JsonInteger, Field(limits.default_top_k, ge=1, le=limits.max_top_k)),
    )


def _text(max_chars: int) -> Any:
    """A text to classify: at most `max_chars` characters, with something besides blanks."""
    return Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_chars, pattern=not_blank_pattern()),
        Field(description="Not empty, and not only whitespace, control and format characters."),
    ]


@functools.cache
def explain_request_model(max_text_chars: int) -> type[BaseModel]:
    """POST /v1/models/{model}/explain: {"text": ...}, one text as predict accepts it (built once per
    limit, as the predict request is)."""
    return create_model(
        "ExplainRequest",
        __config__=REQUEST,
        __module__=__name__,
        text=(_text(max_text_chars), ...),
    )


class FeedbackRequest(BaseModel):
    """The correct label of one item (item_index) of a prediction."""

    model_config = REQUEST

    label: str = Field(min_length=1)
    item_index: JsonInteger = Field(0, ge=0)


# POST /v1/models/{model}/serving: the fields each action needs (the contract's oneOf is built
# from this table); fraction, percent, key and reason are optional where they apply.
SERVING_REQUIRED = {
    "promote": ("version",),
    "shadow": ("version",),
    "unshadow": ("version",),
    "ab": ("version", "percent"),
    "ab_off": (),
    "fallback": ("version",),
    "fallback_off": (),
    "guard": ("window_s",),  # and at least one of the bounds (GUARD_BOUNDS)
    "guard_off": (),
    "rollback": (),
}
GUARD_BOUNDS = {"guard": BOUNDS}  # an action that needs one or more of these fields
MAX_REASON_CHARS = 500
Action = Literal[tuple(SERVING_REQUIRED)]
CandidateKey = Literal[CANDIDATE_KEYS]


def _gate_schema(action: str) -> dict:
    """The contract of the gate's fields in an action's oneOf branch: if_better and margin belong to
    promote; a promote's margin and min_items need if_better true (the validator below checks the same)."""
    if action != "promote":
        return {"not": {"anyOf": [{"required": ["if_better"]}, {"required": ["margin"]}]}}
    return {
        "if": {"anyOf": [{"required": ["margin"]}, {"required": ["min_items"]}]},
        "then": {"required": ["if_better"], "properties": {"if_better": {"const": True}}},
    }


class ServingChange(BaseModel):
    """Operator only: a change of what serves; each action needs the fields its oneOf branch requires."""

    model_config = ConfigDict(
        **REQUEST,
        json_schema_extra={
            "oneOf": [
                {
                    "properties": {"action": {"const": action}},
                    "required": ["action", *needs],
                    **({"anyOf": [{"required": [n]} for n in GUARD_BOUNDS[action]]} if action in GUARD_BOUNDS else {}),
                    **_gate_schema(action),
                }
                for action, needs in SERVING_REQUIRED.items()
            ]
        },
    )

    action: Action
    version: str | MISSING = Field(MISSING, pattern=VERSION_NAME.pattern)
    fraction: float | MISSING = Field(MISSING, gt=0, le=1)
    percent: float | MISSING = Field(MISSING, ge=0, le=100)
    key: CandidateKey | MISSING = MISSING
    reason: str | MISSING = Field(MISSING, max_length=MAX_REASON_CHARS)
    # A gated promote (heads/gated_promotion.py): promoted only when the evidence says the version
    # is not worse than the primary; 409 with the decision's numbers when refused.
    if_better: bool | MISSING = Field(
        MISSING, description="promote only: promote only if the evidence says the version is not worse (a gate)."
    )
    margin: float | MISSING = Field(
        MISSING,
        ge=0,
        lt=1,
        description=f"promote with if_better: accuracy the candidate may lose, a fraction ({DEFAULT_MARGIN}).",
    )
    # The guard action (automatic rollback of the next promotions, heads/rollback_guard.py): a
    # bound left out is not checked.
    window_s: float | MISSING = Field(MISSING, gt=0, le=MAX_WINDOW_S, description="How long a new primary is watched.")
    max_error_rate: float | MISSING = Field(MISSING, ge=0, le=1, description="Roll back above this error rate.")
    max_reject_rate: float | MISSING = Field(MISSING, ge=0, le=1, description="Roll back above this reject rate.")
    min_agreement: float | MISSING = Field(
        MISSING, ge=0, le=1, description="Roll back below this agreement with the previous primary on shadow traffic."
    )
    # The bound sits inside the integer type: on the union with MISSING it would reach the JSON
    # Schema as "ge", not as "minimum".
    min_items: Annotated[int, Strict(), Field(ge=1), BeforeValidator(_integral)] | MISSING = Field(
        MISSING,
        description="guard: items a figure needs to count (50). promote with if_better: paired items a source of "
        "evidence needs before it can promote (200).",
    )
    shadow_fraction: float | MISSING = Field(
        MISSING, gt=0, le=1, description="Share of requests the previous primary scores while watched (1)."
    )

    @model_validator(mode="after")
    def _has_what_the_action_needs(self) -> ServingChange:
        missing = [name for name in SERVING_REQUIRED[self.action] if name not in self.model_fields_set]
        if missing:
            raise PydanticCustomError(
                "action_needs",
                "{action} needs the field(s) {fields}",
                {"action": self.action, "fields": ", ".join(missing)},
            )
        gate_only = {"if_better", "margin"} & self.model_fields_set
        if self.action != "promote" and gate_only:
            raise PydanticCustomError(
                "gate_fields", "{fields} apply to the action promote only", {"fields": ", ".join(sorted(gate_only))}
            )
        if self.action == "promote" and self.if_better is not True and {"margin", "min_items"} & self.model_fields_set:
            raise PydanticCustomError("gate_fields", "margin and min_items of a promote need if_better: true", {})
        if self.action in GUARD_BOUNDS and not set(GUARD_BOUNDS[self.action]) & self.model_fields_set:
            raise PydanticCustomError(
                "action_needs",
                "{action} needs at least one of the fields {fields}",
                {"action": self.action, "fields": ", ".join(GUARD_BOUNDS[self.action])},
            )
        return self


# Responses: documentation of what the routes render (nothing validates them at run time).
# Closed where the router answers exactly these fields; open where more may come.
class _Closed(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


Probability = Annotated[float, Field(ge=0, le=1)]
Untyped = dict[str, Any]


class ErrorDetail(_Closed):
    code: str
    message: str
    request_id: str | None
    decision: Untyped | MISSING = Field(
        MISSING, description="gate_refused only: the release gate's decision, with its evidence and numbers."
    )


class Error(_Closed):
    """The body of every 4xx and 5xx answer."""

    error: ErrorDetail


class LabelProbability(_Closed):
    label: str
    probability: Probability


class Prediction(_Closed):
    label: str = Field(description="The answer: the top label, or the reject label when rejected.")
    probability: Probability = Field(description="Probability of the top label.")
    rejected: bool = Field(description="True when the top probability is under the head's threshold.")
    top_k: list[LabelProbability]
    cache_hit: bool = Field(
        description="The embedding came from a cache (the router worker's or the embedder's) filled by this "
        "tenant's own requests, unless the operator shares caches between tenants (API_SHARE_EMBEDDING_CACHE)."
    )


class Timings(_Open):
    embedding: float
    head: float
    total: float


class PredictResponse(_Closed):
    model: str
    version: str = Field(description="The version that answered.")
    request_id: str
    variant: Literal["primary", "candidate", "fallback"] = Field(
        description="Which serving role answered: the primary, the A/B candidate, or the fallback."
    )
    fallback: bool = Field(description="True when the fallback answered because the primary could not.")
    predictions: list[Prediction]
    timings_ms: Timings


class WordContribution(_Closed):
    word: str
    contribution: float = Field(
        description="p(label | text) - p(label | text without this word): positive when the word supports the label."
    )


class ExplainResponse(_Closed):
    model: str
    version: str = Field(description="The primary version that was explained.")
    request_id: str
    label: str = Field(description="The primary's most probable class for the text.")
    probability: Probability = Field(description="Its probability for the whole text.")
    rejected: bool = Field(description="True when predict would answer the reject label instead (under the threshold).")
    words: list[WordContribution] = Field(
        description="Every whitespace-separated word of the normalised text, in order, with its contribution."
    )
    variants: int = Field(description="Texts scored besides the text itself (the text without each distinct word).")
    timings_ms: Timings


class FeedbackResponse(_Closed):
    request_id: str
    item_index: int
    model: str
    version: str
    label: str


class DecisionRule(_Open):
    threshold: float | MISSING = MISSING
    reject_label: str | None | MISSING = MISSING


class EmbedderInfo(_Open):
    model_id: str | MISSING = Field(
        MISSING,
        description="The vectors the version scores: the embedding model (name@version), then '#' and the "
        "feature set unless it is the sentence embedding (e.g. '...#layers-4-6').",
    )
    dim: int | MISSING = Field(MISSING, description="Floats per vector of that feature set.")


class ModelSummary(_Open):
    name: str
    version: str
    labels: list[str]
    decision: DecisionRule
    embedder: EmbedderInfo | None = Field(
        description="The embedder the serving version was trained with; null for a head that needs none (ngram)."
    )
    metrics: Untyped = Field(description="Evaluation of this version at training time.")
    serving: Untyped | MISSING = Field(MISSING, description="The serving state: primary, shadows, candidate, fallback.")
    created_at: str | None | MISSING = MISSING
    versions: list[str] | MISSING = Field(MISSING, description="All versions (GET /v1/models/{model} only).")


class ModelList(_Open):
    models: list[ModelSummary]
    errors: dict[str, str]


class Drift(_Open):
    label_psi: float | None | MISSING = MISSING
    confidence_psi: float | None | MISSING = MISSING
    centroid_cosine_distance: float | None | MISSING = MISSING


class VersionReport(_Open):
    version: str
    role: Literal["primary", "candidate", "fallback", "shadow"]
    volume: int
    errors: int
    label_distribution: dict[str, int]
    confidence_histogram: list[int] = Field(min_length=10, max_length=10)
    low_confidence_rate: float | None | MISSING = MISSING
    rejected_rate: float | None | MISSING = MISSING
    feedback: Untyped | MISSING = MISSING
    drift: Drift


class Report(_Open):
    model: str
    tenant: str | MISSING = MISSING
    since: datetime
    until: datetime
    versions: list[VersionReport]
    shadow_agreement: list[Untyped]
    decisions: list[Untyped] | MISSING = Field(
        MISSING,
        description="The model's release decisions, oldest first (the newest 200): kind (gate, auto_rollback), "
        "version, outcome, reason, and the evidence with its numbers. Not limited to the window.",
    )
    serving_history: list[Untyped] | MISSING = Field(
        MISSING,
        description="The serving states, oldest first, the current one last, each with updated_at and reason. "
        "Not limited to the window.",
    )


class ServingState(_Open):
    model: str
    primary: str
    shadows: list[Untyped]
    candidate: Untyped | None
    fallback: str | None
    guard: Untyped | MISSING = Field(MISSING, description="The automatic-rollback policy, when one is set.")
    watch: Untyped | MISSING = Field(
        MISSING, description="The guarded promotion being watched: version, previous (primary), since."
    )
    decision: Untyped | MISSING = Field(
        MISSING, description="Only the answer to a promote with if_better: the release gate's decision and evidence."
    )
    updated_at: str | MISSING = MISSING
    reason: str | MISSING = MISSING
    history: list[Untyped] | MISSING = MISSING


class Health(_Open):
    status: Literal["ok"]


class FailedModel(_Open):
    tenant: str
    model: str
    reason: str
    serving: str | None = Field(description="The version still answering from before the failure, or null.")


class Readiness(_Open):
    status: Literal["ready", "degraded", "not ready"] = Field(
        description="ready: the embedder answers and a model can serve. degraded (200): the embedder is "
        "unreachable but some models answer without it (an n-gram fallback, or n-gram heads only). "
        "not ready (503): nothing can be answered."
    )
    reason: str | MISSING = Field(MISSING, description="Why the router is degraded or not ready.")
    embedder: Untyped
    models: int
    servable_models: int | MISSING = Field(
        MISSING, description="Models that can answer now (while the embedder is unreachable: without it)."
    )
    fallback_models: int | MISSING = Field(
        MISSING, description="Only while the embedder is unreachable: models that answer from their fallback."
    )
    unanswerable_models: int | MISSING = Field(
        MISSING, description="Only while the embedder is unreachable: models that cannot answer."
    )
    embedder_mismatch: int | MISSING = MISSING
    load_errors: int | MISSING = MISSING
    unchecked_weights: int | MISSING = Field(
        MISSING,
        description="Serving heads of the worker that answered whose weights' checksum is still to be computed "
        "(a first start of a large store checks them in the background; each head before its first answer).",
    )
    failed_models: list[FailedModel] | MISSING = Field(
        MISSING,
        description="Only when the request carries an operator key (optional on this endpoint): the models that "
        "do not load, and why. A bad model never makes the router unready.",
    )


class ReloadResponse(_Open):
    tenants: int
    loaded: list[str] = Field(description="What this worker now serves that it did not, as `tenant/model: ...`.")
    failed: dict[str, str] = Field(description="`tenant/model`: why its serving state does not load.")
    generation: int | None = Field(
        description="The router's reload generation this reload set; every worker reports the one it applied "
        "in the metric router_reload_generation{pid}. Null for a router of one process."
    )
    others_within_s: float = Field(
        description="The router's other workers reload within this many seconds (API_RELOAD_INTERVAL_S)."
    )
