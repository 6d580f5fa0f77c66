"""Shadow, A/B and fallback in the predictor, through the Flask test client (fake embedder,
real trained heads). tests/api/test_e2e_lifecycle.py repeats the key ones on the real stack."""

import json
from collections import Counter

import pytest

from api.core.predictor import share
from embedder.errors import Unavailable
from heads import serving_state
from heads.config import parse_config
from heads.network import DenseHead
from heads.pipeline import train_head
from tests.api.conftest import FAST
from tests.fakes import HashTextEmbedder

PREDICT = "/v1/models/intents/predict"


@pytest.fixture
def versions(router):
    """(primary, two versions of `intents` that do not serve), from tests/api/conftest.py."""
    store = router.store
    primary = store.serving_version("intents")
    others = [v for v in store.versions("intents") if v != primary]
    assert len(others) == 2
    return primary, others[0], others[1]


def break_head(monkeypatch, target) -> None:
    """Make one head's forward pass raise (heads are frozen: patch the class, for that instance)."""
    original = DenseHead.probabilities

    def probabilities(self, x):
        if self is target:
            raise ZeroDivisionError("injected head failure")
        return original(self, x)

    monkeypatch.setattr(DenseHead, "probabilities", probabilities)


def change(router, fn):
    router.store.change_serving("intents", fn, reason="test")
    router.runtime.heads.refresh()


def post(router, body, **headers):
    response = router.client.post(PREDICT, data=json.dumps(body), content_type="application/json", headers=headers)
    response.close()  # runs call_on_close: the shadow job
    return response


def test_shadow_scores_after_the_answer_and_never_changes_it(router, versions):
    primary, shadow, _ = versions
    before = post(router, {"text": "what is my balance"}).get_json()
    change(router, lambda s: serving_state.set_shadow(s, shadow, 1.0))
    router.sink.records.clear()
    after = post(router, {"texts": ["what is my balance", "book a flight"]}).get_json()
    assert after["version"] == primary and after["variant"] == "primary"
    drop_cache = lambda p: {k: v for k, v in p.items() if k != "cache_hit"}  # noqa: E731
    assert drop_cache(after["predictions"][0]) == drop_cache(before["predictions"][0])
    roles = Counter((r.role, r.version) for r in router.sink.records)
    assert roles == {("primary", primary): 2, ("shadow", shadow): 2}
    assert len(router.embedder.calls) == 2  # the shadow reused the primary's embeddings


@pytest.fixture
def sentence_version(router, versions, clinc_subset, tmp_path):
    """A version of `intents` trained on the sentence embedding alone, as every version was before
    feature sets (embedder/features.py); the store's others use the default, layers-4-6."""
    config = parse_config(
        {
            "name": "intents",
            "data": {k: str(v) for k, v in clinc_subset.items()},
            "model": {"type": "mlp", "hidden_layers": [16], "features": "sentence"},
            "training": FAST,
        }
    )
    result = train_head(config, store=router.store, cache_dir=tmp_path, embedder=HashTextEmbedder(), promote=False)
    assert router.store.load("intents", result["version"]).embedder_id == "hash-encoder@1"
    return result["version"]


def test_versions_on_other_features_of_the_model_shadow_and_answer_with_their_own_vectors(
    router, versions, sentence_version
):
    primary = versions[0]
    change(router, lambda s: serving_state.set_shadow(s, sentence_version, 1.0))
    router.sink.records.clear()
    answer = post(router, {"texts": ["what is my balance", "book a flight"]}).get_json()
    assert answer["version"] == primary
    roles = Counter((r.role, r.version, r.embedding_model) for r in router.sink.records)
    assert roles == {
        ("primary", primary, "hash-encoder@1#layers-4-6"): 2,
        ("shadow", sentence_version, "hash-encoder@1"): 2,
    }
    assert router.embedder.features == ["layers-4-6", "sentence"]  # the shadow asked for its own
    # As the A/B candidate for every caller, it answers from its own features too.
    change(
        router,
        lambda s: serving_state.set_candidate(
            serving_state.set_shadow(s, sentence_version, None), sentence_version, 100
        ),
    )
    router.sink.records.clear()
    answer = post(router, {"text": "a text no cache has seen"}, **{"X-Client-ID": "c1"}).get_json()
    assert (answer["version"], answer["variant"]) == (sentence_version, "candidate")
    assert [(r.role, r.embedding_model) for r in router.sink.records] == [("candidate", "hash-encoder@1")]
    assert router.embedder.features[2:] == ["sentence"]


def test_a_failing_shadow_is_invisible_to_the_caller(router, versions, monkeypatch):
    _, shadow, _ = versions
    change(router, lambda s: serving_state.set_shadow(s, shadow, 1.0))
    break_head(monkeypatch, router.runtime.heads.get("default", "intents").shadows[0][0].head)
    response = post(router, {"text": "hello"})
    assert response.status_code == 200
    assert [r.role for r in router.sink.records] == ["primary"]


