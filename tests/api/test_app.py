"""The Flask adapter and the predictor through app.test_client(): every endpoint, every error."""

import json
import re

import jsonschema
import numpy as np
import pytest

from api.errors import BadRequest
from api.web.responses import encode_json, parse_json
from embedder.errors import DeadlineExceeded, FeaturesUnsupported, ModelFailure, Overloaded, Unavailable
from heads import serving_state
from heads.config import parse_config
from heads.pipeline import train_head

PREDICT = "/v1/models/intents/predict"


def post(router, body, path=PREDICT, **kwargs):
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    kwargs.setdefault("content_type", "application/json")
    return router.client.post(path, data=data, **kwargs)


def schema_for(router, name):
    document = router.client.get("/openapi.json").get_json()
    return {"$ref": f"#/components/schemas/{name}", "components": document["components"]}


def test_single_prediction_with_provenance_timings_and_one_log_row(router):
    response = post(router, {"text": "what is my balance", "top_k": 3})
    assert response.status_code == 200
    body = response.get_json()
    jsonschema.validate(body, schema_for(router, "PredictResponse"))
    assert body["model"] == "intents" and body["version"] == response.headers["X-Model-Version"]
    assert body["request_id"] == response.headers["X-Request-ID"] and len(body["request_id"]) == 32
    (prediction,) = body["predictions"]
    assert len(prediction["top_k"]) == 3
    probabilities = [p["probability"] for p in prediction["top_k"]]
    assert probabilities == sorted(probabilities, reverse=True)
    assert all(p == round(p, 4) for p in probabilities)
    if not prediction["rejected"]:
        assert prediction["label"] == prediction["top_k"][0]["label"]
    for header in ("X-Embedding-Time-Ms", "X-Head-Time-Ms", "X-Total-Time-Ms", "Server-Timing"):
        assert header in response.headers
    (record,) = router.sink.records
    assert (record.request_id, record.model, record.status, record.input_text) == (
        body["request_id"],
        "intents",
        "ok",
        "what is my balance",
    )
    assert record.label == prediction["label"] and record.top_k[0][0] == prediction["top_k"][0]["label"]


def test_batch_keeps_order_and_logs_one_row_per_text(router):
    texts = ["book a flight", "  book   a flight ", "cancel my card"]
    body = post(router, {"texts": texts}, headers={"X-Request-ID": "client-id-7", "X-Client-ID": "crm"}).get_json()
    assert body["request_id"] == "client-id-7" and len(body["predictions"]) == 3
    assert body["predictions"][0]["label"] == body["predictions"][1]["label"]  # normalised before embedding
    assert router.embedder.calls[-1] == ["book a flight", "book a flight", "cancel my card"]
    assert [r.item_index for r in router.sink.records] == [0, 1, 2]
    assert [r.input_text for r in router.sink.records] == texts  # logged exactly as received
    assert {r.client_id for r in router.sink.records} == {"crm"}


