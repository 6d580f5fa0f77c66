"""A prediction request as the serving core sees it, whatever transport brought it, and the
limits every transport enforces before it gets here."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """The settings that bound a predict request (frozen, so hashable: the HTTP adapter builds one
    request model per Limits)."""

    max_texts: int
    max_text_chars: int
    max_top_k: int
    default_top_k: int


@dataclass(frozen=True)
class PredictRequest:
    """What the predictor consumes: the texts, one or many, and how many labels each answer lists."""

    texts: list[str]
    top_k: int
