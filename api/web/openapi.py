"""The OpenAPI 3 description of the router, built from the running settings and from the rules the
code enforces (validation patterns, rate-limit costs), so what it states is what is enforced.
tests/api/test_app.py checks real responses against it; tests/api/test_fuzz_contract.py fuzzes a
real router with it."""

from __future__ import annotations

from api.core.rate_limit import FEEDBACK_COST, PREDICT_COST, REPORT_COST_PER_DAY
from api.core.settings import RouterSettings
from api.web.validation import MAX_REASON_CHARS, REQUEST_ID, SERVING_REQUIRED, not_blank_pattern
from heads.names import TENANT_NAME, VERSION_NAME
from heads.serving_state import CANDIDATE_KEYS
from inferencedb.monitoring_report import MAX_WINDOW


def _error(description: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }


def _ok(description: str, schema: str) -> dict:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


def openapi_document(settings: RouterSettings) -> dict:
    text = {
        "type": "string",
        "minLength": 1,
        "maxLength": settings.max_text_chars,
        "pattern": not_blank_pattern(),
        "description": "Not empty, and not only whitespace, control and format characters.",
    }
    instant = {
        "anyOf": [{"type": "string", "format": "date"}, {"type": "string", "format": "date-time"}],
        "examples": ["2026-11-01", "2026-11-01T12:00:00Z"],
    }
    labelled = {
        "type": "object",
        "required": ["label", "probability"],
        "additionalProperties": False,
        "properties": {"label": {"type": "string"}, "probability": {"type": "number", "minimum": 0, "maximum": 1}},
    }
    model_summary = {
        "type": "object",
        "required": ["name", "version", "labels", "decision", "embedder", "metrics"],
        "properties": {
            "name": {"type": "string"},
            "version": {"type": "string"},
            "labels": {"type": "array", "items": {"type": "string"}},
            "decision": {
                "type": "object",
                "properties": {"threshold": {"type": "number"}, "reject_label": {"type": ["string", "null"]}},
            },
            "embedder": {
                "type": ["object", "null"],
                "description": "The embedder the serving version was trained with; null for a head that needs none (ngram).",
                "properties": {"model_id": {"type": "string"}, "dim": {"type": "integer"}},
            },
            "metrics": {"type": "object", "description": "Evaluation of this version at training time."},
            "serving": {"type": "object", "description": "The serving state: primary, shadows, candidate, fallback."},
            "created_at": {"type": ["string", "null"]},
            "versions": {
                "type": "array",
                "items": {"type": "string"},
                "description": "All versions (GET /v1/models/{model} only).",
            },
        },
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
                            "description": "Deadline for the embedding; past it the fallback answers, if the model has one, else 503.",
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/PredictRequest"}}},
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
            "/v1/predictions/{request_id}/feedback": {
                "post": {
                    "summary": "Report the correct label of a prediction (upsert: the last correction wins)",
                    "parameters": [
                        {
                            "name": "request_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                        },
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/FeedbackRequest"}}},
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
                    "summary": "Operator only: change what serves (promote, shadow, unshadow, ab, ab_off, fallback, fallback_off, rollback)",
                    "parameters": [{"name": "model", "in": "path", "required": True, "schema": {"type": "string"}}],
                    "requestBody": {
                        "required": True,
                        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ServingChange"}}},
                    },
                    "responses": {
                        "200": _ok("The new serving state.", "ServingState"),
                        "404": _error("Unknown model."),
                        "409": _error(
                            "A change the model's versions or serving state do not allow: an unknown version or one "
                            "that does not load, another embedder, not a shadow, nothing to roll back to."
                        ),
                        "422": _error(
                            "Unknown action or field, a field the action needs missing, a value out of range."
                        ),
                    },
                },
            },
            "/v1/admin/reload": {
                "post": {
                    "summary": "Operator only: load every changed serving state now (routers also poll)",
                    "responses": {
                        "200": {
                            "description": "What was loaded or failed",
                            "content": {"application/json": {"schema": {"type": "object"}}},
                        }
                    },
                }
            },
            "/healthz": {"get": {"summary": "Liveness", "responses": {"200": _ok("The process is up.", "Health")}}},
            "/readyz": {
                "get": {
                    "summary": "Readiness: the embedder answers and at least one head can serve",
                    "responses": {
                        "200": _ok("Ready.", "Readiness"),
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
            "schemas": {
                "PredictRequest": {
                    "type": "object",
                    "additionalProperties": False,
                    "properties": {
                        "text": text,
                        "texts": {"type": "array", "items": text, "minItems": 1, "maxItems": settings.max_texts},
                        "top_k": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": settings.max_top_k,
                            "default": settings.default_top_k,
                        },
                    },
                    "oneOf": [{"required": ["text"]}, {"required": ["texts"]}],
                },
                "Prediction": {
                    "type": "object",
                    "required": ["label", "probability", "rejected", "top_k", "cache_hit"],
                    "additionalProperties": False,
                    "properties": {
                        "label": {
                            "type": "string",
                            "description": "The answer: the top label, or the reject label when rejected.",
                        },
                        "probability": {
                            "type": "number",
                            "minimum": 0,
                            "maximum": 1,
                            "description": "Probability of the top label.",
                        },
                        "rejected": {
                            "type": "boolean",
                            "description": "True when the top probability is under the head's threshold.",
                        },
                        "top_k": {"type": "array", "items": labelled},
                        "cache_hit": {
                            "type": "boolean",
                            "description": "The embedding came from a cache (the router worker's or the embedder's) "
                            "filled by this tenant's own requests, unless the operator shares caches between tenants "
                            "(API_SHARE_EMBEDDING_CACHE).",
                        },
                    },
                },
                "PredictResponse": {
                    "type": "object",
                    "required": ["model", "version", "request_id", "variant", "fallback", "predictions", "timings_ms"],
                    "additionalProperties": False,
                    "properties": {
                        "model": {"type": "string"},
                        "version": {"type": "string", "description": "The version that answered."},
                        "request_id": {"type": "string"},
                        "variant": {
                            "enum": ["primary", "candidate", "fallback"],
                            "description": "Which serving role answered: the primary, the A/B candidate, or the fallback.",
                        },
                        "fallback": {
                            "type": "boolean",
                            "description": "True when the fallback answered because the primary could not.",
                        },
                        "predictions": {"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}},
                        "timings_ms": {
                            "type": "object",
                            "required": ["embedding", "head", "total"],
                            "properties": {
                                "embedding": {"type": "number"},
                                "head": {"type": "number"},
                                "total": {"type": "number"},
                            },
                        },
                    },
                },
                "ModelSummary": model_summary,
                "Report": {
                    "type": "object",
                    "required": ["model", "since", "until", "versions", "shadow_agreement"],
                    "properties": {
                        "model": {"type": "string"},
                        "tenant": {"type": "string"},
                        "since": {"type": "string", "format": "date-time"},
                        "until": {"type": "string", "format": "date-time"},
                        "versions": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": [
                                    "version",
                                    "role",
                                    "volume",
                                    "errors",
                                    "label_distribution",
                                    "confidence_histogram",
                                    "drift",
                                ],
                                "properties": {
                                    "version": {"type": "string"},
                                    "role": {"enum": ["primary", "candidate", "fallback", "shadow"]},
                                    "volume": {"type": "integer"},
                                    "errors": {"type": "integer"},
                                    "label_distribution": {
                                        "type": "object",
                                        "additionalProperties": {"type": "integer"},
                                    },
                                    "confidence_histogram": {
                                        "type": "array",
                                        "items": {"type": "integer"},
                                        "minItems": 10,
                                        "maxItems": 10,
                                    },
                                    "low_confidence_rate": {"type": ["number", "null"]},
                                    "rejected_rate": {"type": ["number", "null"]},
                                    "feedback": {"type": "object"},
                                    "drift": {
                                        "type": "object",
                                        "properties": {
                                            "label_psi": {"type": ["number", "null"]},
                                            "confidence_psi": {"type": ["number", "null"]},
                                            "centroid_cosine_distance": {"type": ["number", "null"]},
                                        },
                                    },
                                },
                            },
                        },
                        "shadow_agreement": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "ServingChange": {
                    "type": "object",
                    "required": ["action"],
                    "additionalProperties": False,
                    "properties": {
                        "action": {"enum": list(SERVING_REQUIRED)},
                        "version": {"type": "string", "pattern": VERSION_NAME.pattern},
                        "fraction": {"type": "number", "exclusiveMinimum": 0, "maximum": 1},
                        "percent": {"type": "number", "minimum": 0, "maximum": 100},
                        "key": {"enum": list(CANDIDATE_KEYS)},
                        "reason": {"type": "string", "maxLength": MAX_REASON_CHARS},
                    },
                    "oneOf": [
                        {"properties": {"action": {"const": action}}, "required": ["action", *needs]}
                        for action, needs in SERVING_REQUIRED.items()
                    ],
                },
                "ServingState": {
                    "type": "object",
                    "required": ["model", "primary", "shadows", "candidate", "fallback"],
                    "properties": {
                        "model": {"type": "string"},
                        "primary": {"type": "string"},
                        "shadows": {"type": "array", "items": {"type": "object"}},
                        "candidate": {"type": ["object", "null"]},
                        "fallback": {"type": ["string", "null"]},
                        "updated_at": {"type": "string"},
                        "reason": {"type": "string"},
                        "history": {"type": "array", "items": {"type": "object"}},
                    },
                },
                "FeedbackRequest": {
                    "type": "object",
                    "required": ["label"],
                    "additionalProperties": False,
                    "properties": {
                        "label": {"type": "string", "minLength": 1},
                        "item_index": {"type": "integer", "minimum": 0, "default": 0},
                    },
                },
                "FeedbackResponse": {
                    "type": "object",
                    "required": ["request_id", "item_index", "model", "version", "label"],
                    "additionalProperties": False,
                    "properties": {
                        "request_id": {"type": "string"},
                        "item_index": {"type": "integer"},
                        "model": {"type": "string"},
                        "version": {"type": "string"},
                        "label": {"type": "string"},
                    },
                },
                "ModelList": {
                    "type": "object",
                    "required": ["models", "errors"],
                    "properties": {
                        "models": {"type": "array", "items": {"$ref": "#/components/schemas/ModelSummary"}},
                        "errors": {"type": "object", "additionalProperties": {"type": "string"}},
                    },
                },
                "Health": {"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}},
                "Readiness": {
                    "type": "object",
                    "required": ["status", "embedder", "models"],
                    "properties": {
                        "status": {"enum": ["ready", "not ready"]},
                        "reason": {"type": "string"},
                        "embedder": {"type": "object"},
                        "models": {"type": "integer"},
                        "servable_models": {"type": "integer"},
                        "embedder_mismatch": {"type": "integer"},
                        "load_errors": {"type": "integer"},
                        "failed_models": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "required": ["tenant", "model", "reason", "serving"],
                                "properties": {
                                    "tenant": {"type": "string"},
                                    "model": {"type": "string"},
                                    "reason": {"type": "string"},
                                    "serving": {
                                        "type": ["string", "null"],
                                        "description": "The version still answering from before the failure, or null.",
                                    },
                                },
                            },
                            "description": "Only when the request carries an operator key (optional on this "
                            "endpoint): the models that do not load, and why. A bad model never makes the router unready.",
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "additionalProperties": False,
                    "properties": {
                        "error": {
                            "type": "object",
                            "required": ["code", "message", "request_id"],
                            "additionalProperties": False,
                            "properties": {
                                "code": {"type": "string"},
                                "message": {"type": "string"},
                                "request_id": {"type": ["string", "null"]},
                            },
                        }
                    },
                },
            },
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
