"""Feedback against a real database: the prediction's row, the labels of the answering version."""

import json

import jsonschema

from tests.db.helpers import query


def predict(router, texts, request_id):
    response = router.client.post(
        "/v1/models/intents/predict",
        data=json.dumps({"texts": texts}),
        content_type="application/json",
        headers={"X-Request-ID": request_id},
    )
    assert response.status_code == 200
    return response.get_json()


def feedback(router, request_id, body, **headers):
    return router.client.post(
        f"/v1/predictions/{request_id}/feedback",
        data=json.dumps(body),
        content_type="application/json",
        headers=headers,
    )


def test_feedback_round_trip_and_upsert(db_router):
    router, db = db_router
    answer = predict(router, ["what is my balance", "book a flight to oslo"], "fb-1")
    labels = router.runtime.heads.get("default", "intents").primary.labels
    wrong = next(label for label in labels if label != answer["predictions"][1]["label"])
    response = feedback(router, "fb-1", {"label": wrong, "item_index": 1}, **{"X-Client-ID": "reviewer-3"})
    assert response.status_code == 201
    document = router.client.get("/openapi.json").get_json()
    jsonschema.validate(
        response.get_json(), {"$ref": "#/components/schemas/FeedbackResponse", "components": document["components"]}
    )
    assert response.get_json() == {
        "request_id": "fb-1",
        "item_index": 1,
        "model": "intents",
        "version": answer["version"],
        "label": wrong,
    }
    # a correction of the correction; 1.0 is the integer 1 (JSON Schema's rule, the contract's type)
    response = feedback(router, "fb-1", {"label": "oos", "item_index": 1.0})
    assert response.status_code == 201 and response.get_json()["item_index"] == 1
    rows = query(db, "SELECT request_id, item_index, model, label FROM feedback")
    assert rows == [("fb-1", 1, "intents", "oos")]


def test_unknown_prediction_is_404(db_router):
    router, _ = db_router
    router.runtime.feedback._wait_for_row_s = 0.2
    response = feedback(router, "never-made", {"label": "oos"})
    assert response.status_code == 404 and "never-made" in response.get_json()["error"]["message"]
    predict(router, ["one text"], "fb-2")
    assert feedback(router, "fb-2", {"label": "oos", "item_index": 5}).status_code == 404


def test_label_outside_the_model_is_422(db_router):
    router, db = db_router
    predict(router, ["what is my balance"], "fb-3")
    response = feedback(router, "fb-3", {"label": "astrology"})
    error = response.get_json()["error"]
    assert response.status_code == 422 and error["code"] == "unknown_label"
    assert "'astrology' is not a label of intents" in error["message"]
    response = feedback(router, "fb-3", {"label": " oos "})  # labels are compared exactly
    assert response.status_code == 422 and response.get_json()["error"]["code"] == "unknown_label"
    assert query(db, "SELECT count(*) FROM feedback") == [(0,)]


def test_bad_feedback_bodies(db_router):
    router, _ = db_router
    assert feedback(router, "x", {"label": ""}).status_code == 422
    assert feedback(router, "x", {"label": "a", "extra": 1}).status_code == 422
    assert feedback(router, "x", {"label": "a", "item_index": -1}).status_code == 422
    for index in (0.5, True, "0", None):
        response = feedback(router, "x", {"label": "a", "item_index": index})
        assert (
            response.status_code == 422 and "item_index must be an integer" in response.get_json()["error"]["message"]
        )
    assert feedback(router, "x", {"item_index": 0}).get_json()["error"]["message"] == "the field label is required"
    assert feedback(router, "bad id", {"label": "a"}).status_code == 422
    response = router.client.post("/v1/predictions/x/feedback", data="{", content_type="application/json")
    assert response.status_code == 400


def test_database_down_is_503(router):
    response = feedback(router, "any", {"label": "oos"})
    assert response.status_code == 503 and response.get_json()["error"]["code"] == "database_unavailable"
    assert response.headers["Retry-After"] == "1"


def test_feedback_round_trips_into_a_retrained_version(db_router, clinc_subset, tmp_path):
    """Corrections collected by the router become training rows of the next version."""
    from heads.config import parse_config
    from heads.pipeline import train_head
    from tests.db.helpers import wait_until
    from tests.fakes import HashTextEmbedder

    router, db = db_router
    store = router.store
    texts = ["zorblax the quarterly gizmo", "frobnicate my widget account", "wibble the sprocket please"]
    answer = predict(router, texts, "fb-retrain")
    for i in range(len(texts)):
        assert feedback(router, "fb-retrain", {"label": "oos", "item_index": i}).status_code == 201
    wait_until(lambda: query(db, "SELECT count(*) FROM feedback")[0][0] == 3)

    base = {"validation": str(clinc_subset["validation"]), "test": str(clinc_subset["test"])}
    config = parse_config(
        {
            "name": "intents",
            "data": {"train": [str(clinc_subset["train"]), {"model": "intents", "dsn": db}], **base},
            "model": {"type": "mlp", "hidden_layers": [16]},
            "training": {"epochs": 4},
        }
    )
    result = train_head(config, store=store, cache_dir=tmp_path / "cache", embedder=HashTextEmbedder(), promote=False)
    assert result["n_train"] == 13 * 30 + 3
    manifest = store.load("intents", result["version"]).manifest
    assert "feedback on intents" in manifest.data["train"]["source"]
    assert manifest.training_config["data"]["train"][1]["model"] == "intents"
    assert answer["version"] != result["version"]


def test_feedback_on_a_version_that_no_longer_loads_is_409(db_router):
    """The answering version was replaced and then broke in the store: its labels cannot be
    checked, which is a conflict with the store's state, not a server error."""
    router, db = db_router
    answer = predict(router, ["what is my balance"], "fb-gone")
    store = router.store
    other = next(v for v in store.versions("intents") if v != answer["version"])
    store.set_serving("intents", other)
    router.runtime.heads.refresh(force=True)
    (store.root / "intents" / answer["version"] / "manifest.json").write_text("{not json")
    response = feedback(router, "fb-gone", {"label": "oos"})
    error = response.get_json()["error"]
    assert response.status_code == 409 and error["code"] == "conflict", error
    assert f"version {answer['version']}" in error["message"] and "no longer loads" in error["message"]
    assert query(db, "SELECT count(*) FROM feedback") == [(0,)]