def test_rejected_answers_carry_the_reject_label(router):
    head = router.runtime.heads.get("default", "intents").primary
    assert head.rule.threshold > 0 and head.rule.reject_label == "oos"
    body = post(router, {"texts": [f"random words {i} zebra" for i in range(8)]}).get_json()
    # The decision is taken on the unrounded probability (the log keeps it); the answer's is rounded.
    logged = router.sink.records[-8:]
    for prediction, record in zip(body["predictions"], logged, strict=True):
        assert prediction["rejected"] == (record.probability < head.rule.threshold)
        assert prediction["probability"] == round(record.probability, 4)
        if prediction["rejected"]:
            assert prediction["label"] == "oos"


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "message"),
    [
        ({"data": "{broken", "content_type": "application/json"}, 400, "bad_request", "malformed JSON"),
        (
            {"data": "text=hi", "content_type": "application/x-www-form-urlencoded"},
            400,
            "bad_request",
            "Content-Type must be application/json",
        ),
        ({"data": json.dumps({"txt": "a"})}, 422, "invalid_request", "unknown field(s) txt"),
        ({"data": json.dumps({"text": ""})}, 422, "invalid_request", "text is empty"),
        ({"data": json.dumps({"texts": ["a", 1]})}, 422, "invalid_request", "texts[1] must be a string"),
        ({"data": json.dumps({"text": "x" * 201})}, 413, "payload_too_large", "the limit is 200"),
        ({"data": json.dumps({"texts": ["a"] * 9})}, 413, "payload_too_large", "the limit is 8"),
        ({"data": json.dumps({"text": "y" * 5000})}, 413, "payload_too_large", "limit of 4096 bytes"),
        # every way of not being JSON is one 400, never a 500
        ({"data": "[" * 1500 + "]" * 1500}, 400, "bad_request", "malformed JSON: nested too deeply"),
        ({"data": '{"text": "x", "top_k": NaN}'}, 400, "bad_request", "NaN is not a JSON value"),
        ({"data": '{"text": "x", "top_k": -Infinity}'}, 400, "bad_request", "-Infinity is not a JSON value"),
        ({"data": b'{"text": "\xff"}'}, 400, "bad_request", "malformed JSON"),
        ({"data": '{"text": "a\\ud800b"}'}, 400, "bad_request", "unpaired UTF-16 surrogate"),
        ({"data": '{"texts": ["ok", "\\udc00"]}'}, 400, "bad_request", "unpaired UTF-16 surrogate"),
        ({"data": json.dumps({"text": "x", "top_k": 2.5})}, 422, "invalid_request", "top_k must be an integer"),
        ({"data": json.dumps({"text": "x", "top_k": True})}, 422, "invalid_request", "top_k must be an integer"),
        ({"data": json.dumps({"text": "\u200b\x00"})}, 422, "invalid_request", "text is empty"),
    ],
)
def test_error_mapping(router, kwargs, status, code, message):
    kwargs.setdefault("content_type", "application/json")
    response = router.client.post(PREDICT, **kwargs)
    assert response.status_code == status
    body = response.get_json()
    jsonschema.validate(body, schema_for(router, "Error"))
    assert body["error"]["code"] == code and message in body["error"]["message"]
    assert body["error"]["request_id"] == response.headers["X-Request-ID"]
    assert router.sink.records == []  # refused before any work: nothing to log


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),  # once a RecursionError: 500
        (b'{"item_index": ' + b"9" * 5000 + b"}", "Exceeds the limit (4300 digits)"),  # a ValueError
        (b'{"a": Infinity}', "Infinity is not a JSON value"),
        (b"\xfe\xff", "malformed JSON"),
        (b"", "malformed JSON"),
    ],
)
def test_parse_json_turns_every_failure_into_one_400(data, message):
    with pytest.raises(BadRequest) as caught:
        parse_json(data)
    assert caught.value.status == 400 and message in caught.value.message


def test_encode_json_writes_what_json_wrote_and_only_json():
    answer = {"model": "m", "version": "v1", "predictions": [{"label": "café", "probability": 0.8125, "top_k": []}]}
    assert json.loads(encode_json(answer)) == answer
    assert "café".encode() in encode_json(answer)  # UTF-8, not escapes
    # NaN and infinities, which json.dumps wrote as tokens no strict parser reads, are null.
    assert json.loads(encode_json({"f1": float("nan"), "x": float("inf")})) == {"f1": None, "x": None}
    # What orjson refuses is still written, as json.dumps wrote it.
    assert json.loads(encode_json({"q": np.float64(0.25)})) == {"q": 0.25}
    with pytest.raises(TypeError):  # as json.dumps did: not a value of the API
        encode_json({"p": np.float32(0.5)})
    assert json.loads(encode_json({1: "one"})) == {"1": "one"}


def test_unknown_model_route_and_method(router):
    assert post(router, {"text": "x"}, path="/v1/models/nope/predict").get_json()["error"]["code"] == "not_found"
    response = router.client.get("/v2/anything")
    assert response.status_code == 404 and response.get_json()["error"]["message"] == "no route for GET /v2/anything"
    response = router.client.get(PREDICT)
    assert response.status_code == 405 and response.get_json()["error"]["code"] == "method_not_allowed"


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", PREDICT, {"POST", "OPTIONS"}),
        ("DELETE", "/v1/models/intents", {"GET", "HEAD", "OPTIONS"}),
        ("PUT", "/v1/models/intents/serving", {"GET", "HEAD", "POST", "OPTIONS"}),
        ("TRACE", "/healthz", {"GET", "HEAD", "OPTIONS"}),
    ],
)
def test_every_405_lists_the_allowed_methods(router, method, path, allowed):
    """RFC 9110: a 405 carries Allow, the methods the target resource has."""
    response = router.client.open(path, method=method)
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["Allow"].split(",")} == allowed


