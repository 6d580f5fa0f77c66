import threading

import numpy as np
import pytest

from embedder.cache import PhraseCache, cache_key


def vec(x: float) -> np.ndarray:
    return np.full(4, x, dtype=np.float32)


def test_key_depends_on_scope_model_and_text():
    assert cache_key("m@1", "hello") == cache_key("m@1", "hello") == cache_key("m@1", "hello", scope="")
    assert cache_key("m@1", "hello") != cache_key("m@2", "hello")
    assert cache_key("m@1", "hello") != cache_key("m@1", "hello ")
    assert cache_key("m@1", "hello", scope="acme") != cache_key("m@1", "hello", scope="globex")
    assert cache_key("m@1", "hello", scope="acme") != cache_key("m@1", "hello")
    assert len(cache_key("m@1", "x" * 1_000_000, scope="acme")) == 16


def test_parts_cannot_run_into_each_other():
    # Length-prefixed parts: moving characters from one part to the next changes the key.
    assert cache_key("m", "x", scope="a\0b") != cache_key("b\0m", "x", scope="a")
    assert cache_key("m@1", "ab") != cache_key("m@1a", "b")
    assert len(cache_key("m", "\ud800 lone surrogate")) == 16  # any str a JSON body can carry


def test_hits_misses_and_lru_eviction():
    cache = PhraseCache(maxsize=2)
    a, b, c = (cache_key("m", t) for t in "abc")
    cache.put(a, vec(1))
    cache.put(b, vec(2))
    assert [v is not None for v in cache.get_many([a])] == [True]  # a is now most recent
    cache.put(c, vec(3))  # evicts b, the least recently used
    found = cache.get_many([a, b, c])
    assert [v is not None for v in found] == [True, False, True]
    stats = cache.stats()
    assert (stats.hits, stats.misses, stats.evictions, stats.size, stats.maxsize) == (3, 1, 1, 2, 2)


def test_cached_vectors_are_read_only():
    cache = PhraseCache(maxsize=4)
    key = cache_key("m", "a")
    cache.put(key, vec(1))
    (stored,) = cache.get_many([key])
    with pytest.raises(ValueError):
        stored[0] = 5.0


def test_size_zero_disables_caching():
    cache = PhraseCache(maxsize=0)
    key = cache_key("m", "a")
    cache.put(key, vec(1))
    assert cache.get_many([key]) == [None]
    assert cache.stats().misses == 1 and cache.stats().size == 0


def test_negative_size_is_refused():
    with pytest.raises(ValueError, match="maxsize"):
        PhraseCache(maxsize=-1)


def test_concurrent_use_keeps_counters_exact():
    cache = PhraseCache(maxsize=100)
    keys = [cache_key("m", str(i)) for i in range(200)]

    def worker(offset: int) -> None:
        for i in range(500):
            key = keys[(i + offset) % len(keys)]
            if cache.get_many([key])[0] is None:
                cache.put(key, vec(i))

    threads = [threading.Thread(target=worker, args=(n * 37,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stats = cache.stats()
    assert stats.hits + stats.misses == 8 * 500
    assert stats.size == 100
    assert stats.evictions >= 100
