"""The OpenAPI 3.1 description of the router, built from the running settings and from the rules the
code enforces, so what it states is what is enforced: the bodies' schemas are generated from the
models that validate them (api/web/schemas.py), the rate-limit costs come from api/core/rate_limit.py.
Paths, parameters and response descriptions are data here. tests/api/test_app.py checks real
responses against it; tests/api/test_fuzz_contract.py fuzzes a real router with it."""

from __future__ import annotations

import copy
import functools

from pydantic.json_schema import GenerateJsonSchema, models_json_schema

from api.core.rate_limit import FEEDBACK_COST, PREDICT_COST, REPORT_COST_PER_DAY, explain_cost
from api.core.settings import RouterSettings
from api.web import schemas
from api.web.validation import REQUEST_ID
from heads.names import TENANT_NAME
from inferencedb.monitoring_report import MAX_WINDOW

REF = "#/components/schemas/{model}"
# The bodies the paths name; the models they nest (Prediction, ErrorDetail, ...) come along.
REQUESTS = (schemas.FeedbackRequest, schemas.ServingChange)  # and the predict request, built per Limits
RESPONSES = (
    schemas.PredictResponse,
    schemas.ExplainResponse,
    schemas.FeedbackResponse,
    schemas.ModelList,
    schemas.ModelSummary,
    schemas.Report,
    schemas.ServingState,
    schemas.Health,
    schemas.Readiness,
    schemas.ReloadResponse,
    schemas.Error,
)


def _error(description: str) -> dict:
    return _ok(description, "Error")


def _ok(description: str, schema: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=schema)}}},
    }


class _ContractSchema(GenerateJsonSchema):
    """pydantic's JSON Schema without the titles it makes of field names ("Top K"): the names say it."""

    def field_title_should_be_set(self, schema) -> bool:
        return False


def _schemas(settings: RouterSettings) -> dict:
    limits = schemas.Limits(settings.max_texts, settings.max_text_chars, settings.max_top_k, settings.default_top_k)
    return copy.deepcopy(_generated_schemas(limits))  # the cached one stays as generated


@functools.cache
def _generated_schemas(limits: schemas.Limits) -> dict:
    models = (
        schemas.predict_request_model(limits),
        schemas.explain_request_model(limits.max_text_chars),
        *REQUESTS,
        *RESPONSES,
    )
    _, generated = models_json_schema(
        [(model, "validation") for model in models], ref_template=REF, schema_generator=_ContractSchema
    )
    return generated["$defs"]


