"""Request texts for load tests: real, varied phrases with a repetition rate you choose.

Two sources, mixed per draw:

- Zipf over real utterances (loadtests/phrases.py: CLINC150 + SNIPS, about 33,000 distinct texts of
  3-12 words). The first `vocabulary` phrases of the seeded order are the vocabulary; rank k is
  drawn with probability proportional to 1 / k**exponent. Exponent 0 is uniform (least
  repetition); 1.0 is the classic Zipf of natural traffic; 1.5 and above is a few phrases
  dominating. With a warm phrase cache every draw is a cache hit, whatever the exponent.
- Cache-hostile ("unique"): a real phrase decorated with an order number, ticket, account or
  reference built from a unique counter, sometimes with a customer name or a date, e.g.
  "i need to change my pin (order #4821-0093-1734021)". Every text differs from every other text
  this generator (same salt and stream) ever produces, so each one is a phrase-cache miss, yet it
  still reads like a message a person typed.

`unique_share` is the share of draws that come from the cache-hostile source (0: pure Zipf,
1: cache-hostile only). Everything is deterministic in (seed, stream, salt): `stream` separates
concurrent users of one run (each gets its own sequence, and its own unique numbers), `salt`
separates runs, so a second run against the same embedder does not find the first run's "unique"
phrases in the cache.

    gen = PhraseGenerator(exponent=1.0, vocabulary=5000, unique_share=0.0, seed=0, stream=3)
    gen.next()          # one text
    gen.batch(16)       # a list of texts
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import numpy as np

from loadtests.phrases import real_phrases

DEFAULT_VOCABULARY = 5000
_CHUNK = 512  # draws taken from numpy at a time (one call per chunk keeps the per-text cost tiny)

FIRST_NAMES = (
    "Maria", "James", "Aisha", "Chen", "Olga", "Pedro", "Fatima", "Liam", "Yuki", "Noah", "Priya",
    "Lucas", "Amara", "Jonas", "Sofia", "Mateo", "Hana", "Omar", "Elena", "Kofi",
)  # fmt: skip
LAST_NAMES = (
    "Garcia", "Smith", "Khan", "Wang", "Ivanova", "Silva", "Haddad", "Murphy", "Tanaka", "Johnson",
    "Patel", "Moreau", "Okafor", "Becker", "Rossi", "Lopez", "Kim", "Nasser", "Novak", "Mensah",
)  # fmt: skip
MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)  # fmt: skip

# {p}: the real phrase; {id}: the unique token; {name}, {date}: variety (not uniqueness).
TEMPLATES = (
    "{p} (order #{id})",
    "{p}. My order number is {id}",
    "Hi, this is {name}, order {id}. {p}",
    "{p} - ticket {id}",
    "{p} before {date}, reference {id}",
    "{name} here, account {id}: {p}",
    "Re: case {id} - {p}",
    "{p}, booking ref {id}, thanks {name}",
)


@lru_cache(maxsize=4)
def vocabulary(size: int = DEFAULT_VOCABULARY, *, seed: int = 0) -> tuple[str, ...]:
    """The first `size` real phrases in the seeded order (0 or more than available: all of them).

    The runner warms the phrase cache with exactly this list, so it is a function of its own."""
    phrases = real_phrases(seed=seed)
    if size <= 0 or size > len(phrases):
        size = len(phrases)
    return tuple(phrases[:size])


@lru_cache(maxsize=16)
def zipf_cdf(size: int, exponent: float) -> np.ndarray:
    """Cumulative P(rank <= k) for ranks 1..size, P(k) proportional to 1 / k**exponent."""
    weights = 1.0 / np.arange(1, size + 1, dtype=np.float64) ** exponent
    cdf = np.cumsum(weights)
    cdf /= cdf[-1]
    cdf.setflags(write=False)
    return cdf


def expected_repeat_share(size: int, exponent: float, draws: int) -> float:
    """Expected share of `draws` Zipf draws whose phrase was already drawn before in the same
    stream: 1 - E[distinct] / draws, with E[distinct] = sum_k 1 - (1 - p_k)**draws. This is the
    phrase-cache hit rate a cold cache sees over those draws (one stream, no eviction)."""
    cdf = zipf_cdf(size, exponent)
    p = np.diff(cdf, prepend=0.0)
    distinct = float(np.sum(-np.expm1(draws * np.log1p(-np.minimum(p, 1 - 1e-15)))))
    return 1.0 - distinct / draws


def repeat_share(texts: Sequence[str]) -> float:
    """Share of `texts` equal to an earlier text of the sequence (observed repetition)."""
    if not texts:
        return 0.0
    return 1.0 - len(set(texts)) / len(texts)


class PhraseGenerator:
    """Deterministic texts: Zipf over the real-phrase vocabulary, plus a `unique_share` of
    cache-hostile texts. Not thread-safe: one per user (greenlet) with its own `stream`."""

    def __init__(
        self,
        *,
        exponent: float = 1.0,
        vocabulary_size: int = DEFAULT_VOCABULARY,
        unique_share: float = 0.0,
        seed: int = 0,
        stream: int = 0,
        salt: int = 0,
        phrases: Sequence[str] | None = None,
    ):
        if exponent < 0:
            raise ValueError("exponent must be >= 0")
        if not 0.0 <= unique_share <= 1.0:
            raise ValueError("unique_share must be in [0, 1]")
        if not 0 <= stream < 100_000 or not 0 <= salt < 10_000:
            raise ValueError("stream must be in [0, 100000) and salt in [0, 10000)")
        self.phrases: Sequence[str] = tuple(phrases) if phrases is not None else vocabulary(vocabulary_size)
        if not self.phrases:
            raise ValueError("need at least one phrase")
        self.exponent = exponent
        self.unique_share = unique_share
        self._cdf = zipf_cdf(len(self.phrases), float(exponent))
        self._rng = np.random.default_rng([seed, stream, salt])
        # The unique token: salt and stream fixed-width, then the counter scrambled by a bijection
        # of [0, 10**7) (multiplying by a number prime to 10), so it looks like a real reference.
        self._id_prefix = f"{salt:04d}-{stream:05d}"
        self._counter = 0
        self._pending: list[str] = []

    def next(self) -> str:
        if not self._pending:
            self._refill()
        return self._pending.pop()

    def batch(self, n: int) -> list[str]:
        return [self.next() for _ in range(n)]

    def __iter__(self):
        return self

    def __next__(self) -> str:
        return self.next()

    # -- internals

    def _refill(self) -> None:
        rng = self._rng
        ranks = np.searchsorted(self._cdf, rng.random(_CHUNK), side="right")
        ranks = np.minimum(ranks, len(self.phrases) - 1)
        unique = rng.random(_CHUNK) < self.unique_share if self.unique_share > 0 else np.zeros(_CHUNK, dtype=bool)
        # The base phrase of a cache-hostile text is uniform over the vocabulary: variety.
        bases = rng.integers(0, len(self.phrases), _CHUNK)
        templates = rng.integers(0, len(TEMPLATES), _CHUNK)
        names = rng.integers(0, len(FIRST_NAMES) * len(LAST_NAMES), _CHUNK)
        days = rng.integers(0, 12 * 28, _CHUNK)
        out = []
        for i in range(_CHUNK):
            if unique[i]:
                out.append(self._unique(int(bases[i]), int(templates[i]), int(names[i]), int(days[i])))
            else:
                out.append(self.phrases[int(ranks[i])])
        out.reverse()  # pop() from the end keeps the draw order
        self._pending = out

    def _unique(self, base: int, template: int, name: int, day: int) -> str:
        counter = self._counter
        self._counter += 1
        if counter >= 10**7:
            raise RuntimeError("this generator has produced 10 million unique texts: use another stream or salt")
        token = f"{self._id_prefix}-{(counter * 7_368_787 + 1_234_567) % 10**7:07d}"
        first, last = FIRST_NAMES[name % len(FIRST_NAMES)], LAST_NAMES[name // len(FIRST_NAMES)]
        return TEMPLATES[template].format(
            p=self.phrases[base].rstrip(" ."),
            id=token,
            name=f"{first} {last}",
            date=f"{MONTHS[day // 28]} {day % 28 + 1}",
        )
