"""The router's per-worker embedding cache, alone and in front of the embedder."""

from __future__ import annotations

import gc
import shutil
import tracemalloc

import numpy as np
import pytest

from api.core.embedding_cache import RouterEmbeddingCache, entry_bytes
from api.core.predictor import Predictor
from api.core.tenant_heads import TenantHeads
from api.errors import EmbedderMismatch
from api.web.validation import Limits, parse_predict
from tests.api.conftest import FakeEmbedder, ListSink

LIMITS = Limits(max_texts=64, max_text_chars=1000, default_top_k=3, max_top_k=20)


def test_entries_are_per_model_copied_and_bounded():
    cache = RouterEmbeddingCache(max_entries=2)
    batch = np.arange(6, dtype=np.float32).reshape(3, 2)
    cache.store("enc@1", ["a", "b", "c"], batch, scope="acme", lowercase=True)
    assert len(cache) == 2  # least recently used ("a") went first
    a, b, c = cache.lookup("enc@1", ["a", "b", "c"], scope="acme")
    assert a is None and b.tolist() == [2, 3] and c.tolist() == [4, 5]
    assert not b.flags.writeable and b.base is None  # a copy, not a view that keeps the batch alive
    assert cache.lookup("enc@2", ["b"], scope="acme") == [None]  # another encoder's vectors never answer
    assert cache.lowercase("enc@1") and not cache.lowercase("enc@2")


def test_a_scope_never_answers_from_another():
    cache = RouterEmbeddingCache(max_entries=10)
    cache.store("enc@1", ["pay my bill"], np.ones((1, 4), np.float32), scope="acme", lowercase=False)
    assert cache.lookup("enc@1", ["pay my bill"], scope="globex")[0] is None
    assert cache.lookup("enc@1", ["pay my bill"], scope="")[0] is None  # nor the shared namespace
    (hit,) = cache.lookup("enc@1", ["pay my bill"], scope="acme")
    assert hit.tolist() == [1, 1, 1, 1]
    cache.store("enc@1", ["pay my bill"], np.zeros((1, 4), np.float32), scope="globex", lowercase=False)
    assert cache.lookup("enc@1", ["pay my bill"], scope="acme")[0].tolist() == [1, 1, 1, 1]  # each its own entry
    assert len(cache) == 2


def _maximal_text(i: int, chars: int = 10_000) -> str:
    """A distinct text of `chars` characters at 4 bytes each (CPython's widest string storage)."""
    return f"{i:06d}" + "\U0001f600" * (chars - 6)


def _bytes_held_after_filling(max_entries: int, text_of, dim: int) -> int:
    """Memory the cache holds (tracemalloc) after twice `max_entries` stores of `text_of(i)`,
    one text per call as the predictor stores them, in the scopes of two tenants."""
    vector = np.ones((1, dim), np.float32)
    warm = RouterEmbeddingCache(max_entries=1)  # first-use allocations (hashlib, numpy) outside the measure
    warm.store("enc@1", [text_of(0)], vector, scope="acme", lowercase=False)
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        cache = RouterEmbeddingCache(max_entries=max_entries)
        for i in range(2 * max_entries):
            cache.store("enc@1", [text_of(i)], vector, scope=("acme", "globex")[i % 2], lowercase=False)
        gc.collect()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert len(cache) == max_entries
    return held


def test_memory_is_bounded_in_bytes_whatever_the_texts_length():
    max_entries, dim = 2_000, 384
    held = _bytes_held_after_filling(max_entries, _maximal_text, dim)
    cache = RouterEmbeddingCache(max_entries=max_entries)
    assert cache.max_bytes(dim) == max_entries * entry_bytes(dim) == max_entries * (4 * dim + 512)
    assert held <= cache.max_bytes(dim), f"{held / max_entries:.0f} bytes an entry"
    # Raw-text keys would hold 40 KB an entry here; a 16-byte digest holds what a short text does.
    short = _bytes_held_after_filling(max_entries, lambda i: f"t{i}", dim)
    assert abs(held - short) < 0.05 * short, (held, short)


@pytest.fixture
def predictor(store):
    shutil.copytree(store.root, store.root.parent / "other")  # the same models for the tenant "other"
    heads = TenantHeads(store.root.parent)
    heads.refresh()
    embedder = FakeEmbedder()
    predictor = Predictor(
        heads, embedder, ListSink(), embed_timeout_s=1.0, decimals=4, embedding_cache=RouterEmbeddingCache(100)
    )
    return predictor, embedder


def predict(predictor, texts, tenant="default"):
    return predictor.predict("intents", parse_predict({"texts": texts}, LIMITS), request_id="r", tenant=tenant)


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


def test_a_tenant_gets_no_hit_from_another_tenants_text(predictor):
    predictor, embedder = predictor
    predict(predictor, ["check my balance"], tenant="default")
    assert [p.cache_hit for p in predict(predictor, ["check my balance"], tenant="default").predictions] == [True]
    other = predict(predictor, ["check my balance", "book a flight"], tenant="other")
    assert [p.cache_hit for p in other.predictions] == [False, False]
    assert embedder.calls[-1] == ["check my balance", "book a flight"]  # the worker's cache did not answer
    assert embedder.scopes == ["default", "other"]  # and the embedder was asked in the tenant's scope
    assert [p.cache_hit for p in predict(predictor, ["book a flight"], tenant="other").predictions] == [True]


def test_an_operator_may_share_the_caches_between_tenants(store):
    shutil.copytree(store.root, store.root.parent / "other")
    heads = TenantHeads(store.root.parent)
    heads.refresh()
    embedder = FakeEmbedder()
    shared = Predictor(
        heads,
        embedder,
        ListSink(),
        embed_timeout_s=1.0,
        decimals=4,
        embedding_cache=RouterEmbeddingCache(100),
        share_embedding_cache=True,
    )
    predict(shared, ["check my balance"], tenant="default")
    assert [p.cache_hit for p in predict(shared, ["check my balance"], tenant="other").predictions] == [True]
    uncached = Predictor(heads, embedder, ListSink(), embed_timeout_s=1.0, decimals=4, share_embedding_cache=True)
    assert [p.cache_hit for p in predict(uncached, ["check my balance"], tenant="other").predictions] == [True]
    assert embedder.scopes == ["", ""]  # the embedder's shared namespace


def test_vectors_of_another_encoder_are_neither_used_nor_kept(predictor):
    predictor, embedder = predictor
    embedder.model_id = "other-encoder@9"
    with pytest.raises(EmbedderMismatch):
        predict(predictor, ["check my balance"])
    embedder.model_id = "hash-encoder@1"
    predict(predictor, ["check my balance"])
    assert embedder.calls == [["check my balance"], ["check my balance"]]  # the wrong vectors were not cached
