"""The router's per-worker embedding cache, alone and in front of the embedder."""

from __future__ import annotations

import numpy as np
import pytest

from api.embedding_cache import LocalEmbeddingCache
from api.errors import EmbedderMismatch
from api.predictor import Predictor
from api.tenant_heads import TenantHeads
from api.validation import Limits, parse_predict
from tests.api.conftest import FakeEmbedder, ListSink

LIMITS = Limits(max_texts=64, max_text_chars=1000, default_top_k=3, max_top_k=20)


def test_entries_are_per_model_copied_and_bounded():
    cache = LocalEmbeddingCache(max_entries=2)
    batch = np.arange(6, dtype=np.float32).reshape(3, 2)
    cache.store("enc@1", ["a", "b", "c"], batch, lowercase=True)
    assert len(cache) == 2  # least recently used ("a") went first
    a, b, c = cache.lookup("enc@1", ["a", "b", "c"])
    assert a is None and b.tolist() == [2, 3] and c.tolist() == [4, 5]
    assert not b.flags.writeable and b.base is None  # a copy, not a view that keeps the batch alive
    assert cache.lookup("enc@2", ["b"]) == [None]  # another encoder's vectors never answer
    assert cache.lowercase("enc@1") and not cache.lowercase("enc@2")


@pytest.fixture
def predictor(store):
    heads = TenantHeads(store.root.parent)
    heads.refresh()
    embedder = FakeEmbedder()
    predictor = Predictor(
        heads, embedder, ListSink(), embed_timeout_s=1.0, decimals=4, embedding_cache=LocalEmbeddingCache(100)
    )
    return predictor, embedder


def predict(predictor, texts):
    return predictor.predict("intents", parse_predict({"texts": texts}, LIMITS), request_id="r")


def test_repeated_phrases_never_reach_the_embedder_and_answer_the_same(predictor):
    predictor, embedder = predictor
    first = predict(predictor, ["check my balance", "book a flight"])
    assert embedder.calls == [["check my balance", "book a flight"]]
    assert [p.cache_hit for p in first.predictions] == [False, False]
    again = predict(predictor, ["book a flight", "check my balance"])
    assert len(embedder.calls) == 1  # both from the worker's cache
    assert [p.cache_hit for p in again.predictions] == [True, True]
    assert [p.label for p in again.predictions] == [p.label for p in reversed(first.predictions)]
    assert [p.probability for p in again.predictions] == [p.probability for p in reversed(first.predictions)]
    mixed = predict(predictor, ["check my balance", "pay the rent", "book a flight"])
    assert embedder.calls[-1] == ["pay the rent"]  # only the new phrase is asked for
    assert [p.cache_hit for p in mixed.predictions] == [True, False, True]
    assert mixed.predictions[0].label == first.predictions[0].label


def test_vectors_of_another_encoder_are_neither_used_nor_kept(predictor):
    predictor, embedder = predictor
    embedder.model_id = "other-encoder@9"
    with pytest.raises(EmbedderMismatch):
        predict(predictor, ["check my balance"])
    embedder.model_id = "hash-encoder@1"
    predict(predictor, ["check my balance"])
    assert embedder.calls == [["check my balance"], ["check my balance"]]  # the wrong vectors were not cached
