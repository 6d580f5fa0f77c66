"""Explanations on the real stack: gunicorn, the real embedder, `intents` trained on it, then
its n-gram version (no embedder) as the primary. Removing the word with the largest contribution
lowers the label's probability the most, as fresh predict calls of each variant show."""

from __future__ import annotations

from inferencedb.keys import create_key
from inferencedb.migrations import apply_migrations
from tests.api.servers import RouterProcess
from tests.api.test_e2e import call
from tests.api.test_e2e_lifecycle import store  # noqa: F401 - the real store plus an n-gram version
from tests.db.helpers import query, wait_until

TEXT = "what is the current balance of my checking account"


def check_against_predict(url: str, key: str) -> dict:
    """Explain TEXT, predict each variant afresh, and compare; returns the explanation."""
    status, body, _ = call(f"{url}/v1/models/intents/explain", {"text": TEXT}, key=key)
    assert status == 200, body
    words = TEXT.split()
    assert [w["word"] for w in body["words"]] == words and body["variants"] == len(words)
    fresh = []
    for i in range(len(words)):
        variant = " ".join(words[:i] + words[i + 1 :])
        status, answer, _ = call(f"{url}/v1/models/intents/predict", {"text": variant, "top_k": 20}, key=key)
        assert status == 200 and answer["version"] == body["version"], answer
        fresh.append({p["label"]: p["probability"] for p in answer["predictions"][0]["top_k"]}.get(body["label"], 0.0))
    contributions = [w["contribution"] for w in body["words"]]
    top = max(range(len(words)), key=contributions.__getitem__)
    assert min(range(len(words)), key=fresh.__getitem__) == top, (body, fresh)
    assert contributions[top] > 0
    # The batch of variants and the single predictions agree (to the embedder's batching noise).
    for contribution, p in zip(contributions, fresh, strict=True):
        assert abs(contribution - (body["probability"] - p)) < 2e-3, (body, fresh)
    return body


def test_the_top_contributing_word_lowers_the_probability_the_most(store, empty_db, embedder_process, tmp_path):  # noqa: F811
    apply_migrations(empty_db)
    key = create_key(empty_db, tenant="default")
    env = {
        "DATABASE_URL": empty_db,
        "EMBEDDER_ADDRESS": embedder_process.address,
        "MODEL_STORE": str(store.root.parent),
        "API_SPOOL_DIR": str(tmp_path / "spool"),
        # One worker: an explanation and the predictions it is compared with must come from the same
        # serving state. With two, six answers in a row from the worker that had reloaded did not
        # show that the other one had (a fresh-clone CI run failed on that).
        "API_WORKERS": "1",
    }
    ngram = store.serving("intents").fallback
    with RouterProcess(env, tmp_path / "router.log") as router:
        dense = check_against_predict(router.url, key)
        assert dense["version"] != ngram and dense["label"] == "balance"
        store.set_serving("intents", ngram, reason="explain the n-gram head")
        wait_until(lambda: call(f"{router.url}/v1/models/intents", key=key)[1].get("version") == ngram)
        assert check_against_predict(router.url, key)["version"] == ngram
    # Only the predict calls were logged: 2 x 9 rows, none from the explanations.
    wait_until(lambda: query(empty_db, "SELECT count(*) FROM predictions")[0][0] == 18)
    assert query(empty_db, "SELECT count(DISTINCT input_text) FROM predictions")[0][0] == 9