def openapi_document(settings: RouterSettings) -> dict:
    instant = {
        "anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}],
        "examples": ["2026-11-01", "2026-11-01T12:00:00Z"],
    }
    document = {
        "openapi": "3.1.0",
        "info": {
            "title": "manyheads router",
            "version": "1.0.0",
            "description": "Text classification endpoints, one per model, on a shared embedding service. "
            "Every prediction is written to the inference database. A tenant's rate limit counts requests; "
            "feedback and reports count as more than one, as their descriptions say (429 with Retry-After "
            "beyond the limit).",
        },
        "paths": {
            "/v1/models/{model}/predict": {
                "post": {
                    "summary": "Classify one text or a batch of texts with a model's serving version",
                    "description": f"Counts as {PREDICT_COST:g} request of the tenant's rate limit, whatever the "
                    "number of texts.",
                    "parameters": [
                        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},
                        {
                            "name": "X-Client-ID",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "string"},
                            "description": "Your caller's id: stored with every row, and keeps the caller on one A/B variant.",
                        },
                        {
                            "name": "X-Request-Timeout-Ms",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 60000},
                            "description": "Deadline of the whole answer, from the request's arrival (default: the "
                            "model's, API_MODEL_DEADLINES_MS, else the router's, API_EMBED_TIMEOUT_S; capped by "
                            "API_MAX_DEADLINE_MS). When the model has a fallback, the primary gets the deadline "
                            "minus the time kept for the fallback, which then answers within it (variant "
                            "`fallback`); without one, past it: 503.",
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="PredictRequest")}}},
                    },
                    "responses": {
                        "200": {
                            **_ok("One prediction per text, in order.", "PredictResponse"),
                            "headers": {
                                name: {"schema": {"type": "string"}}
                                for name in (
                                    "X-Request-ID",
                                    "X-Model-Version",
                                    "X-Embedding-Time-Ms",
                                    "X-Head-Time-Ms",
                                    "X-Total-Time-Ms",
                                    "X-Deadline-Ms",
                                    "Server-Timing",
                                )
                            },
                        },
                        "404": _error("Unknown model."),
                        "413": _error(
                            f"Body over {settings.max_body_bytes} bytes, a text over {settings.max_text_chars} characters, "
                            f"or more than {settings.max_texts} texts."
                        ),
                        "422": _error(
                            "Missing or unknown fields, wrong types, empty text, top_k out of range, "
                            "an invalid X-Request-Timeout-Ms."
                        ),
                        "429": _error(
                            "The tenant is over its rate limit, or the embedding service is overloaded; retry after Retry-After seconds."
                        ),
                        "502": _error("The embedding service failed on this batch."),
                        "503": _error(
                            "The embedding service is unreachable, timed out, or runs another model than the head's."
                        ),
                    },
                }
            },
            "/v1/models/{model}/explain": {
                "post": {
                    "summary": "Explain the label a model's primary gives one text: each word's contribution",
                    "description": "Occlusion: a word's contribution is p(label | text) - p(label | text without "
                    "the word), for the primary's most probable label; words are the whitespace-separated tokens "
                    "of the normalised text (punctuation stays with its word), at most "
                    f"{settings.explain_max_words}. The text and its variants are scored in one embedding call. "
                    f"Counts as 1 + ceil(words / {settings.max_texts}) requests of the tenant's rate limit "
                    f"({explain_cost(settings.max_texts, settings.max_texts):g} up to {settings.max_texts} words). "
                    "Not written to the inference log: an explanation is not a prediction. X-Request-Timeout-Ms "
                    "bounds it as it bounds predict, with no fallback.",
                    "parameters": [
                        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},
                        {
                            "name": "X-Request-Timeout-Ms",
                            "in": "header",
                            "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": 60000},
                            "description": "Deadline of the explanation (default as for predict); past it: 503.",
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="ExplainRequest")}}},
                    },
                    "responses": {
                        "200": {
                            **_ok("The label and every word's contribution, in order.", "ExplainResponse"),
                            "headers": {
                                name: {"schema": {"type": "string"}} for name in ("X-Request-ID", "X-Model-Version")
                            },
                        },
                        "404": _error("Unknown model."),
                        "413": _error(
                            f"Body over {settings.max_body_bytes} bytes, a text over {settings.max_text_chars} "
                            f"characters or over {settings.explain_max_words} words."
                        ),
                        "422": _error(
                            "Missing or unknown fields, wrong types, empty text, an invalid X-Request-Timeout-Ms."
                        ),
                        "429": _error(
                            "The tenant is over its rate limit, or the embedding service is overloaded; retry after Retry-After seconds."
                        ),
                        "500": _error("The primary head failed."),
                        "502": _error("The embedding service failed on this batch."),
                        "503": _error(
                            "The embedding service is unreachable, timed out, or runs another model than the head's."
                        ),
                    },
                }
            },
            "/v1/predictions/{request_id}/feedback": {
                "post": {
                    "summary": "Report the correct label of a prediction (upsert: the last correction wins)",
                    "parameters": [
                        {
                            "name": "request_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": REQUEST_ID.pattern},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="FeedbackRequest")}}},
                    },
                    "description": f"Counts as {FEEDBACK_COST:g} requests of the tenant's rate limit "
                    "(a lookup of the prediction and an upsert).",
                    "responses": {
                        "201": _ok("Stored.", "FeedbackResponse"),
                        "404": _error("No answered prediction with that request id and item_index."),
                        "409": _error(
                            "The version that answered no longer loads from the model store, so the label cannot be checked."
                        ),
                        "422": _error(
                            "Missing or unknown fields, wrong types (invalid_request); a label the answering version "
                            "does not have (unknown_label)."
                        ),
                        "429": _error("The tenant is over its rate limit; retry after Retry-After seconds."),
                        "503": _error("The inference database is unavailable; retry."),
                    },
                }
            },
            "/v1/models": {
                "get": {"summary": "Serving models", "responses": {"200": _ok("Serving models.", "ModelList")}}
            },
            "/v1/models/{model}": {
                "get": {
                    "summary": "A model's serving version, labels, decision rule, metrics and versions",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _ok("The model.", "ModelSummary"), "404": _error("Unknown model.")},
                }
            },
            "/v1/models/{model}/report": {
                "get": {
                    "summary": "Monitoring report over a window: volume, labels, confidence, feedback accuracy, shadow agreement, drift",
                    "parameters": [
                        {"name": "model", "in": "path", "required": True, "schema": {"type": "string"}},
                        {
                            "name": "since",
                            "in": "query",
                            "required": False,
                            "schema": instant,
                            "description": "RFC 3339 date (midnight UTC) or date-time with an offset; default: 24 hours before until.",
                        },
                        {
                            "name": "until",
                            "in": "query",
                            "required": False,
                            "schema": instant,
                            "description": f"RFC 3339 date or date-time, exclusive; default: now. At most {MAX_WINDOW.days} days after since.",
                        },
                    ],
                    "description": f"Counts as {REPORT_COST_PER_DAY:g} requests of the tenant's rate limit per day "
                    "of the window (a started day counts whole): it scans every prediction of the model in it.",
                    "responses": {
                        "200": _ok("The report.", "Report"),
                        "404": _error("Unknown model."),
                        "422": _error(
                            "A date that is not RFC 3339 or an unknown query parameter (invalid_request); a window "
                            f"whose since is not before its until, longer than {MAX_WINDOW.days} days, or outside "
                            "the years 1-9999 (invalid_window)."
                        ),
                        "429": _error("The tenant is over its rate limit; retry after Retry-After seconds."),
                        "503": _error("The inference database is unavailable; retry."),
                    },
                }
            },
            "/v1/models/{model}/serving": {
                "get": {
                    "summary": "The serving state of a model, with its history",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "responses": {"200": _ok("The serving state.", "ServingState"), "404": _error("Unknown model.")},
                },
                "post": {
                    "summary": "Operator only: change what serves (promote, shadow, unshadow, ab, ab_off, fallback, fallback_off, guard, guard_off, rollback)",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": REF.format(model="ServingChange")}}},
                    },
                    "responses": {
                        "200": _ok("The new serving state.", "ServingState"),
                        "404": _error("Unknown model."),
                        "409": _error(
                            "A change the model's versions or serving state do not allow: an unknown version or one "
                            "that does not load, another embedder, not a shadow, nothing to roll back to (conflict). "
                            "A promote with if_better that the evidence does not support (gate_refused): the error "
                            "carries the gate's `decision`, with the numbers of every source of evidence."
                        ),
                        "503": _error(
                            "A promote with if_better could not read shadow and feedback evidence: the inference "
                            "database is unavailable; retry."
                        ),
                        "422": _error(
                            "Unknown action or field, a field the action needs missing, a value out of range."
                        ),
                    },
                },
            },
            "/v1/admin/reload": {
                "post": {
                    "summary": "Operator only: read every serving state again, in every worker of the router "
                    "(routers also poll for changes)",
                    "description": "The worker that takes the request reloads before answering; its results are "
                    "the body. It bumps the router's reload generation (a file in API_SPOOL_DIR, shared by the "
                    "workers), and every other worker reloads at its next poll, within `others_within_s`.",
                    "responses": {"200": _ok("What this worker loaded or failed to load.", "ReloadResponse")},
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _ok("The process is up.", "Health")}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: 200 while the router can answer, 503 when it cannot",
                    "description": "ready: the embedder answers and at least one head can serve. degraded: the "
                    "embedder is unreachable, but some models still answer without it (from an n-gram fallback, "
                    "or with n-gram heads only); the router stays in service and `reason` says how many models "
                    "answer from their fallback and how many cannot answer. not ready (503): no model is loaded, "
                    "none can be served, or the embedder is unreachable and no model answers without it. Models "
                    "that do not load are counted but never make the router unready.",
                    "responses": {
                        "200": _ok("Ready, or degraded but answering.", "Readiness"),
                        "503": _ok("Not ready, with the reason.", "Readiness"),
                    },
                }
            },
            "/metrics": {
                "get": {
                    "summary": "Operator only: Prometheus metrics of all workers",
                    "responses": {
                        "200": {
                            "description": "Prometheus text format",
                            "content": {"text/plain": {"schema": {"type": "string"}}},
                        }
                    },
                }
            },
            "/openapi.json": {
                "get": {"summary": "This document", "responses": {"200": {"description": "OpenAPI 3.1"}}}
            },
        },
        "security": [{"bearer": []}],
        "components": {
            "securitySchemes": {
                "bearer": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "An API key, `mh_<key_id>_<secret>`, from `python -m api keys create`.",
                }
            },
            "schemas": _schemas(settings),
        },
    }
    for path, operations in document["paths"].items():
        for operation in operations.values():
            _add_common(path, operation, settings)
    return document


