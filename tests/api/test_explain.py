"""POST /v1/models/<model>/explain through the Flask test client (fake embedder, real trained
heads): occlusion against predict, one embedding call, no prediction rows, the limits and the
rate-limit cost. tests/api/test_explain_e2e.py checks it on the real stack."""

from __future__ import annotations

import json

import pytest

from api.core.explainer import variants_of, words_of
from api.core.rate_limit import TenantRateLimiter, explain_cost

EXPLAIN = "/v1/models/intents/explain"


def explain(router, body, path=EXPLAIN):
    return router.client.post(path, data=json.dumps(body), content_type="application/json")


def probability(router, text: str, label: str) -> float:
    body = {"text": text, "top_k": 20}
    answer = router.client.post("/v1/models/intents/predict", data=json.dumps(body), content_type="application/json")
    return {item["label"]: item["probability"] for item in answer.get_json()["predictions"][0]["top_k"]}[label]


def test_words_are_whitespace_tokens_of_the_normalised_text():
    assert words_of("  what's\tmy  balance?\n") == ["what's", "my", "balance?"]
    assert variants_of(["a", "b", "c"]) == ["b c", "a c", "a b"]
    assert variants_of(["only"]) == [""]


def test_each_contribution_is_the_drop_of_the_labels_probability_without_the_word(router):
    text = "what is my current account balance"
    response = explain(router, {"text": text})
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["version"] == router.store.serving_version("intents") and body["variants"] == 6
    assert [w["word"] for w in body["words"]] == text.split()
    assert body["probability"] == pytest.approx(probability(router, text, body["label"]), abs=1e-4)
    for word, variant in zip(body["words"], variants_of(text.split()), strict=True):
        expected = body["probability"] - probability(router, variant, body["label"])
        assert word["contribution"] == pytest.approx(expected, abs=2e-4)


def test_the_text_and_its_variants_go_to_the_embedder_in_one_call_and_no_row_is_written(router):
    calls = len(router.embedder.calls)
    body = explain(router, {"text": "very very good morning"}).get_json()
    assert len(router.embedder.calls) == calls + 1
    # "very very" gives one variant for both words: 3 distinct variants and the text itself
    assert router.embedder.calls[-1] == [
        "very very good morning",
        "very good morning",
        "very very morning",
        "very very good",
    ]
    assert body["variants"] == 3 and body["words"][0]["contribution"] == body["words"][1]["contribution"]
    assert router.sink.records == []  # explanations are not predictions


def test_the_only_word_contributes_the_whole_probability(router):
    body = explain(router, {"text": "balance"}).get_json()
    assert body["variants"] == 0 and body["words"] == [{"word": "balance", "contribution": body["probability"]}]


@pytest.mark.parametrize(
    ("path", "body", "status", "says"),
    [
        ("/v1/models/nope/explain", {"text": "hello there"}, 404, "unknown model 'nope'"),
        (EXPLAIN, {"text": ""}, 422, "text is empty or whitespace-only"),
        (EXPLAIN, {"text": " \t "}, 422, "text is empty or whitespace-only"),
        (EXPLAIN, {"texts": ["a"]}, 422, "unknown field(s) texts"),
        (EXPLAIN, {"text": "x" * 201}, 413, "text has 201 characters; the limit is 200"),
        (EXPLAIN, {"text": "ab " * 65}, 413, "text has 65 words; the limit is 64 for an explanation"),
    ],
)
def test_bad_requests_get_a_clear_4xx(router, path, body, status, says):
    response = explain(router, body, path)
    assert response.status_code == status and says in response.get_json()["error"]["message"]


def test_the_cost_counts_one_more_request_per_max_texts_words(router):
    assert explain_cost(1, 64) == explain_cost(64, 64) == 2 and explain_cost(65, 64) == 3
    router.runtime.limiter = TenantRateLimiter(rate_rps=0.001, burst=5)
    assert explain(router, {"text": "one two three four five six seven eight"}).status_code == 200  # 2 (max_texts 8)
    assert explain(router, {"text": "one two three four five six seven eight nine"}).status_code == 200  # 3
    limited = explain(router, {"text": "one"})
    assert limited.status_code == 429 and "counts as 2" in limited.get_json()["error"]["message"]
