"""Explanations by occlusion, free of HTTP: why a model's primary gives a text its label.

The words of a text are its whitespace-separated tokens, after the normalisation every text gets
(embedder/normalize.py: NFC, whitespace runs collapsed), so punctuation stays with its word. The
contribution of word i is

    p(label | text) - p(label | the text without word i)

where label is the primary's most probable class for the text. A positive contribution is a word
that supports the label; a negative one argues against it. The text and every variant (one per
word; a word that occurs twice in a row gives one variant for both) are scored in one batch: one
embedding call, through the router's and the embedder's phrase caches, so variants seen before
cost nothing. Removing the only word (or every word but blank ones) leaves nothing to classify:
that word's contribution is the whole probability.

Explanations are not predictions: they are written to no inference-log row. The analysts' views
and the monitoring report count every row of the predictions table (prediction_volume_daily and
label_distribution_daily take every role), so a text explained with its 30 variants would count
as 31 predictions and skew the label distribution and drift of the model; and no one acts on an
explanation as on an answer, so there is nothing for feedback to correct. They are counted in the
router's metrics instead.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from api.core.predictor import Predictor
from api.errors import PayloadTooLarge
from embedder.normalize import is_blank, normalize_text


@dataclass(frozen=True)
class WordContribution:
    word: str
    contribution: float


@dataclass(frozen=True)
class Explanation:
    model: str
    version: str
    request_id: str
    label: str  # the primary's most probable class for the text
    probability: float
    rejected: bool  # the decision rule would answer the reject label instead
    words: list[WordContribution]  # in the text's order
    variants: int  # texts scored besides the text itself
    embed_ms: float
    head_ms: float
    total_ms: float


def words_of(text: str) -> list[str]:
    """The words of a text: its whitespace-separated tokens after normalisation."""
    return normalize_text(text).split()


def variants_of(words: list[str]) -> list[str]:
    """The text without each word in turn, word i's variant at index i ("" when nothing is left)."""
    return [" ".join(words[:i] + words[i + 1 :]) for i in range(len(words))]


class Explainer:
    def __init__(self, predictor: Predictor, *, max_words: int, decimals: int):
        self._predictor = predictor
        self.max_words = max_words
        self._decimals = decimals

    def check(self, text: str) -> list[str]:
        """The words of `text`, or PayloadTooLarge beyond the limit."""
        words = words_of(text)
        if len(words) > self.max_words:
            raise PayloadTooLarge(f"text has {len(words)} words; the limit is {self.max_words} for an explanation")
        return words

    def explain(
        self,
        model: str,
        text: str,
        *,
        tenant: str,
        request_id: str,
        timeout_s: float | None = None,
        received: float | None = None,
    ) -> Explanation:
        """The primary's label for `text` and each word's contribution to it; NotFound for an
        unknown model, ApiError when the primary cannot score (no fallback explains for it)."""
        now = time.monotonic()
        received = now if received is None else min(received, now)
        started = time.perf_counter() - (now - received)
        head = self._predictor.heads.get(tenant, model).primary
        words = self.check(text)
        variants = variants_of(words)
        # One row per distinct text to score: the text first, then each variant that is not blank.
        rows = list(dict.fromkeys([" ".join(words), *(v for v in variants if not is_blank(v))]))
        deadline = received + self._predictor.deadlines.budget_s(tenant, model, timeout_s)
        probs, embed_ms, head_ms = self._predictor.score(
            head, rows, deadline=deadline, scope=self._predictor.scope(tenant)
        )
        chosen, _ = head.rule.decide(probs[:1])
        best = int(np.argmax(probs[0]))
        p = float(probs[0, best])
        position = {row: i for i, row in enumerate(rows)}
        contributions = [
            WordContribution(
                word,
                round(p - (float(probs[position[variant], best]) if variant in position else 0.0), self._decimals),
            )
            for word, variant in zip(words, variants, strict=True)
        ]
        return Explanation(
            model=model,
            version=head.version,
            request_id=request_id,
            label=head.labels[best],
            probability=round(p, self._decimals),
            rejected=bool(int(chosen[0]) != best),
            words=contributions,
            variants=len(rows) - 1,
            embed_ms=embed_ms,
            head_ms=head_ms,
            total_ms=(time.perf_counter() - started) * 1000,
        )
