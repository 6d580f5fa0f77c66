"""The load-test phrase generator: deterministic, repetition as configured, unique texts unique."""

from __future__ import annotations

import pytest

from embedder.normalize import normalize_text
from loadtests.generator import (
    PhraseGenerator,
    expected_repeat_share,
    repeat_share,
    vocabulary,
)
from loadtests.phrases import real_phrases


def test_vocabulary_is_the_first_real_phrases_in_seeded_order():
    assert list(vocabulary(300)) == real_phrases()[:300]
    assert len(vocabulary(0)) == len(real_phrases()) > 30_000


def test_same_seed_stream_and_salt_give_the_same_texts():
    def texts(**kw):
        return PhraseGenerator(vocabulary_size=2000, unique_share=0.3, **kw).batch(2000)

    assert texts(seed=1, stream=2, salt=3) == texts(seed=1, stream=2, salt=3)
    assert texts(seed=1, stream=2, salt=3) != texts(seed=1, stream=4, salt=3)
    assert texts(seed=1, stream=2, salt=3) != texts(seed=2, stream=2, salt=3)


def test_batch_and_next_draw_the_same_sequence():
    a = PhraseGenerator(seed=5, unique_share=0.5)
    b = PhraseGenerator(seed=5, unique_share=0.5)
    assert a.batch(1200) == [b.next() for _ in range(1200)]


@pytest.mark.parametrize("exponent", [0.0, 0.5, 1.0, 1.5])
def test_repetition_matches_the_zipf_exponent(exponent):
    draws = 6000
    texts = PhraseGenerator(exponent=exponent, vocabulary_size=3000, seed=11).batch(draws)
    expected = expected_repeat_share(3000, exponent, draws)
    assert repeat_share(texts) == pytest.approx(expected, abs=0.02)


def test_higher_exponent_repeats_more_and_rank_one_leads():
    shares = [repeat_share(PhraseGenerator(exponent=e, seed=0).batch(5000)) for e in (0.0, 0.8, 1.2, 2.0)]
    assert shares == sorted(shares) and shares[-1] - shares[0] > 0.3
    texts = PhraseGenerator(exponent=1.0, vocabulary_size=1000, seed=0).batch(20_000)
    top = max(set(texts), key=texts.count)
    assert top == vocabulary(1000)[0]
    # P(rank 1) = 1 / H(1000) for exponent 1
    assert texts.count(top) / len(texts) == pytest.approx(1 / sum(1 / k for k in range(1, 1001)), rel=0.1)


def test_cache_hostile_texts_are_all_distinct_and_real():
    vocab = set(vocabulary(5000))
    texts = PhraseGenerator(unique_share=1.0, seed=0, stream=0, salt=9).batch(20_000)
    # distinct even in the form the phrase cache keys on (the model lower-cases)
    assert len({normalize_text(t, lowercase=True) for t in texts}) == len(texts)
    assert not vocab.intersection(texts)
    # each one is a real phrase with decorations (an order number, name, date, ...)
    assert all(any(len(w) > 3 for w in t.split()) for t in texts[:100])
    assert sum(any(p.rstrip(" .") in t for p in vocab) for t in texts[:200]) == 200


def test_cache_hostile_texts_differ_across_users_and_runs():
    def unique(stream, salt):
        return set(PhraseGenerator(unique_share=1.0, seed=0, stream=stream, salt=salt).batch(3000))

    a, b, c = unique(0, 1), unique(1, 1), unique(0, 2)
    assert not a & b and not a & c and not b & c


def test_unique_share_mixes_in_that_share_of_new_texts():
    vocab = set(vocabulary(5000))
    texts = PhraseGenerator(unique_share=0.25, seed=3).batch(8000)
    new = [t for t in texts if t not in vocab]
    assert len(new) / len(texts) == pytest.approx(0.25, abs=0.02)
    assert len(set(new)) == len(new)


def test_invalid_settings_are_refused():
    with pytest.raises(ValueError):
        PhraseGenerator(exponent=-1)
    with pytest.raises(ValueError):
        PhraseGenerator(unique_share=1.5)
    with pytest.raises(ValueError):
        PhraseGenerator(phrases=[])