def test_integral_top_k_is_an_integer(router):
    """2.0 is an integer by JSON Schema's rules, so the contract accepts it; so does the code."""
    response = post(router, {"text": "what is my balance", "top_k": 2.0})
    assert response.status_code == 200
    assert len(response.get_json()["predictions"][0]["top_k"]) == 2


def test_invalid_request_id_header(router):
    response = post(router, {"text": "x"}, headers={"X-Request-ID": "bad id"})
    assert response.status_code == 422 and "X-Request-ID" in response.get_json()["error"]["message"]


@pytest.mark.parametrize("value", ["0", "60001", "1.5", "\u00b2"])  # "²" passed str.isdigit(): once a 500
def test_invalid_timeout_header(router, value):
    response = post(router, {"text": "x"}, headers={"X-Request-Timeout-Ms": value})
    assert response.status_code == 422 and "X-Request-Timeout-Ms" in response.get_json()["error"]["message"]
    assert router.sink.records == []


def test_serving_changes_over_http(router):
    """422 for a body the contract refuses, 409 for a well-formed change the model's state refuses,
    200 for a change that applies."""
    operator = {"Authorization": f"Bearer {router.keys['operator']}", "X-Tenant": "default"}
    path = "/v1/models/intents/serving"
    for body in ({"action": {}}, {"action": "promote"}, {"action": "shadow", "version": "v", "fraction": True}):
        response = post(router, body, path=path, headers=operator)
        assert response.status_code == 422 and response.get_json()["error"]["code"] == "invalid_request", body
    primary = router.store.serving_version("intents")
    other = next(v for v in router.store.versions("intents") if v != primary)
    for body in ({"action": "unshadow", "version": other}, {"action": "promote", "version": "no-such-version"}):
        response = post(router, body, path=path, headers=operator)
        assert response.status_code == 409 and response.get_json()["error"]["code"] == "conflict", body
    assert router.store.serving_version("intents") == primary  # refused changes change nothing
    response = post(router, {"action": "shadow", "version": other, "fraction": 0.5}, path=path, headers=operator)
    assert response.status_code == 200 and response.get_json()["shadows"] == [{"version": other, "fraction": 0.5}]


@pytest.mark.parametrize(
    ("error", "status", "code", "retry_after"),
    [
        (Overloaded("queue full"), 429, "overloaded", "1"),
        (Unavailable("connection refused"), 503, "embedder_unavailable", "1"),
        (DeadlineExceeded("too slow"), 503, "embedder_unavailable", "1"),
        (ModelFailure("batch failed"), 502, "embedder_error", None),
        # An embedder without the head's feature set (an older build): its fault, not the caller's.
        (FeaturesUnsupported("serves only the sentence embedding"), 503, "embedder_mismatch", None),
    ],
)
def test_embedder_failures_map_to_http_and_are_logged(router, error, status, code, retry_after):
    router.embedder.fail_with = error
    response = post(router, {"texts": ["a", "b"]})
    assert response.status_code == status
    assert response.get_json()["error"]["code"] == code
    assert response.headers.get("Retry-After") == retry_after
    assert [(r.status, r.label, r.item_index) for r in router.sink.records] == [(code, None, 0), (code, None, 1)]


def test_embedder_of_another_model_is_refused(router):
    router.embedder.model_id = "some-other-encoder@9"
    response = post(router, {"text": "hello"})
    assert response.status_code == 503
    message = response.get_json()["error"]["message"]
    assert "trained with embedder hash-encoder@1" in message and "some-other-encoder@9" in message
    assert router.sink.records[0].status == "embedder_mismatch"


