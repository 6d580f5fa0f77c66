import pytest

from api.errors import InvalidRequest, PayloadTooLarge
from api.validation import Limits, check_request_id, parse_predict

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
        ({"text": 5}, InvalidRequest, "text must be a string, got int"),
        ({"text": "   "}, InvalidRequest, "text is empty or whitespace-only"),
        ({"texts": "abc"}, InvalidRequest, "texts must be a list"),
        ({"texts": []}, InvalidRequest, "texts must not be empty"),
        ({"texts": ["ok", None]}, InvalidRequest, "texts[1] must be a string, got NoneType"),
        ({"texts": ["ok", "\t\n"]}, InvalidRequest, "texts[1] is empty"),
        ({"text": "x", "top_k": 0}, InvalidRequest, "top_k must be between 1 and 5"),
        ({"text": "x", "top_k": True}, InvalidRequest, "top_k must be an integer"),
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