def test_shadow_fraction_samples_requests(router, versions):
    _, shadow, _ = versions
    change(router, lambda s: serving_state.set_shadow(s, shadow, 0.25))
    for i in range(400):
        post(router, {"text": f"sample {i}"})
    shadowed = sum(r.role == "shadow" for r in router.sink.records)
    assert 60 <= shadowed <= 140  # 25% of 400, within about 4 standard deviations


def test_ab_split_matches_its_percentage_and_is_sticky(router, versions):
    primary, candidate, _ = versions
    change(router, lambda s: serving_state.set_candidate(s, candidate, 30, "client_id"))
    answered = Counter()
    n = 2000
    for i in range(n):
        body = post(router, {"text": "transfer money"}, **{"X-Client-ID": f"client-{i}"}).get_json()
        answered[body["variant"]] += 1
        assert body["version"] == (candidate if body["variant"] == "candidate" else primary)
    sigma = (0.3 * 0.7 / n) ** 0.5
    assert abs(answered["candidate"] / n - 0.30) < 4 * sigma
    sticky = {
        post(router, {"text": f"text {k}"}, **{"X-Client-ID": "client-7"}).get_json()["variant"] for k in range(30)
    }
    assert len(sticky) == 1 and sticky == {"candidate" if share("intents\0client-7") < 30 else "primary"}
    assert {r.role for r in router.sink.records} == {"primary", "candidate"}


def test_fallback_answers_when_the_primary_head_fails(router, versions, monkeypatch):
    primary, fallback, _ = versions
    change(router, lambda s: serving_state.set_fallback(s, fallback))
    break_head(monkeypatch, router.runtime.heads.get("default", "intents").primary.head)
    body = post(router, {"text": "cancel my card"}).get_json()
    assert body["fallback"] is True and body["variant"] == "fallback" and body["version"] == fallback
    assert [(r.role, r.version, r.status) for r in router.sink.records] == [("fallback", fallback, "ok")]
    assert len(router.embedder.calls) == 1  # the fallback reused the embeddings


def test_without_a_usable_fallback_the_error_stands(router, versions):
    _, fallback, _ = versions
    change(router, lambda s: serving_state.set_fallback(s, fallback))
    router.embedder.fail_with = Unavailable("down")
    response = post(router, {"text": "hello"}, **{"X-Request-Timeout-Ms": "50"})
    assert response.status_code == 503  # the fallback needs the embedder too
    assert [(r.role, r.status) for r in router.sink.records] == [("primary", "embedder_unavailable")]


def test_request_timeout_header_is_validated(router):
    for bad in ("0", "abc", "99999999"):
        response = post(router, {"text": "x"}, **{"X-Request-Timeout-Ms": bad})
        assert response.status_code == 422 and "X-Request-Timeout-Ms" in response.get_json()["error"]["message"]


def test_model_detail_shows_the_serving_state(router, versions):
    primary, shadow, candidate = versions
    change(router, lambda s: serving_state.set_candidate(serving_state.set_shadow(s, shadow, 0.5), candidate, 10))
    detail = router.client.get("/v1/models/intents").get_json()
    assert detail["serving"]["primary"] == primary
    assert detail["serving"]["shadows"] == [{"version": shadow, "fraction": 0.5}]
    assert detail["serving"]["candidate"]["version"] == candidate


# One text or a few of a 151-class head take the full sort; 2,000 classes or 40 texts, the partition.
@pytest.mark.parametrize("rows, classes", [(1, 151), (3, 151), (1, 2000), (40, 151)])
def test_top_k_is_the_k_most_probable_classes_in_order_whichever_way_they_are_found(rows, classes):
    import numpy as np

    from api.core.predictor import top_k_indices

    probs = np.random.default_rng(rows * classes).random((rows, classes)).astype(np.float32)
    got = top_k_indices(probs, 5)
    expected = np.argsort(-probs, axis=1)[:, :5]
    assert got.shape == (rows, 5) and (got == expected).all()


def test_the_fallback_warning_is_logged_once_per_interval_with_a_count(monkeypatch, caplog):
    import logging

    from api.core import predictor

    clock = [1000.0]
    monkeypatch.setattr(predictor.time, "monotonic", lambda: clock[0])
    throttled = predictor.ThrottledLog(logging.getLogger("throttle-test"), interval_s=10.0)
    with caplog.at_level(logging.WARNING, logger="throttle-test"):
        for _ in range(5):
            throttled.warn(("acme", "intents", "embedder_unavailable"), "model %s fell back", "intents")
        throttled.warn(("acme", "other", "embedder_unavailable"), "model %s fell back", "other")  # its own key
        clock[0] += 10.0
        throttled.warn(("acme", "intents", "embedder_unavailable"), "model %s fell back", "intents")
    assert [r.getMessage() for r in caplog.records] == [
        "model intents fell back",
        "model other fell back",
        "model intents fell back (4 more since the last such line)",
    ]