def test_unexpected_errors_are_500_without_details(router, monkeypatch):
    def explode(*args, **kwargs):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(router.runtime.predictor, "predict", explode)
    response = post(router, {"text": "x"})
    assert response.status_code == 500
    body = response.get_json()
    assert (
        body["error"]["code"] == "internal" and "secret" not in json.dumps(body) and "Traceback" not in json.dumps(body)
    )


def test_model_listing_and_detail(router):
    listing = router.client.get("/v1/models").get_json()
    jsonschema.validate(listing, schema_for(router, "ModelList"))
    assert [m["name"] for m in listing["models"]] == ["intents", "plain"]
    detail = router.client.get("/v1/models/intents").get_json()
    jsonschema.validate(detail, schema_for(router, "ModelSummary"))
    assert detail["versions"] == router.store.versions("intents")
    assert "in_scope_accuracy" in detail["metrics"] and "oos" in detail["labels"]
    assert router.client.get("/v1/models/nope").status_code == 404


def test_health_and_readiness(router):
    assert router.client.get("/healthz").get_json() == {"status": "ok"}
    ready = router.client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["servable_models"] == 2
    jsonschema.validate(ready.get_json(), schema_for(router, "Readiness"))


def test_not_ready_without_embedder(router, monkeypatch):
    router.embedder.fail_with = Unavailable("down")
    monkeypatch.setattr("api.web.routes_ops.READY_CACHE_S", 0.0)
    response = router.client.get("/readyz")
    body = response.get_json()
    assert response.status_code == 503 and body["reason"] == "the embedding service is unreachable"
    assert body["status"] == "not ready" and response.headers["Retry-After"]
    assert (body["models"], body["servable_models"], body["fallback_models"], body["unanswerable_models"]) == (
        2,
        0,
        0,
        2,
    )
    jsonschema.validate(body, schema_for(router, "Readiness"))


def test_readyz_counts_the_heads_whose_weights_are_still_to_be_checked(router):
    """A first load leaves the weights' checksums for later (heads/weights_check.py); /readyz
    says how many of the worker's serving heads are still unchecked, and never waits for them."""
    body = router.client.get("/readyz").get_json()
    jsonschema.validate(body, schema_for(router, "Readiness"))
    assert body["status"] == "ready" and body["unchecked_weights"] == router.runtime.heads.unchecked > 0
    assert router.runtime.heads.check_weights() == 0
    assert router.client.get("/readyz").get_json()["unchecked_weights"] == 0


def test_degraded_but_in_service_while_models_answer_without_the_embedder(router, clinc_subset, tmp_path, monkeypatch):
    """An embedder outage with n-gram heads: the router answers what it can, so /readyz (the load
    balancer's health check) stays 200, "degraded", rather than having every replica replaced."""
    monkeypatch.setattr("api.web.routes_ops.READY_CACHE_S", 0.0)
    data = {k: str(v) for k, v in clinc_subset.items()}
    config = parse_config({"name": "intents", "data": data, "model": {"type": "ngram"}, "training": {"epochs": 5}})
    ngram = train_head(config, store=router.store, cache_dir=tmp_path / "cache", promote=False)["version"]
    router.store.change_serving("intents", lambda s: serving_state.set_fallback(s, ngram), reason="test")
    router.runtime.heads.refresh()
    router.embedder.fail_with = Unavailable("down")

    def readyz(key=None):
        response = router.client.get("/readyz", headers={"Authorization": f"Bearer {key}"} if key else {})
        jsonschema.validate(response.get_json(), schema_for(router, "Readiness"))
        return response.status_code, response.get_json()

    status, body = readyz()
    assert status == 200 and body["status"] == "degraded" and body["embedder"]["reachable"] is False
    assert (body["models"], body["servable_models"], body["fallback_models"], body["unanswerable_models"]) == (
        2,
        1,
        1,
        1,
    )
    assert body["reason"] == (
        "the embedding service is unreachable; models answering from their fallback: 1, needing no embedder: 0, "
        "unable to answer: 1"
    )
    assert body["load_errors"] == 0 and "failed_models" not in body
    assert readyz(router.keys["operator"])[1]["failed_models"] == []
    # What it says is what happens: intents answers from its fallback, plain cannot answer.
    assert post(router, {"text": "what is my balance"}).get_json()["variant"] == "fallback"
    assert post(router, {"text": "what is my balance"}, path="/v1/models/plain/predict").status_code == 503

    router.store.set_serving("intents", ngram)  # an n-gram primary needs no embedder at all
    router.runtime.heads.refresh()
    status, body = readyz()
    assert status == 200 and body["status"] == "degraded" and "needing no embedder: 1" in body["reason"]
    assert (body["servable_models"], body["fallback_models"], body["unanswerable_models"]) == (1, 0, 1)

    router.embedder.fail_with = None
    status, body = readyz()
    assert status == 200 and body["status"] == "ready" and "reason" not in body and "fallback_models" not in body