PUBLIC = ("/healthz", "/readyz", "/openapi.json")
REQUEST_ID_HEADER = {
    "name": "X-Request-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": REQUEST_ID.pattern},
    "description": "Your id for this request; echoed back in every response (and stored with every row of a "
    "prediction). Generated if absent.",
}
TENANT_HEADER = {
    "name": "X-Tenant",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "pattern": TENANT_NAME.pattern},
    "description": "Operator keys only, and required with them: the tenant the call acts for. A tenant key "
    "always acts for its own tenant (another tenant here: 403).",
}


def _add_common(path: str, operation: dict, settings: RouterSettings) -> None:
    """What every operation shares: the request id, the body errors, authentication and, on
    tenant-scoped routes, the X-Tenant header."""
    parameters, responses = operation.setdefault("parameters", []), operation["responses"]
    parameters.insert(0, REQUEST_ID_HEADER)
    _add_422(responses, "an X-Request-ID that is not 1-128 letters, digits, '.', '_', ':' or '-'")
    if "requestBody" in operation:
        responses["400"] = _error("Malformed JSON or a Content-Type other than application/json.")
        responses.setdefault("413", _error(f"Body over {settings.max_body_bytes} bytes."))
    if path in PUBLIC:
        operation["security"] = []  # public: load balancers and clients without a key
        return
    responses["401"] = _error("Missing, malformed, invalid or revoked API key.")
    responses["403"] = _error(
        "The key may not do this (an operator action with a tenant key, or X-Tenant naming another tenant)."
    )
    if path.startswith(("/v1/models", "/v1/predictions")):
        parameters.append(TENANT_HEADER)
        _add_422(responses, "an operator key without a valid X-Tenant")


def _add_422(responses: dict, why: str) -> None:
    if "422" in responses:
        responses["422"]["description"] = f"{responses['422']['description'].rstrip('.')}; or {why}."
    else:
        responses["422"] = _error(f"Invalid request: {why}.")
