import re
import sys

import pytest

from api.errors import InvalidRequest, PayloadTooLarge
from api.web.validation import (
    Limits,
    ServingChange,
    check_request_id,
    integer,
    not_blank_pattern,
    parse_feedback,
    parse_predict,
    parse_serving_change,
    request_timeout_s,
)
from embedder.normalize import is_blank

LIMITS = Limits(max_texts=3, max_text_chars=10, max_top_k=5, default_top_k=2)


def test_single_and_batch():
    assert parse_predict({"text": "hello"}, LIMITS).texts == ["hello"]
    request = parse_predict({"texts": ["a", "b"], "top_k": 4}, LIMITS)
    assert request.texts == ["a", "b"] and request.top_k == 4
    assert parse_predict({"text": "x"}, LIMITS).top_k == 2


@pytest.mark.parametrize(
    ("body", "error", "message"),
    [
        ([], InvalidRequest, "must be a JSON object"),
        ({}, InvalidRequest, "exactly one of the fields text or texts"),
        ({"text": "a", "texts": ["b"]}, InvalidRequest, "exactly one of"),
        ({"text": "a", "lang": "en"}, InvalidRequest, "unknown field(s) lang"),
        ({"text": 5}, InvalidRequest, "text must be a string, got integer"),
        ({"text": "   "}, InvalidRequest, "text is empty or whitespace-only"),
        ({"texts": "abc"}, InvalidRequest, "texts must be an array"),
        ({"texts": []}, InvalidRequest, "texts must not be empty"),
        ({"texts": ["ok", None]}, InvalidRequest, "texts[1] must be a string, got null"),
        ({"texts": ["ok", "\t\n"]}, InvalidRequest, "texts[1] is empty"),
        ({"text": "x", "top_k": 0}, InvalidRequest, "top_k must be between 1 and 5"),
        ({"text": "x", "top_k": True}, InvalidRequest, "top_k must be an integer, got boolean"),
        ({"text": "x", "top_k": 2.5}, InvalidRequest, "top_k must be an integer, got number"),
        ({"text": "x" * 11}, PayloadTooLarge, "text has 11 characters; the limit is 10"),
        ({"texts": ["a", "b", "c", "d"]}, PayloadTooLarge, "too many texts: 4; the limit is 3"),
    ],
)
def test_bad_requests_name_the_field_or_limit(body, error, message):
    with pytest.raises(error) as caught:
        parse_predict(body, LIMITS)
    assert message in caught.value.message


def test_request_ids():
    assert check_request_id(None) is None
    assert check_request_id("order-42:retry.1") == "order-42:retry.1"
    for bad in ("", "has space", "x" * 129, "semi;colon", "../x\n"):
        with pytest.raises(InvalidRequest, match="X-Request-ID"):
            check_request_id(bad)


def test_integral_numbers_are_integers_as_in_json_schema():
    assert parse_predict({"text": "x", "top_k": 2.0}, LIMITS).top_k == 2
    assert integer(8182.0, "item_index") == 8182 and type(integer(8182.0, "item_index")) is int
    for bad, got in ((2.5, "number"), (True, "boolean"), ("2", "string"), (None, "null"), (float("inf"), "number")):
        with pytest.raises(InvalidRequest, match=f"must be an integer, got {got}"):
            integer(bad, "top_k")


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, None), ("1", 0.001), ("60000", 60.0), ("0", InvalidRequest), ("60001", InvalidRequest)]
    + [(bad, InvalidRequest) for bad in ("", "1.5", "-1", " 5", "\u00b2", "\u0663", "123456")],
)
def test_request_timeout_header(header, seconds):
    """Only ASCII digits: "²" and "٣" pass str.isdigit() but are no number a client sends."""
    if seconds is InvalidRequest:
        with pytest.raises(InvalidRequest, match="X-Request-Timeout-Ms"):
            request_timeout_s(header)
    else:
        assert request_timeout_s(header) == seconds


def test_the_contract_pattern_for_a_text_is_exactly_is_blank():
    """The pattern in /openapi.json finds a character in a text exactly when is_blank refuses
    it not: checked on every code point, and with the two regex engines that read the contract."""
    import jsonschema_rs

    pattern = re.compile(not_blank_pattern())
    for code in range(sys.maxunicode + 1):
        assert (pattern.search(chr(code)) is None) == is_blank(chr(code)), hex(code)
    validator = jsonschema_rs.validator_for({"type": "string", "pattern": not_blank_pattern()})
    for text in (" \t\u200b\u00ad ", "\U000e0001", "\x00"):
        assert is_blank(text) and not validator.is_valid(text)
    for text in ("a", " \u00e9 ", "\U0001f600", "\u200bx"):
        assert not is_blank(text) and validator.is_valid(text)


def test_serving_changes():
    change = parse_serving_change({"action": "ab", "version": "v1.2_b", "percent": 10, "key": "request_id"})
    assert change == ServingChange("ab", {"version": "v1.2_b", "percent": 10.0, "key": "request_id"}, None)
    assert parse_serving_change({"action": "rollback", "reason": "bad"}) == ServingChange("rollback", {}, "bad")
    assert parse_serving_change({"action": "shadow", "version": "v", "fraction": 1}).options["fraction"] == 1.0


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "must be a JSON object, got array"),
        ({"action": {}}, "action must be one of"),  # unhashable: once a 500
        ({"action": ["promote"]}, "action must be one of"),
        ({"action": "explode"}, "action must be one of"),
        ({"action": "promote"}, "promote needs the field(s) version"),
        ({"action": "ab", "version": "v"}, "ab needs the field(s) percent"),
        ({"action": "promote", "version": "../x"}, "version must be a version name"),
        ({"action": "promote", "version": 7}, "version must be a version name"),
        ({"action": "shadow", "version": "v", "fraction": 0}, "fraction must be in (0, 1]"),
        ({"action": "shadow", "version": "v", "fraction": True}, "fraction must be a number, got boolean"),
        ({"action": "ab", "version": "v", "percent": 101}, "percent must be in [0, 100]"),
        ({"action": "ab", "version": "v", "percent": 5, "key": {}}, "key must be one of"),
        ({"action": "rollback", "reason": None}, "reason must be a string"),
        ({"action": "rollback", "reason": "x" * 501}, "reason must be a string of at most 500"),
        ({"action": "rollback", "why": "x"}, "unknown field(s) why"),
    ],
)
def test_bad_serving_changes_name_the_field(body, message):
    with pytest.raises(InvalidRequest) as caught:
        parse_serving_change(body)
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("label", "the body must be a JSON object, got string"),
        ({"item_index": 0}, "the field label is required"),
        ({"label": ""}, "label must be a non-empty string"),
        ({"label": "a", "b": 1, "a": 2}, "unknown field(s) a, b; allowed: label, item_index"),
        ({"label": "a", "item_index": -1}, "item_index must be >= 0, got -1"),
        ({"label": "a", "item_index": 0.5}, "item_index must be an integer, got number"),
    ],
)
def test_bad_feedback_names_the_field(body, message):
    with pytest.raises(InvalidRequest) as caught:
        parse_feedback(body)
    assert message in caught.value.message


def test_feedback_item_index_defaults_to_the_first_item():
    assert (
        parse_feedback({"label": "a"}).item_index,
        parse_feedback({"label": "a", "item_index": 2.0}).item_index,
    ) == (0, 2)