def test_not_ready_when_every_head_needs_another_embedder(router, monkeypatch):
    monkeypatch.setattr("api.web.routes_ops.READY_CACHE_S", 0.0)
    router.embedder.model_id = "other@2"
    body = router.client.get("/readyz").get_json()
    assert body["status"] == "not ready" and body["embedder_mismatch"] == 2


def test_metrics_count_requests_by_model_and_status(router):
    post(router, {"text": "hello"})
    post(router, {"text": ""})
    post(router, {"text": "x"}, path="/v1/models/unknown-model-xyz/predict")
    text = router.client.get("/metrics", headers={"Authorization": f"Bearer {router.keys['operator']}"}).get_data(
        as_text=True
    )
    assert 'router_requests_total{model="default/intents",status="200"}' in text
    assert 'router_requests_total{model="default/intents",status="422"}' in text
    assert 'model="unknown-model-xyz"' not in text and 'model="_unknown",status="404"' in text
    assert "router_errors_total" in text
    # Latency: histograms per tenant, one summed counter per model (17 series a histogram per
    # model made /metrics take seconds to render at thousands of models).
    assert re.search(r'^router_request_seconds_count\{tenant="default"\} [1-9]', text, re.M)
    assert re.search(r'^router_head_seconds_count\{tenant="default"\} [1-9]', text, re.M)
    assert 'router_model_request_seconds_total{model="default/intents"}' in text
    per_model = {line.split("{")[0] for line in text.splitlines() if 'model="default/intents"' in line}
    histograms = ("router_request_seconds", "router_embed_seconds", "router_head_seconds")
    assert not {name for name in per_model if name.startswith(histograms)}


def test_openapi_lists_every_route(router):
    document = router.client.get("/openapi.json").get_json()
    app = router.client.application
    routes = {
        str(rule).replace("<model>", "{model}").replace("<request_id>", "{request_id}")
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
    }
    assert routes == set(document["paths"])
    request_schema = {"$ref": "#/components/schemas/PredictRequest", "components": document["components"]}
    jsonschema.validate({"texts": ["a"], "top_k": 2}, request_schema)
    jsonschema.validate({"texts": ["a"], "top_k": 2.0}, request_schema)  # what the code accepts too
    for refused in ({"text": "a", "extra": 1}, {"text": " \t"}, {"text": "a", "top_k": 2.5}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(refused, request_schema)


def test_openapi_documents_what_every_operation_shares(router):
    document = router.client.get("/openapi.json").get_json()
    for path, operations in document["paths"].items():
        for method, operation in operations.items():
            where = f"{method.upper()} {path}"
            names = [p["name"] for p in operation.get("parameters", [])]
            assert names.count("X-Request-ID") == 1 and "422" in operation["responses"], where
            if "requestBody" in operation:
                assert {"400", "413"} <= set(operation["responses"]), where
            if path not in ("/healthz", "/readyz", "/openapi.json"):
                assert {"401", "403"} <= set(operation["responses"]), where
            if path.startswith(("/v1/models/", "/v1/predictions/")):
                assert "X-Tenant" in names, where
    costs = {
        "/v1/models/{model}/predict": ("post", "Counts as 1 request"),
        "/v1/predictions/{request_id}/feedback": ("post", "Counts as 2 requests"),
        "/v1/models/{model}/report": ("get", "Counts as 10 requests of the tenant's rate limit per day"),
    }
    for path, (method, cost) in costs.items():
        operation = document["paths"][path][method]
        assert cost in operation["description"] and "429" in operation["responses"], path
