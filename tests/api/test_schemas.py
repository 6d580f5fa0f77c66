"""The request models of api/web/schemas.py and the contract generated from them: what the
document states is what the validation enforces."""

import sys

import jsonschema
import pytest
from pydantic import ValidationError

from api.core.settings import router_settings
from api.errors import ApiError
from api.web import schemas
from api.web.openapi import openapi_document
from api.web.validation import parse_feedback, parse_predict, parse_serving_change
from embedder.normalize import is_blank

SETTINGS = router_settings({}, max_texts=3, max_text_chars=10, max_top_k=5, default_top_k=2)
LIMITS = schemas.Limits(max_texts=3, max_text_chars=10, max_top_k=5, default_top_k=2)
COMPONENTS = openapi_document(SETTINGS)["components"]


def test_a_request_model_per_limits_built_once():
    model = schemas.predict_request_model(LIMITS)
    assert schemas.predict_request_model(schemas.Limits(3, 10, 5, 2)) is model
    assert schemas.predict_request_model(schemas.Limits(4, 10, 5, 2)) is not model


def test_the_contract_states_the_limits_of_the_settings():
    predict = COMPONENTS["schemas"]["PredictRequest"]
    text = predict["properties"]["text"]
    assert (text["minLength"], text["maxLength"], text["pattern"]) == (1, 10, schemas.not_blank_pattern())
    texts = predict["properties"]["texts"]
    assert (texts["items"], texts["minItems"], texts["maxItems"]) == (text, 1, 3)
    assert predict["properties"]["top_k"] == {"type": "integer", "minimum": 1, "maximum": 5, "default": 2}
    assert predict["oneOf"] == [{"required": ["text"]}, {"required": ["texts"]}]
    assert predict["additionalProperties"] is False


def test_every_schema_is_json_schema_without_field_titles():
    for name, schema in COMPONENTS["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        assert all("title" not in field for field in schema.get("properties", {}).values()), name


def test_the_rust_pattern_refuses_exactly_the_blank_texts():
    """pydantic-core runs the contract's pattern with Rust's regex engine: on every code point
    (but the surrogates, which no JSON body can carry) it refuses what is_blank refuses."""
    codes = [code for code in range(sys.maxunicode + 1) if not 0xD800 <= code <= 0xDFFF]
    model = schemas.predict_request_model(schemas.Limits(len(codes), 1, 1, 1))
    with pytest.raises(ValidationError) as caught:
        model.model_validate({"texts": [chr(code) for code in codes]})
    errors = caught.value.errors()
    assert {e["type"] for e in errors} == {"string_pattern_mismatch"}
    assert {codes[e["loc"][1]] for e in errors} == {code for code in codes if is_blank(chr(code))}


def _agree(name, parse, bodies):
    schema = {"$ref": f"#/components/schemas/{name}", "components": COMPONENTS}
    for body in bodies:
        try:
            parse(body)
            accepted = True
        except ApiError:
            accepted = False
        assert jsonschema.Draft202012Validator(schema).is_valid(body) == accepted, body


def test_the_contract_and_the_validation_agree_on_predict_bodies():
    bodies = [{"text": "a"}, {"texts": ["a", "b"]}, {"text": "a", "top_k": 5}, {"text": "a", "top_k": 2.0}]
    bodies += [{}, [], {"text": "a", "texts": ["b"]}, {"text": None}, {"text": " \u200b"}, {"text": ""}]
    bodies += [{"texts": []}, {"texts": ["a"] * 4}, {"text": "x" * 11}, {"text": "a", "top_k": 6}]
    bodies += [{"text": "a", "top_k": 0}, {"text": "a", "top_k": 2.5}, {"text": "a", "top_k": True}]
    bodies += [{"text": "a", "top_k": "2"}, {"text": "a", "lang": "en"}, {"texts": "a"}, {"texts": ["a", 1]}]
    _agree("PredictRequest", lambda body: parse_predict(body, LIMITS), bodies)


def test_the_contract_and_the_validation_agree_on_feedback_bodies():
    bodies = [{"label": "a"}, {"label": "a", "item_index": 3}, {"label": "a", "item_index": 3.0}, {}, {"label": ""}]
    bodies += [{"label": None}, {"label": "a", "item_index": -1}, {"label": "a", "item_index": True}, {"a": 1}]
    _agree("FeedbackRequest", parse_feedback, bodies)


def test_the_contract_and_the_validation_agree_on_serving_changes():
    bodies = [{"action": "x"}, {}, {"action": None}, {"action": "rollback", "reason": "x" * 501}]
    bodies += [{"action": "promote", "version": "../x"}, {"action": "shadow", "version": "v", "fraction": 0}]
    bodies += [{"action": "shadow", "version": "v", "fraction": True}, {"action": "ab", "version": "v", "percent": 101}]
    bodies += [{"action": "ab", "version": "v", "percent": 1, "key": "x"}, {"action": "rollback", "version": None}]
    bodies += [{"action": "guard", "window_s": 60}, {"action": "guard", "window_s": 60, "max_error_rate": 2}]
    bodies += [{"action": "guard", "window_s": 60, "min_agreement": 0.5, "min_items": 0}]
    for action, needs in schemas.SERVING_REQUIRED.items():
        complete = {"action": action, "version": "v1.2_b", "percent": 50, "key": "request_id", "reason": "test"}
        complete |= {"window_s": 60, "min_agreement": 0.5} if action == "guard" else {}
        bodies += [{"action": action, **{name: complete[name] for name in needs}}, complete]
        bodies += [{k: v for k, v in complete.items() if k != name} for name in needs]
    _agree("ServingChange", parse_serving_change, bodies)
